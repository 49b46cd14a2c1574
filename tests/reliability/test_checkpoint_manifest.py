"""Each checkpoint records its files (names, sizes, SHA-256) when written; a resume verifies them first.

``trainer.resume=auto`` after the newest checkpoint was damaged (truncated or overwritten weights, a
truncated or missing file of the accelerator state, a damaged manifest) resumes from the newest intact
one, saying which it skipped and why; an explicit ``trainer.resume=<damaged checkpoint>`` is refused
naming the file.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.reliability.helpers import assert_ok, launch, resumed_from
from tests.training.helpers import REPO, TOY_ARGS, run_cmd
from vla_sensor.training.checkpointing import (
    MANIFEST,
    ResumeError,
    complete_checkpoints,
    file_digest,
    resolve_resume,
)

RUN = [*TOY_ARGS, "trainer.save_every=2", "trainer.keep_last=0", "trainer.ema.enabled=true"]
TOY_ENV = {"VLA_TOY_SAMPLES": "64"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run with checkpoints at steps 2 and 4 (shared; each test damages its own copy)."""
    root = tmp_path_factory.mktemp("manifest")
    run = root / "run"
    assert_ok(launch([*RUN, "trainer.max_steps=4", f"output_dir={run}"], root, **TOY_ENV))
    return run


@pytest.fixture()
def run(trained: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "run"))


