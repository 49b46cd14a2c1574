"""LeRobot v3.0 dataset -> native trajectory directories (one per episode), through ``write_trajectory``.

Images are written as PNG (lossless: the pixels the reader decoded). The sensor stream's channels
are split into native channel keys (``forces`` = channel 0 and ``alines`` = the other 1025 for a
1026-channel stream, which the native reader expects by default; one ``sensor`` key otherwise).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vla_sensor.data.errors import DataFormatError
from vla_sensor.data.format import Trajectory
from vla_sensor.data.lerobot.reader import LeRobotReader
from vla_sensor.data.writer import write_trajectory

NATIVE_SPLIT = (("forces", 1), ("alines", 1025))


def channel_split(channels: int, split: Sequence[tuple[str, int]] | None = None) -> list[tuple[str, int]]:
    """Native channel keys and widths for a stream of ``channels`` channels."""
    if split is None:
        split = NATIVE_SPLIT if channels == sum(w for _, w in NATIVE_SPLIT) else (("sensor", channels),)
    if sum(w for _, w in split) != channels:
        raise DataFormatError(f"channel split {list(split)} covers {sum(w for _, w in split)} of {channels} channels")
    return list(split)


def _frames(traj: Trajectory, view: str) -> Iterator[np.ndarray]:
    for t in range(traj.num_steps):
        yield traj.images.decode(view, t, None)


def import_episode(traj: Trajectory, out_dir: Path, split: Sequence[tuple[str, int]] | None = None) -> Path:
    """Write one episode as a native trajectory directory."""
    sensor: dict[str, Any] | None = None
    meta = dict(traj.meta)
    if traj.has_sensor:
        stream = traj.load_sensor_stream(validate=True)
        sensor = {"timestamps": traj.sensor_timestamps}
        col = 0
        for key, width in channel_split(stream.shape[1], split):
            sensor[key] = stream[:, col] if width == 1 else stream[:, col : col + width]
            col += width
    return write_trajectory(
        out_dir,
        action_timestamps=traj.action_timestamps,
        actions=traj.actions,
        images={view: _frames(traj, view) for view in traj.images.views},
        sensor=sensor,
        meta=meta,
        states=traj.states,
        image_format="png",
    )


def import_dataset(src: str | os.PathLike[str], out: str | os.PathLike[str], reader: LeRobotReader,
                   split: Sequence[tuple[str, int]] | None = None, progress: bool = True) -> list[Path]:
    """Every episode of ``src`` as ``out/episode_NNNNNN``; returns the directories written."""
    out = Path(out)
    written = []
    for path in reader.discover(src):
        traj = reader.read(path)
        written.append(import_episode(traj, out / path.name, split))
        if progress:
            print(f"{path.name}: {traj.num_steps} steps -> {written[-1]}")
    return written
