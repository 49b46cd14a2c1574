"""Helpers for the reliability tests: launch ``train.py`` with an injected fault, read a run's state."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from tests.training.helpers import REPO, env, read_metrics

FAULTY = Path(__file__).resolve().parent / "faulty_train.py"


def launch(overrides: list[str], cwd: Path, fault: str = "", timeout: int = 120,
           **extra_env: str) -> subprocess.CompletedProcess:
    """Run train.py (with ``VLA_FAULT=fault`` injected) and return the finished process, whatever its end."""
    return subprocess.run([sys.executable, str(FAULTY), *overrides], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env(VLA_FAULT=fault, PYTHONPATH=str(REPO), **extra_env))


def assert_killed(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == -signal.SIGKILL, f"expected a SIGKILL death, got {proc.returncode}:\n{proc.stderr[-4000:]}"


def assert_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"train.py failed ({proc.returncode}):\n{proc.stderr[-6000:]}"


def resumed_from(proc: subprocess.CompletedProcess) -> int | None:
    """The step a launch resumed from (from its log), None for a fresh start."""
    for line in (proc.stdout + proc.stderr).splitlines():
        if "resumed from" in line and "at step" in line:
            return int(line.split("at step")[1].split()[0])
    return None


def metric_steps(run_dir: Path) -> list[int]:
    return [r["step"] for r in read_metrics(run_dir)]


def wandb_ids(run_dir: Path) -> set[str]:
    # the id is in each run file's name ("run-<id>.wandb"); a run directory may carry a "-1" suffix
    return {f.stem.removeprefix("run-") for f in (Path(run_dir) / "wandb").glob("offline-run-*/*.wandb")}


def trainer_state(checkpoint: Path) -> dict:
    return json.loads((checkpoint / "trainer_state.json").read_text())
