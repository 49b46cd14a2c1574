"""Paths of the LeRobot fixtures (written by the lerobot package, see tests/fixtures/lerobot/) and their arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "lerobot"
IMAGES_KC = FIXTURES / "images_kc"  # parquet PNGs, (65, 1026) sensor, 3 episodes, 2 tasks
VIDEO_WRENCH = FIXTURES / "video_wrench"  # AV1 video, (6,) wrench + (13, 8) oct, 3 episodes, 2 tasks
WRENCH_FEATURES = ["observation.wrench", "observation.oct"]


def arrays(name: str) -> dict[str, np.ndarray]:
    """``<feature>/<episode>`` -> the arrays the fixture was written from."""
    with np.load(FIXTURES / f"{name}.npz") as z:
        return {k: z[k] for k in z.files}
