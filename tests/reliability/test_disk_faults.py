"""A full disk or a read-only output directory: a clear error, and no checkpoint lost.

Tests run as root, where ``chmod`` does not stop writes, so the faults are injected at the OS-call
boundary (``faulty_train.py``): ``ENOSPC`` inside ``save_state``, ``EROFS`` for every write under
``output_dir``.
"""

from __future__ import annotations

from pathlib import Path

from tests.reliability.helpers import assert_ok, launch, resumed_from, trainer_state
from tests.training.helpers import TOY_ARGS
from vla_sensor.training.checkpointing import complete_checkpoints

ARGS = [*TOY_ARGS, "trainer.max_steps=6", "trainer.save_every=2"]


def test_disk_full_mid_checkpoint_keeps_the_previous_one(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = launch([*ARGS, f"output_dir={run}", "trainer.resume=auto"], tmp_path, "enospc@2")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "checkpoint step_0000004 could not be written" in proc.stderr
    assert "No space left on device" in proc.stderr and "previous checkpoint step_0000002 is intact" in proc.stderr
    assert [p.name for p in complete_checkpoints(run)] == ["step_0000002"]
    assert not list((run / "checkpoints").glob(".tmp_*")), "the half-written checkpoint was left behind"

    again = launch([*ARGS, f"output_dir={run}", "trainer.resume=auto"], tmp_path)  # space freed: continue
    assert_ok(again)
    assert resumed_from(again) == 2
    assert trainer_state(complete_checkpoints(run)[-1])["step"] == 6


def test_read_only_output_dir_fails_before_training(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    proc = launch([*ARGS, f"output_dir={run}"], tmp_path, "readonly")
    assert proc.returncode == 1
    assert f"output directory {run} is not writable (Read-only file system)" in proc.stderr, proc.stderr[-3000:]
    assert list(run.iterdir()) == []  # nothing built, nothing trained


def test_output_dir_below_a_file_fails_before_training(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    proc = launch([*ARGS, f"output_dir={tmp_path / 'file' / 'run'}"], tmp_path)
    assert proc.returncode == 1
    assert f"output directory {tmp_path / 'file' / 'run'} is not writable (Not a directory)" in proc.stderr
