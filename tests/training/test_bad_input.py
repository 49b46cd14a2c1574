"""Bad input fails with a clear message before any training step."""

from __future__ import annotations

import pytest

from tests.training.helpers import TOY_ARGS, compose_cfg, read_metrics
from vla_sensor.training.checkpointing import ResumeError
from vla_sensor.training.loop import train


def _run(tmp_path, *extra):
    return train(compose_cfg([*TOY_ARGS, f"output_dir={tmp_path / 'run'}", "trainer.max_steps=2",
                              "trainer.save_every=2", *extra]))


def test_resume_pointing_at_nothing(tmp_path):
    with pytest.raises(ResumeError, match="no such checkpoint or run directory"):
        _run(tmp_path, f"trainer.resume={tmp_path / 'missing'}")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ResumeError, match="no complete checkpoint"):
        _run(tmp_path, f"trainer.resume={empty}")


def test_output_dir_with_another_runs_checkpoints(tmp_path):
    _run(tmp_path)
    before = read_metrics(tmp_path / "run")
    with pytest.raises(ResumeError, match=r"already holds checkpoints.*trainer.resume=auto"):
        _run(tmp_path)
    with pytest.raises(ResumeError, match=r"incompatible config:\n  data.horizon: checkpoint has 8, this run has 4"):
        _run(tmp_path, "trainer.resume=auto", "data.horizon=4")
    with pytest.raises(ResumeError, match=r"trainer.stage.name: checkpoint has 'stage1', this run has 'stage2_full'"):
        _run(tmp_path, "trainer.resume=auto", "trainer/stage=stage2_full", f"trainer.stage.init_from={tmp_path}")
    assert read_metrics(tmp_path / "run") == before  # nothing trained, nothing logged


def test_world_size_mismatch(tmp_path):
    with pytest.raises(RuntimeError, match="expected_world_size=2 but this launch has 1"):
        _run(tmp_path, "trainer.expected_world_size=2")
    assert not (tmp_path / "run").exists()


def test_dataset_smaller_than_a_batch(tmp_path, monkeypatch):
    monkeypatch.setenv("VLA_TOY_SAMPLES", "4")
    with pytest.raises(ValueError, match=r"smaller than one batch per process: data.batch_size=8"):
        _run(tmp_path)


def test_stage2_without_stage1_weights(tmp_path):
    with pytest.raises(ValueError, match=r"trainer.stage=stage2_lora needs trainer.stage.init_from"):
        _run(tmp_path, "trainer/stage=stage2_lora")
    with pytest.raises(FileNotFoundError, match=r"trainer.stage.init_from=.*no such directory"):
        _run(tmp_path, "trainer/stage=stage2_full", f"trainer.stage.init_from={tmp_path / 'nothing'}")


def test_launched_world_differs_from_joined_world(monkeypatch):
    from vla_sensor.training.loop import check_world_size

    monkeypatch.setenv("WORLD_SIZE", "2")  # e.g. `torchrun --nproc_per_node 2 train.py` on CPU without cpu=true
    with pytest.raises(RuntimeError, match=r"started 2 processes .* joined a world of 1.*cpu=true"):
        check_world_size(1, None)
    check_world_size(2, 2)