def _truncate(name: str) -> Callable[[Path], str]:
    def damage(ckpt: Path) -> str:
        f = ckpt / name
        os.truncate(f, f.stat().st_size // 2)
        return rf"{f} has \d+ bytes, the manifest records \d+ \(truncated\)"
    return damage


def _overwrite_middle(name: str, size: int) -> Callable[[Path], str]:
    def damage(ckpt: Path) -> str:
        f = ckpt / name
        with open(f, "r+b") as fh:
            fh.seek(f.stat().st_size // 2)
            fh.write(b"\xff" * size)
        return rf"{f} does not match its SHA-256"
    return damage


def _delete(name: str) -> Callable[[Path], str]:
    def damage(ckpt: Path) -> str:
        (ckpt / name).unlink()
        return rf"{ckpt / name} is missing"
    return damage


def _bad_manifest(ckpt: Path) -> str:
    (ckpt / MANIFEST).write_text('{"files": {')
    return rf"{ckpt / MANIFEST} is unreadable"


DAMAGE = {
    "model_truncated": _truncate("model.safetensors"),
    "model_bytes_overwritten": _overwrite_middle("model.safetensors", 64),
    "optimizer_truncated": _truncate("optimizer.bin"),
    "optimizer_bytes_overwritten": _overwrite_middle("optimizer.bin", 1),
    "scheduler_truncated": _truncate("scheduler.bin"),
    "rng_state_missing": _delete("random_states_0.pkl"),
    "ema_state_truncated": _truncate("custom_checkpoint_0.pkl"),
    "trainer_state_overwritten": _overwrite_middle("trainer_state.json", 1),
    "manifest_damaged": _bad_manifest,
}


def test_manifest_records_every_file(trained: Path) -> None:
    ckpts = complete_checkpoints(trained)
    assert [c.name for c in ckpts] == ["step_0000002", "step_0000004"]
    for ckpt in ckpts:
        files = json.loads((ckpt / MANIFEST).read_text())["files"]
        on_disk = {p.name for p in ckpt.iterdir() if p.name not in (MANIFEST, "COMPLETE")}
        assert set(files) == on_disk >= {"model.safetensors", "optimizer.bin", "scheduler.bin",
                                         "random_states_0.pkl", "custom_checkpoint_0.pkl", "trainer_state.json"}
        for name, entry in files.items():
            assert entry == {"size": (ckpt / name).stat().st_size, "sha256": file_digest(ckpt / name)}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_newest_checkpoint_is_skipped_or_refused(run: Path, case: str,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    older, newest = complete_checkpoints(run)
    reason = DAMAGE[case](newest)
    with caplog.at_level(logging.WARNING):
        assert resolve_resume("auto", run) == older
    assert f"skipping damaged checkpoint {newest}" in caplog.text
    assert re.search(reason, caplog.text), caplog.text
    with pytest.raises(ResumeError, match=reason) as info:
        resolve_resume(str(newest), run)
    assert f"trainer.resume={newest}: the checkpoint is damaged" in str(info.value)
    assert "step_0000002" in str(info.value)  # the way out
    assert resolve_resume(str(run), run) == older  # a run directory: its newest intact checkpoint


def test_every_checkpoint_damaged_is_an_error_not_a_fresh_start(run: Path) -> None:
    for ckpt in complete_checkpoints(run):
        _truncate("model.safetensors")(ckpt)
    with pytest.raises(ResumeError, match=r"(?s)every checkpoint is damaged.*step_0000004.*step_0000002"):
        resolve_resume("auto", run)


def test_checkpoint_without_manifest_still_resumes(run: Path) -> None:
    """Checkpoints written before manifests existed are loaded (unverified)."""
    for ckpt in complete_checkpoints(run):
        (ckpt / MANIFEST).unlink()
    assert resolve_resume("auto", run) == complete_checkpoints(run)[-1]


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.bin"])
def test_train_py_resume_auto_falls_back_to_the_intact_checkpoint(run: Path, tmp_path: Path, name: str) -> None:
    _, newest = complete_checkpoints(run)
    _truncate(name)(newest)
    proc = launch([*RUN, "trainer.max_steps=6", f"output_dir={run}", "trainer.resume=auto"], tmp_path, **TOY_ENV)
    assert_ok(proc)
    out = proc.stdout + proc.stderr
    assert resumed_from(proc) == 2, out[-3000:]
    assert f"skipping damaged checkpoint {newest}: {newest / name} has" in out, out[-3000:]
    assert [c.name for c in complete_checkpoints(run)] == ["step_0000002", "step_0000004", "step_0000006"]
    assert resolve_resume("auto", run).name == "step_0000006"  # step 4 was written anew, intact


def test_train_py_explicit_resume_of_a_damaged_checkpoint_is_refused(run: Path, tmp_path: Path) -> None:
    _, newest = complete_checkpoints(run)
    _truncate("model.safetensors")(newest)
    proc = launch([*RUN, "trainer.max_steps=6", f"trainer.resume={newest}"], tmp_path, **TOY_ENV)
    assert proc.returncode != 0
    assert f"{newest / 'model.safetensors'} has" in proc.stderr and "(truncated)" in proc.stderr, proc.stderr[-3000:]
    assert "SafetensorError" not in proc.stderr


@pytest.mark.slow
def test_two_process_ddp_resume_skips_the_damaged_checkpoint_on_every_rank(tmp_path: Path) -> None:
    """Rank 0 alone verifies (one warning) and every rank loads the checkpoint it chose; the run lock
    is rank 0's alone (rank 1 taking it too would refuse the run)."""
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(REPO / "train.py"),
                "cpu=true", "trainer.expected_world_size=2", *RUN, f"output_dir={tmp_path / 'run'}"]
    run_cmd([*launcher, "trainer.max_steps=4"], tmp_path, VLA_TOY_SAMPLES="96")
    run = tmp_path / "run"
    _, newest = complete_checkpoints(run)
    _truncate("model.safetensors")(newest)
    proc = run_cmd([*launcher, "trainer.max_steps=6", "trainer.resume=auto"], tmp_path, VLA_TOY_SAMPLES="96")
    out = proc.stdout + proc.stderr
    assert out.count(f"skipping damaged checkpoint {newest}") == 1, out[-3000:]
    assert resumed_from(proc) == 2, out[-3000:]
    assert [c.name for c in complete_checkpoints(run)] == ["step_0000002", "step_0000004", "step_0000006"]
