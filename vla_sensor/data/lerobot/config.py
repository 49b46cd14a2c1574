"""Typed settings of the LeRobot reader (``data.lerobot`` in the Hydra schema). Kept free of torch.

The field names are the :class:`~vla_sensor.data.lerobot.reader.LeRobotReader` constructor's
arguments, so a builder can do ``LeRobotReader(**cfg.data.lerobot)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class LeRobotConfig:
    """Which LeRobot features become the sensor stream, the camera views and the actions."""

    # per-frame (k, C) features are k·fps Hz streams, (C,) features frame-rate ones; concatenated on channels
    sensor_features: list[str] = field(default_factory=lambda: ["observation.sensor"])
    image_features: Optional[list[str]] = None  # noqa: UP045  (null: every image/video feature)
    action_feature: str = "action"
    # the robot's state (S,) per frame; the default is read when the dataset has it, any other name must
    # exist; null: never read
    state_feature: Optional[str] = "observation.state"  # noqa: UP045
    expected_channels: Optional[int] = None  # noqa: UP045  (null: any channel count)
    video_tolerance_s: float = 1e-4  # a decoded frame must lie this close to its frame's timestamp
