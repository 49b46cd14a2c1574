"""Real processes: 2-process CPU DDP (gloo) through `accelerate launch`, and a Hydra multirun sweep."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from tests.training.helpers import REPO, TOY_ARGS, read_metrics, run_cmd, train_py


@pytest.mark.slow
def test_two_process_cpu_ddp(tmp_path):
    launcher = [sys.executable, "-m", "accelerate.commands.launch"]  # `accelerate launch` of this interpreter
    trace = tmp_path / "trace"
    run_cmd([*launcher, "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
             "--dynamo_backend", "no", str(REPO / "train.py"), "cpu=true", "trainer.expected_world_size=2",
             *TOY_ARGS, "trainer.max_steps=6", "trainer.save_every=3"],
            tmp_path, VLA_TOY_TRACE_DIR=str(trace), VLA_TOY_SAMPLES="96")

    # One run directory for both ranks (rank 0 decided it), not one per rank.
    runs = [p.parent for p in (tmp_path / "outputs").glob("*/*/metrics.jsonl")]
    assert len(runs) == 1, runs
    assert len(list((tmp_path / "outputs").glob("*/*"))) == 1
    run = runs[0]
    assert (run / "final" / "model.safetensors").is_file()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_0000003", "step_0000006"]
    assert {p.name for p in (run / "checkpoints" / "step_0000006").glob("random_states_*.pkl")} == {
        "random_states_0.pkl", "random_states_1.pkl"}
    last = read_metrics(run)[-1]
    assert last["samples_seen"] == 6 * 8 * 2

    p0 = torch.load(trace / "rank0_params.pt")
    p1 = torch.load(trace / "rank1_params.pt")
    for k in p0:
        torch.testing.assert_close(p0[k], p1[k], rtol=0, atol=0)
    i0 = json.loads((trace / "rank0_indices.json").read_text())
    i1 = json.loads((trace / "rank1_indices.json").read_text())
    assert len(i0) == len(i1) == 6 * 8
    assert not set(i0) & set(i1), "both ranks trained on the same samples"  # 96 samples: one epoch


@pytest.mark.slow
def test_multirun_sweep_two_jobs(tmp_path):
    train_py(["-m", *TOY_ARGS, "logger=default", "trainer.max_steps=3", "trainer.save_every=0",
              "trainer.lr=0.001,0.01", f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path)
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1"]
    lrs = []
    wandb_ids = set()
    for job in jobs:
        records = read_metrics(job)
        assert [r["step"] for r in records if "loss" in r] == [2, 3]
        lrs.append(records[0]["lr"])
        (run,) = (job / "wandb").glob("offline-run-*")
        wandb_ids.add(run.name.rsplit("-", 1)[-1])
        assert (job / "final" / "model.safetensors").is_file()
    assert lrs[1] == pytest.approx(10 * lrs[0])  # each job its own config, nothing leaked between them
    assert len(wandb_ids) == 2


@pytest.mark.slow
def test_sigterm_checkpoints_and_the_same_command_resumes(tmp_path):
    import signal
    import subprocess
    import time

    from tests.training.helpers import env
    from vla_sensor.training.checkpointing import latest_checkpoint

    run = tmp_path / "run"
    args = [sys.executable, str(REPO / "train.py"), *TOY_ARGS, f"output_dir={run}", "trainer.log_every=1",
            "trainer.val_every=0", "trainer.save_every=100000", "trainer.resume=auto"]
    proc = subprocess.Popen([*args, "trainer.max_steps=100000"], cwd=tmp_path, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (
            (run / "metrics.jsonl").exists() and len(read_metrics(run)) >= 5
        ):
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)  # what SLURM sends on preemption / scancel
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    ckpt = latest_checkpoint(run)
    assert ckpt is not None, "no checkpoint written on SIGTERM"
    step = int(ckpt.name.split("_")[1])
    assert step == read_metrics(run)[-1]["step"] and 5 <= step < 100000
    assert not (run / "final").exists()

    run_cmd([*args, f"trainer.max_steps={step + 3}"], tmp_path)
    assert [r["step"] for r in read_metrics(run)][-4:] == [step, step + 1, step + 2, step + 3]
    assert (run / "final" / "model.safetensors").is_file()


def test_sweep_inside_a_process_launcher_is_refused(tmp_path):
    import subprocess

    from tests.training.helpers import env

    proc = subprocess.run([sys.executable, str(REPO / "train.py"), "-m", *TOY_ARGS, "seed=1,2",
                           f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=tmp_path, env=env(LOCAL_RANK="0"),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "multirun sweep inside `accelerate launch`/torchrun" in proc.stderr + proc.stdout
    assert not list((tmp_path / "sweep").glob("*/metrics.jsonl"))
