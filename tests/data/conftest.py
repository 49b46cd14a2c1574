"""Small generated trajectories shared by the data tests (a few MB, generated once per session)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from vla_sensor.data.synthetic import generate_dataset

SMALL = {"seconds": 1.5, "action_rate": 10.0, "image_size": 32, "views": ("left", "oak")}


@pytest.fixture(scope="session")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 sensor trajectories at 325/650/1300 Hz and 1 without sensor, 15 steps each."""
    root = tmp_path_factory.mktemp("small")
    generate_dataset(root, trajectories=4, sensor_rate=[325, 650, 1300], no_sensor_trajectories=1, seed=3, **SMALL)
    return root


@pytest.fixture(scope="session")
def small_dirs(small_root: Path) -> list[Path]:
    return sorted(small_root.glob("traj_*"))


@pytest.fixture
def traj_copy(small_dirs: list[Path], tmp_path: Path) -> Path:
    """A private, modifiable copy of the 650 Hz trajectory."""
    dst = tmp_path / "traj"
    shutil.copytree(small_dirs[1], dst)
    return dst


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"
