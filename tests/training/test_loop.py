"""The loop on the toy task, in-process: exact resume, schedule counting, metrics, W&B, checkpoints."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.training.helpers import TOY_ARGS, compose_cfg, read_metrics
from vla_sensor.training.checkpointing import complete_checkpoints
from vla_sensor.training.loop import train

THROUGHPUT_KEYS = {"loss", "lr", "grad_norm", "samples_per_s", "step_time_s", "data_wait_s",
                   "data_wait_fraction", "host_rss_bytes", "sensor_cache_bytes"}


def _weights(run_dir):
    return load_file(str(run_dir / "final" / "model.safetensors"))


@pytest.mark.parametrize("stop", [6, 4], ids=["mid-epoch", "epoch-end"])
def test_resume_equals_straight_run(tmp_path, monkeypatch, stop):
    """N steps, killed, resumed to 2N == 2N straight: same weights (dropout RNG, data order, EMA, schedule)."""
    monkeypatch.setenv("VLA_TOY_SAMPLES", "64")  # 8 batches of 8 = 4 optimizer steps per epoch
    common = [*TOY_ARGS, "trainer.max_steps=12", f"trainer.save_every={stop}", "trainer.ema.enabled=true",
              "trainer.ema.decay=0.9", "trainer.grad_accum_steps=2"]
    straight = tmp_path / "straight"
    train(compose_cfg([*common, f"output_dir={straight}"]))

    resumed = tmp_path / "resumed"
    first = train(compose_cfg([*common, f"output_dir={resumed}", f"trainer.stop_at_step={stop}"]))
    assert first["step"] == stop and not (resumed / "final").exists()
    # A crash after the checkpoint left a half-written checkpoint and metrics past the checkpoint behind.
    (resumed / "checkpoints" / ".tmp_step_0000008").mkdir()
    (resumed / "checkpoints" / "step_0000008").mkdir()  # no COMPLETE marker: never picked up
    with (resumed / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"step": 8, "loss": 1.0}) + "\n")
    out = train(compose_cfg([*common, f"output_dir={resumed}", "trainer.resume=auto"]))
    assert out["step"] == 12

    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    steps = [r["step"] for r in read_metrics(resumed)]
    assert steps == sorted(set(steps)), f"duplicate or unordered steps: {steps}"
    assert steps == [r["step"] for r in read_metrics(straight)]
    assert read_metrics(resumed)[-1]["epoch"] == 2 and read_metrics(resumed)[-1]["samples_seen"] == 12 * 2 * 8


def test_metrics_schedule_and_keep_last(tmp_path):
    run = tmp_path / "run"
    out = train(compose_cfg([*TOY_ARGS, f"output_dir={run}", "trainer.max_steps=10", "trainer.grad_accum_steps=3",
                             "trainer.save_every=2", "trainer.keep_last=2", "trainer.lr=0.01",
                             "trainer.min_lr_ratio=0.25"]))
    records = read_metrics(run)
    train_records = [r for r in records if "loss" in r]
    assert train_records and all(r.keys() >= THROUGHPUT_KEYS for r in train_records)
    last = train_records[-1]
    assert last["step"] == 10
    assert last["samples_seen"] == 10 * 3 * 8  # steps count optimizer steps, each 3 micro-batches of 8
    assert last["lr"] == pytest.approx(0.01 * 0.25)  # the cosine reached its floor exactly at max_steps
    assert 0 <= last["data_wait_fraction"] < 1 and last["samples_per_s"] > 0 and last["sensor_cache_bytes"] > 0
    assert any("val_loss" in r for r in records) and "val_loss" in out
    assert [p.name for p in complete_checkpoints(run)] == ["step_0000008", "step_0000010"]
    assert (run / "config.yaml").is_file() and (run / "final" / "normalization.json").is_file()


def test_wandb_offline_files_and_run_id_kept_on_resume(tmp_path):
    run = tmp_path / "run"
    args = [*TOY_ARGS, "logger=default", f"output_dir={run}", "trainer.max_steps=4", "trainer.save_every=2"]
    train(compose_cfg([*args, "trainer.stop_at_step=2"]))
    train(compose_cfg([*args, "trainer.resume=auto"]))
    runs = sorted((run / "wandb").glob("offline-run-*"))
    assert len(runs) == 2, runs
    # the run id is in each run file's name (the directory gets a "-1" suffix when both start in one second)
    ids = {f.stem.removeprefix("run-") for p in runs for f in p.glob("*.wandb")}
    assert all(list(p.glob("*.wandb")) for p in runs)
    assert len(ids) == 1, f"the resumed run got a new W&B id: {runs}"
    state = json.loads((run / "checkpoints" / "step_0000004" / "trainer_state.json").read_text())
    assert state["wandb_run_id"] == ids.pop()
    assert read_metrics(run)[-1]["step"] == 4


def test_resume_from_checkpoint_path_continues_that_run(tmp_path, monkeypatch):
    run = tmp_path / "run"
    common = [*TOY_ARGS, "trainer.max_steps=4", "trainer.save_every=2"]
    train(compose_cfg([*common, f"output_dir={run}", "trainer.stop_at_step=2"]))
    monkeypatch.chdir(tmp_path)
    out = train(compose_cfg([*common, f"trainer.resume={run / 'checkpoints' / 'step_0000002'}"]))
    assert out["run_dir"] == str(run.resolve()) and out["step"] == 4
    assert [p.name for p in complete_checkpoints(run)] == ["step_0000002", "step_0000004"]
    assert not (tmp_path / "outputs").exists()
