"""Small faults: ``evaluate.py`` / ``serve.py`` on a missing run directory creates nothing; one trajectory (no validation
split possible) trains, with a warning saying so."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from tests.training.helpers import REPO, env
from vla_sensor.data.build import build_datasets


@pytest.mark.parametrize("script, extra", [("evaluate.py", ["cpu=true"]), ("evaluate.py", ["cpu=true", "sim.episodes=1"]),
                                           ("serve.py", ["port=0"])], ids=["offline", "closed_loop", "serve"])
def test_a_missing_run_dir_is_reported_and_not_created(tmp_path: Path, script: str, extra: list[str]) -> None:
    missing = tmp_path / "outputs" / "2099-01-01" / "00-00-00"
    proc = subprocess.run([sys.executable, str(REPO / script), f"run_dir={missing}", *extra],
                          cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode != 0
    assert f"run_dir={missing}: no such directory" in proc.stderr + proc.stdout, proc.stderr[-3000:]
    assert not (tmp_path / "outputs").exists(), sorted(str(p) for p in tmp_path.rglob("*"))


def test_one_trajectory_trains_without_validation_and_says_so(tiny_root: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    one = sorted(p for p in tiny_root.iterdir() if (p / "sensor.npz").is_file())[0]
    with caplog.at_level(logging.WARNING, logger="vla_sensor.data.build"):
        train_ds, val_ds, _ = build_datasets({"trajectory_dirs": [str(one)], "cache": False})
    assert val_ds is None and len(train_ds) > 0
    assert f"only 1 trajectory ({one}): no validation split is possible (data.val_fraction=0.25" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vla_sensor.data.build"):  # asked for none: no warning
        build_datasets({"trajectory_dirs": [str(one)], "cache": False, "val_fraction": 0.0})
    assert "no validation split" not in caplog.text
