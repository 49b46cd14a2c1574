"""Small generated recordings for the reliability tests (generated once per session, a few MB)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vla_sensor.data.synthetic import generate_dataset


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 trajectories with a 650 Hz sensor stream and 1 without, 15 steps of 2 views each."""
    root = tmp_path_factory.mktemp("tiny")
    generate_dataset(root, trajectories=3, seconds=1.5, sensor_rate=[650.0], action_rate=10.0, image_size=32,
                     views=("left", "oak"), no_sensor_trajectories=1, seed=1)
    return root
