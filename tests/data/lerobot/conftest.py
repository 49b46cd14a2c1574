"""Readers and private copies of the LeRobot fixtures."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from lerobot_fixtures import IMAGES_KC, VIDEO_WRENCH, WRENCH_FEATURES

from vla_sensor.data.lerobot import LeRobotReader


@pytest.fixture
def kc_reader() -> LeRobotReader:
    return LeRobotReader(sensor_features=["observation.sensor"], expected_channels=1026)


@pytest.fixture
def wrench_reader() -> LeRobotReader:
    return LeRobotReader(sensor_features=WRENCH_FEATURES)


@pytest.fixture
def kc_copy(tmp_path: Path) -> Path:
    """A private, modifiable copy of the parquet-image fixture."""
    return Path(shutil.copytree(IMAGES_KC, tmp_path / "images_kc"))


@pytest.fixture
def video_copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(VIDEO_WRENCH, tmp_path / "video_wrench"))
