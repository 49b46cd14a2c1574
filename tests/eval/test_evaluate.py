"""evaluate.py end to end: a short real training run, then its evaluation checked by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from vla_sensor.config import register_configs
from vla_sensor.eval.config import EvalConfig
from vla_sensor.eval.run import RunLoadError, evaluate_run

REPO = Path(__file__).resolve().parents[2]
SMALL_RUN = [
    "data.synthetic.trajectories=3", "data.synthetic.seconds=1.5", "data.synthetic.image_size=56",
    "data.synthetic.no_sensor_trajectories=1", "data.val_fraction=0.34", "data.num_workers=0",
    "data.batch_size=4", "data.sensor_window_size=65", "data.horizon=3", "logger=jsonl",
    "trainer.max_steps=3", "trainer.warmup_steps=1", "trainer.log_every=1", "trainer.val_every=0",
    "trainer.save_every=3", "trainer.progress_bar=false",
]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vla_sensor.training.loop import train

    tmp = tmp_path_factory.mktemp("evalrun")
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            *SMALL_RUN, f"data.root={tmp / 'data'}", f"data.cache_strategy.cache_dir={tmp / 'cache'}",
            f"output_dir={tmp / 'run'}",
        ])
    train(cfg)
    return tmp / "run"


def test_metrics_json_matches_a_hand_computation(trained_run: Path, tmp_path: Path) -> None:
    from vla_sensor.data.collate import collate_samples
    from vla_sensor.models.vla import QwenVLAWithSensor

    result = evaluate_run(trained_run, output_dir=tmp_path / "eval", cpu=True)
    payload = json.loads((tmp_path / "eval" / "eval_metrics.json").read_text())
    assert {"run_dir", "weights", "num_samples", "trajectories", "horizon", "action_dim", "metrics"} <= set(payload)
    assert (tmp_path / "eval" / "action_traces.png").stat().st_size > 0
    assert (tmp_path / "eval" / "error_by_horizon.png").stat().st_size > 0
    assert "| all |" in result.table

    # hand computation: the exported model over the run's validation trajectories, one sample at a time
    from vla_sensor.eval.run import build_eval_dataset, load_run_config

    cfg = load_run_config(trained_run)
    dataset = build_eval_dataset(cfg, None)
    assert [str(t.path) for t in dataset.trajectories] == payload["trajectories"]
    model = QwenVLAWithSensor.from_pretrained(trained_run / "final").eval()
    dataset.input_transform = model.build_sample_transform(dataset.view_selection, dataset.image_size)
    errors, sq = [], []
    with torch.no_grad():
        for i in range(len(dataset)):
            batch = collate_samples([dataset[i]])
            err = (model.predict_action(batch) - batch["actions"])[0].numpy()  # (H, A)
            valid = ~batch["action_is_pad"][0].numpy()
            errors.append(np.abs(err[valid]))
            sq.append(err[valid] ** 2)
    l1 = float(np.concatenate(errors).mean())
    mse = float(np.concatenate(sq).mean())
    overall = payload["metrics"]["all"]
    assert overall["num_action_steps"] == sum(len(e) for e in errors)
    assert overall["l1"] == pytest.approx(l1, rel=1e-4)
    assert overall["mse"] == pytest.approx(mse, rel=1e-4)
    assert len(overall["l1_per_horizon_step"]) == payload["horizon"] == 3
    assert len(overall["l1_per_action_dim"]) == payload["action_dim"]
    groups = payload["metrics"]
    assert groups["with_sensor"]["num_action_steps"] + groups["without_sensor"]["num_action_steps"] == \
        overall["num_action_steps"]


def test_checkpoint_and_explicit_val_dirs(trained_run: Path, tmp_path: Path) -> None:
    ckpt = sorted((trained_run / "checkpoints").glob("step_*"))[-1]
    data_dirs = sorted(p for p in (trained_run.parent / "data").iterdir() if p.is_dir())
    from_final = evaluate_run(trained_run, val_dirs=[str(data_dirs[0])], output_dir=tmp_path / "a", cpu=True)
    from_ckpt = evaluate_run(trained_run, checkpoint=str(ckpt), val_dirs=[str(data_dirs[0])],
                             output_dir=tmp_path / "b", cpu=True)
    # the last checkpoint and the final export hold the same weights
    assert from_ckpt.metrics["all"]["l1"] == pytest.approx(from_final.metrics["all"]["l1"], rel=1e-5)


def test_missing_pieces_are_named(trained_run: Path, tmp_path: Path) -> None:
    with pytest.raises(RunLoadError, match=r"no config\.yaml"):
        evaluate_run(tmp_path, cpu=True)
    with pytest.raises(RunLoadError, match="no such directory"):
        evaluate_run(tmp_path / "nope", cpu=True)
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.yaml").write_text((trained_run / "config.yaml").read_text())
    with pytest.raises(RunLoadError, match="no final export"):
        evaluate_run(bare, cpu=True)
    with pytest.raises(RunLoadError, match=r"model\.safetensors"):
        evaluate_run(trained_run, checkpoint=str(tmp_path), cpu=True)


def test_evaluate_py_command_line(trained_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    proc = subprocess.run(
        [sys.executable, str(REPO / "evaluate.py"), f"run_dir={trained_run}", f"output_dir={out}", "cpu=true"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| horizon step | L1 | MSE |" in proc.stdout
    assert json.loads((out / "eval_metrics.json").read_text())["metrics"]["all"]["num_action_steps"] > 0


def test_a_sweep_directory_is_evaluated_job_by_job(trained_run: Path, tmp_path: Path) -> None:
    import shutil

    from vla_sensor.eval.sweep import evaluate_sweep

    sweep = tmp_path / "sweep"
    for job, flag in (("0", "true"), ("1", "false")):
        shutil.copytree(trained_run, sweep / job, ignore=shutil.ignore_patterns("checkpoints"))
        (sweep / job / ".hydra").mkdir()
        (sweep / job / ".hydra" / "overrides.yaml").write_text(
            f"- model.sensor_enabled={flag}\n- experiment=sensor_ablation\n")
    cfg = OmegaConf.merge(OmegaConf.structured(EvalConfig), {"run_dir": str(sweep), "cpu": True})
    table, payload, is_main = evaluate_sweep(sweep, cfg)
    assert is_main
    assert set(payload) == {"0", "1"}
    # only what differs between the jobs labels the rows
    assert "| 0 | model.sensor_enabled=true |" in table and "| 1 | model.sensor_enabled=false |" in table
    assert "experiment=sensor_ablation" not in table
    assert json.loads((sweep / "sweep_eval.json").read_text())["1"]["overrides"][0] == "model.sensor_enabled=false"
    assert (sweep / "0" / "eval" / "eval_metrics.json").is_file()


@pytest.mark.parametrize("workers", [0, 2])
def test_two_processes_count_every_sample_once(trained_run: Path, tmp_path: Path, workers: int) -> None:
    """Each rank scores a disjoint shard, also with DataLoader workers and the mmap cache's main-process
    gather; rank 0 alone prints and writes."""
    import os

    single = evaluate_run(trained_run, output_dir=tmp_path / "one", cpu=True)
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29531",
         str(REPO / "evaluate.py"), f"run_dir={trained_run}", f"output_dir={tmp_path / 'two'}", "cpu=true",
         "batch_size=2", f"num_workers={workers}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "eval_metrics.json").read_text())["metrics"]
    assert two["all"]["num_action_steps"] == single.metrics["all"]["num_action_steps"]
    assert proc.stdout.count("| all |") == 1  # one table, from rank 0
    assert two["all"]["l1"] == pytest.approx(single.metrics["all"]["l1"], rel=1e-5)
