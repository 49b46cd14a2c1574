"""``LeRobotReader``: every episode of a LeRobot v3.0 dataset as a :class:`Trajectory`.

Mapping: the ``action`` feature -> actions, ``observation.state`` (``state_feature``) -> states, the
``timestamp`` column -> action timestamps, image and
video features -> views named by their feature key, the episode's task -> instruction, and the
``sensor_features`` -> one sensor stream (see :mod:`vla_sensor.data.lerobot.stream` for the (k, C)
convention). ``read`` checks everything that needs no sensor data (files, features, shapes, dtypes,
row ranges, timestamps, NaN in actions, video lengths); the sensor columns are read lazily by the
trajectory's ``sensor_loader``, so a warm memory-mapped cache never reads them.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vla_sensor.data.errors import DataFormatError, suggest
from vla_sensor.data.format import Trajectory, check_finite, check_states, check_timestamps
from vla_sensor.data.lerobot.config import LeRobotConfig
from vla_sensor.data.lerobot.images import LeRobotImages, ParquetImages, VideoImages
from vla_sensor.data.lerobot.meta import (
    IMAGE_DTYPES,
    DatasetMeta,
    Episode,
    episode_path,
    feature_shape,
    parse_episode_path,
)
from vla_sensor.data.lerobot.parquet import DataFile, column_array
from vla_sensor.data.lerobot.stream import hold_indices, split_shape, stream_timestamps
from vla_sensor.data.lerobot.video import VideoCursor, video_end_time
from vla_sensor.data.timebase import check_rate

NUMERIC = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "bool")
READER_VERSION = 1

_DEFAULTS = LeRobotConfig()  # the reader's defaults are the data.lerobot schema's


class LeRobotReader:
    """Reads LeRobot v3.0 episodes; constructed from ``data.lerobot`` (:class:`LeRobotConfig`)."""

    def __init__(
        self,
        sensor_features: Sequence[str] = tuple(_DEFAULTS.sensor_features),
        image_features: Sequence[str] | None = _DEFAULTS.image_features,
        action_feature: str = _DEFAULTS.action_feature,
        state_feature: str | None = _DEFAULTS.state_feature,
        expected_channels: int | None = _DEFAULTS.expected_channels,
        video_tolerance_s: float = _DEFAULTS.video_tolerance_s,
        **_: Any,
    ) -> None:
        self.sensor_features = list(sensor_features)
        self.image_features = None if image_features is None else list(image_features)
        self.action_feature = action_feature
        self.state_feature = state_feature
        self.expected_channels = expected_channels
        self.video_tolerance_s = float(video_tolerance_s)
        self._metas: dict[tuple[Any, ...], DatasetMeta] = {}

    def settings(self) -> dict[str, Any]:
        """What changes how a stream is decoded (part of on-disk cache keys)."""
        return {"format": "lerobot", "version": READER_VERSION, "sensor_features": self.sensor_features}

    def meta(self, root: str | os.PathLike[str]) -> DatasetMeta:
        """The dataset's metadata, loaded once per root (again when meta/ changed)."""
        root = Path(root)
        key = (root.resolve(), *_stamp(root / "meta"))
        if key not in self._metas:
            self._metas[key] = DatasetMeta(root)
        return self._metas[key]

    # ------------------------------------------------------------------ public
    def discover(self, root: str | os.PathLike[str]) -> list[Path]:
        """One virtual path ``<root>/episode_NNNNNN`` per episode, in episode order."""
        meta = self.meta(root)
        if not meta.episodes:
            raise DataFormatError(f"{meta.episodes_files[0]}: no episodes; expected at least one")
        return [episode_path(root, i) for i in meta.episodes]

    def read(self, path: str | os.PathLike[str], views: Sequence[str] | None = None) -> Trajectory:
        root, index = parse_episode_path(path)
        meta = self.meta(root)
        ep = meta.episode(index)
        data = DataFile(meta.data_file(ep))
        where = f"episode {index}"
        rows = data.rows_of(ep.from_index, ep.to_index, where)
        state_key = self._state_key(meta)
        self._check_columns(meta, data, state_key)
        frames = data.read(["timestamp", "episode_index", "task_index", self.action_feature,
                            *([state_key] if state_key else [])], *rows)
        ts = column_array(frames, "timestamp", (1,), f"{data.path}:timestamp").astype(np.float64)
        check_timestamps(ts, f"{data.path}:timestamp ({where})")
        owners = frames.column("episode_index").to_numpy()
        if (owners != index).any():
            raise DataFormatError(
                f"{data.path}:episode_index: rows {rows[0]}..{rows[1]} of {where} hold episode "
                f"{int(owners[owners != index][0])}; the episodes table's row range is wrong"
            )
        actions = self._actions(meta, frames, data.path, where)
        instruction = meta.task(int(frames.column("task_index")[0].as_py()), f"{data.path} ({where})")
        traj = Trajectory(
            path=Path(path),
            action_timestamps=ts,
            actions=actions,
            images=self._images(meta, ep, data, rows, views, ts),
            instruction=instruction,
            meta={"instruction": instruction, "lerobot": {"episode_index": index, "fps": meta.fps,
                                                          "tasks": list(ep.tasks)}},
            states=self._states(meta, frames, state_key, data.path, where) if state_key else None,
        )
        if self.sensor_features:
            self._attach_sensor(traj, meta, data, rows, ts, where)
        return traj

    # ----------------------------------------------------------------- pieces
    def _state_key(self, meta: DatasetMeta) -> str | None:
        """The state feature to read: the configured one; the default only when the dataset has it."""
        key = self.state_feature
        if key is None or (key == _DEFAULTS.state_feature and key not in meta.features):
            return None
        return key

    def _check_columns(self, meta: DatasetMeta, data: DataFile, state_key: str | None = None) -> None:
        """Configured features exist in info.json (else list the available ones) and in the data file."""
        self._numeric_feature(meta, self.action_feature, "action")
        for key in self.sensor_features:
            self._numeric_feature(meta, key, "sensor")
        if state_key:
            self._numeric_feature(meta, state_key, "state")
        needed = ["timestamp", "episode_index", "task_index", self.action_feature, *self.sensor_features,
                  *([state_key] if state_key else [])]
        missing = [c for c in needed if c not in data.schema.names]
        if missing:
            raise DataFormatError(
                f"{data.path}: missing columns {missing}; found {data.schema.names}"
                f"{suggest(missing[0], data.schema.names)}"
            )

    def _numeric_feature(self, meta: DatasetMeta, key: str, what: str) -> tuple[int, ...]:
        ft = meta.feature(key, what)
        if ft["dtype"] not in NUMERIC:
            raise DataFormatError(
                f"{meta.root / 'meta/info.json'}:features.{key}: dtype {ft['dtype']!r} is not numeric; "
                f"expected one of {list(NUMERIC)} for the {what} feature"
            )
        return feature_shape(ft)

    def _actions(self, meta: DatasetMeta, frames: Any, path: Path, where: str) -> np.ndarray:
        key = self.action_feature
        shape = self._numeric_feature(meta, key, "action")
        if len(shape) != 1:
            raise DataFormatError(f"{meta.root / 'meta/info.json'}:features.{key}: shape {shape}; expected (A,)")
        actions = column_array(frames, key, shape, f"{path}:{key}").astype(np.float32).reshape(len(frames), -1)
        check_finite(actions, f"{path}:{key} ({where})")
        return actions

    def _states(self, meta: DatasetMeta, frames: Any, key: str, path: Path, where: str) -> np.ndarray:
        """The (M, S) float32 state of the episode's frames (data.lerobot.state_feature)."""
        shape = self._numeric_feature(meta, key, "state")
        if len(shape) != 1:
            raise DataFormatError(f"{meta.root / 'meta/info.json'}:features.{key}: shape {shape}; expected (S,) "
                                  "for the state feature")
        states = column_array(frames, key, shape, f"{path}:{key}").reshape(len(frames), -1)
        return check_states(states, len(frames), f"{path}:{key} ({where})")

    def _images(self, meta: DatasetMeta, ep: Episode, data: DataFile, rows: tuple[int, int],
                views: Sequence[str] | None, ts: np.ndarray) -> LeRobotImages:
        available = self.image_features if self.image_features is not None else meta.image_features()
        wanted = list(available) if views is None else list(views)
        sources: dict[str, ParquetImages | VideoImages] = {}
        for key in wanted:
            if key not in available:
                raise DataFormatError(
                    f"{meta.root / 'meta/info.json'}: unknown view {key!r}; available image features: "
                    f"{available}{suggest(key, available)}"
                )
            ft = meta.feature(key, "image")
            where = f"episode {ep.index}, feature {key!r}"
            if ft["dtype"] not in IMAGE_DTYPES:
                raise DataFormatError(
                    f"{meta.root / 'meta/info.json'}:features.{key}: dtype {ft['dtype']!r}; expected image or video"
                )
            if ft["dtype"] == "image":
                if key not in data.schema.names:
                    raise DataFormatError(f"{data.path}: missing image column {key!r}; found {data.schema.names}")
                sources[key] = ParquetImages(data, key, rows, meta.root, where)
                continue
            _, _, start, end = meta.episode_video(ep, key)
            video = meta.video_file(ep, key)
            needed = start + float(ts[-1])
            ends = video_end_time(video, where)
            if ends + self.video_tolerance_s < needed:
                raise DataFormatError(
                    f"{video}: {where}: the video ends at {ends:.4f} s, before the "
                    f"episode's last frame at {needed:.4f} s; the video is shorter than its episode"
                )
            if end + self.video_tolerance_s < needed:
                raise DataFormatError(
                    f"{meta.episodes_files[0]}: {where}: to_timestamp {end} is before the last frame ({needed:.4f} s)"
                )
            sources[key] = VideoImages(VideoCursor(video, start + ts, self.video_tolerance_s, where))
        return LeRobotImages(sources)

    def _attach_sensor(self, traj: Trajectory, meta: DatasetMeta, data: DataFile, rows: tuple[int, int],
                       ts: np.ndarray, where: str) -> None:
        info = meta.root / "meta/info.json"
        layout = []
        for key in self.sensor_features:
            shape = self._numeric_feature(meta, key, "sensor")
            layout.append((key, shape, *split_shape(shape, f"{info}:features.{key}")))
        k_max = max(k for _, _, k, _ in layout)
        channels = sum(c for _, _, _, c in layout)
        if self.expected_channels is not None and channels != self.expected_channels:
            detail = " + ".join(f"{key}{shape}" for key, shape, _, _ in layout)
            raise DataFormatError(
                f"{info}: sensor features give {channels} channels ({detail}); expected {self.expected_channels}"
            )
        check_rate(ts, meta.fps, f"{data.path}:timestamp ({where})", str(info), "fps")  # frames in seconds
        sensor_ts = stream_timestamps(ts, k_max, meta.fps)
        check_timestamps(sensor_ts, f"{data.path}:timestamp ({where}, {k_max} sensor samples per frame)")
        traj.sensor_timestamps = sensor_ts
        traj.num_channels = channels
        traj.sensor_files = (data.path,)
        traj.sensor_fingerprint = {"rows": list(rows), "features": self.sensor_features, "fps": meta.fps}
        traj.meta["sensor_rate_hz"] = k_max * meta.fps
        traj.meta["lerobot"]["samples_per_frame"] = k_max
        traj.sensor_loader = functools.partial(_load_stream, data, rows, tuple(layout), ts, meta.fps, where)


