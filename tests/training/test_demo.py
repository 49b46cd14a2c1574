"""The demo for real (short): generated recordings, tiny random Qwen-VL, CPU; the loss goes down."""

from __future__ import annotations

import pytest

from tests.training.helpers import read_metrics, train_py


@pytest.mark.slow
def test_demo_trains_and_exports(tmp_path):
    train_py(["output_dir=run", "data.root=demo", "data.synthetic.trajectories=3", "data.synthetic.seconds=3",
              "data.val_fraction=0.34", "data.num_workers=1", "data.cache=true", "trainer.max_steps=16",
              "trainer.log_every=2", "trainer.val_every=0", "trainer.warmup_steps=2", "trainer.save_every=8",
              "trainer.progress_bar=false", "cpu=true"], tmp_path)
    run = tmp_path / "run"
    assert (tmp_path / "demo").is_dir()  # generated on first use
    records = [r for r in read_metrics(run) if "loss" in r]
    assert [r["step"] for r in records] == list(range(2, 17, 2))
    first, last3 = records[0]["loss"], [r["loss"] for r in records[-3:]]
    assert sum(last3) / 3 < 0.9 * first, [r["loss"] for r in records]
    assert all(r["sensor_cache_bytes"] > 0 and r["samples_per_s"] > 0 for r in records)
    assert "val_loss" in read_metrics(run)[-1]
    for name in ("model.safetensors", "vla_config.json", "action_stats.json", "config.yaml"):
        assert (run / "final" / name).is_file(), name
    assert (run / "wandb").is_dir() and list((run / "wandb").glob("offline-run-*"))

    from vla_sensor.models.vla import QwenVLAWithSensor

    model = QwenVLAWithSensor.from_pretrained(run / "final")
    assert model.action_stats()["mean"]


def test_cubic_with_cache_trains_through_a_trajectory_start(tmp_path):
    """``python train.py encoder.interpolation_mode=cubic data.cache=true``: the first windows of a
    trajectory hold fewer than 4 sensor rows and must not stop training."""
    train_py(["encoder.interpolation_mode=cubic", "data.cache=true", "output_dir=run", "data.root=demo",
              "data.synthetic.trajectories=2", "data.synthetic.seconds=1", "data.val_fraction=0",
              "data.num_workers=0", "data.batch_size=10", "trainer.max_steps=2", "trainer.val_every=0",
              "trainer.save_every=0", "trainer.progress_bar=false", "logger=jsonl", "cpu=true"], tmp_path)
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()


def test_token_fusion_with_16_sensor_tokens_trains(tmp_path):
    """``model.fusion=tokens model.num_sensor_tokens=16``: the encoder's token count follows the model's
    (one owner), so the prompt's 16 placeholders and the encoder's 16 tokens match and training runs."""
    train_py(["model.fusion=tokens", "model.num_sensor_tokens=16", "encoder.gradient_checkpointing=true",
              "output_dir=run", "data.root=demo", "data.synthetic.trajectories=2", "data.synthetic.seconds=1",
              "data.val_fraction=0", "data.num_workers=0", "data.batch_size=4", "trainer.max_steps=2",
              "trainer.val_every=0", "trainer.save_every=0", "trainer.progress_bar=false", "logger=jsonl",
              "cpu=true"], tmp_path)
    from vla_sensor.models.vla import QwenVLAWithSensor

    model = QwenVLAWithSensor.from_pretrained(tmp_path / "run" / "final")
    assert model.sensor_encoder.num_tokens == 16 and model.prompt_spec().num_sensor_tokens == 16
