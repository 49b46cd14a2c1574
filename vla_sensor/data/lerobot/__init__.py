"""LeRobot dataset format v3.0: read episodes as trajectories, import to and export from the native format.

Read with pyarrow (parquet) and PyAV (video); the ``lerobot`` package is not needed. See docs/lerobot.md.
The reader is imported lazily, so composing a config (which needs only :class:`LeRobotConfig`) never
loads pyarrow.
"""

from __future__ import annotations

from typing import Any

from vla_sensor.data.lerobot.config import LeRobotConfig

__all__ = ["LeRobotConfig", "LeRobotReader"]


def __getattr__(name: str) -> Any:
    if name == "LeRobotReader":
        from vla_sensor.data.lerobot.reader import LeRobotReader

        return LeRobotReader
    raise AttributeError(name)