def _stamp(meta_dir: Path) -> tuple[int, ...]:
    """Sizes and mtimes of the metadata files (info.json, tasks, episodes tables)."""
    files = [meta_dir / "info.json", meta_dir / "tasks.parquet", *sorted(meta_dir.glob("episodes/*/*.parquet"))]
    return tuple(v for f in files if f.is_file() for st in [f.stat()] for v in (st.st_size, st.st_mtime_ns))


def _load_stream(data: DataFile, rows: tuple[int, int], layout: tuple[tuple[str, tuple[int, ...], int, int], ...],
                 frame_ts: np.ndarray, fps: float, where: str, validate: bool = True) -> np.ndarray:
    """The (M·k, C) float32 stream: each feature flattened to samples, held to the fastest one's times."""
    table = data.read([key for key, _, _, _ in layout], *rows)
    k_max = max(k for _, _, k, _ in layout)
    target = stream_timestamps(frame_ts, k_max, fps)
    out = np.empty((len(target), sum(c for *_, c in layout)), np.float32)
    col = 0
    for key, shape, k, c in layout:
        values = column_array(table, key, shape, f"{data.path}:{key} ({where})").reshape(-1, c)
        if validate:
            check_finite(values, f"{data.path}:{key} ({where})")
        if k != k_max:  # a slower feature: its latest sample at or before every fast sample time
            values = values[hold_indices(stream_timestamps(frame_ts, k, fps), target)]
        out[:, col : col + c] = values
        col += c
    return out
