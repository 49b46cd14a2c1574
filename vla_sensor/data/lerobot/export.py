"""Native trajectory directories -> a LeRobot v3.0 dataset.

One frame per action step: ``timestamp`` = action time - first action time (LeRobot episodes start at
0), checked against ``fps``. Images: the native files' bytes as they are (PNG stays bit-exact) in the
data parquet, or with ``video=True`` frames of one MP4 per view (AV1, like LeRobot). The sensor stream
becomes one ``(k, C)`` feature, k = round(rate / fps) samples per frame (or ``samples_per_frame``):
frame i holds, for each reconstructed sample time ``t_i - (k-1-j)/(k·fps)`` (see
:mod:`vla_sensor.data.lerobot.stream`), the latest recorded sample at or before it. That is exact
(every sample kept once, none repeated) when the stream is sampled on that grid, as an imported one
is; otherwise it is a zero-order-hold resampling to k·fps Hz, and the first frame repeats the first
sample where the recording starts less than 1/fps before the first action.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from vla_sensor.data.errors import DataFormatError
from vla_sensor.data.format import DEFAULT_INSTRUCTION, Trajectory, TrajectoryReader, discover_trajectory_dirs
from vla_sensor.data.lerobot import stats as st
from vla_sensor.data.lerobot.meta import (
    CODEBASE_VERSION,
    DATA_PATH,
    DEFAULT_FEATURES,
    EPISODES_DIR,
    INFO_PATH,
    STATS_PATH,
    TASKS_PATH,
    VIDEO_PATH,
)
from vla_sensor.data.lerobot.stream import hold_indices, stream_timestamps
from vla_sensor.data.lerobot.video import encode_video

IMAGE_PREFIX = "observation.images."
FPS_TOLERANCE = 0.05  # action intervals may deviate this fraction of 1/fps
GRID_TOLERANCE_S = 1e-4  # LeRobot's default timestamp tolerance
ROW_GROUP_BYTES = 32 << 20
DATA_FILE_MB = 100


@dataclass
class ExportSettings:
    fps: float = 10.0
    video: bool = False
    vcodec: str = "libsvtav1"
    samples_per_frame: int | None = None
    sensor_feature: str = "observation.sensor"
    state_feature: str = "observation.state"  # the native ``states`` (M, S), when the recordings have them
    data_file_mb: float = DATA_FILE_MB
    robot_type: str | None = None


@dataclass
class _Layout:
    """Feature shapes fixed by the first trajectory."""

    action_dim: int
    views: dict[str, str]  # native view -> feature key
    image_shapes: dict[str, tuple[int, int, int]]
    k: int | None
    channels: int | None
    state_dim: int = 0
    features: dict[str, dict[str, Any]] = field(default_factory=dict)


def view_feature(view: str) -> str:
    return view if view.startswith(IMAGE_PREFIX) else IMAGE_PREFIX + view


def _image_shape(path: Path) -> tuple[int, int, int]:
    with Image.open(path) as im:
        return im.size[1], im.size[0], 3


def _layout(first: Trajectory, rate: float | None, s: ExportSettings) -> _Layout:
    views = {v: view_feature(v) for v in first.images.views}
    shapes = {v: _image_shape(first.image_paths[v][0]) for v in views}
    k = s.samples_per_frame or (max(1, round(rate / s.fps)) if rate else None)
    lay = _Layout(first.actions.shape[1], views, shapes, k, first.num_channels if k else None, first.state_dim)
    lay.features["action"] = {"dtype": "float32", "shape": [lay.action_dim],
                              "names": [f"action_{i}" for i in range(lay.action_dim)]}
    for v, key in views.items():
        lay.features[key] = {"dtype": "video" if s.video else "image", "shape": list(shapes[v]),
                             "names": ["height", "width", "channels"]}
    if lay.state_dim:
        lay.features[s.state_feature] = {"dtype": "float32", "shape": [lay.state_dim],
                                         "names": [f"state_{i}" for i in range(lay.state_dim)]}
    if k:
        lay.features[s.sensor_feature] = {"dtype": "float32", "shape": [k, lay.channels], "names": ["sample", "channel"]}
    lay.features.update(DEFAULT_FEATURES)
    return lay


def _check_rate(traj: Trajectory, fps: float) -> None:
    ts = traj.action_timestamps
    if len(ts) > 1:
        bad = np.flatnonzero(np.abs(np.diff(ts) * fps - 1.0) > FPS_TOLERANCE)
        if bad.size:
            i = int(bad[0])
            raise DataFormatError(
                f"{traj.path}: action steps {i} and {i + 1} are {ts[i + 1] - ts[i]:.4f} s apart; --fps {fps} "
                f"expects {1 / fps:.4f} s (LeRobot frames are evenly spaced)"
            )


def frame_times(traj: Trajectory, fps: float) -> np.ndarray:
    """Native times of the exported frames: the action times, or ``t_0 + i / fps`` where they jitter.

    LeRobot matches frames (and video frames) by ``timestamp`` = i / fps within 1e-4 s, so action
    times further off than that are snapped to the grid (frame i still holds action step i).
    """
    ts = traj.action_timestamps
    grid = ts[0] + np.arange(len(ts)) / fps
    return ts if np.abs(ts - grid).max() <= GRID_TOLERANCE_S else grid


def _sensor_chunks(traj: Trajectory, times: np.ndarray, k: int, fps: float) -> np.ndarray:
    """(M, k, C) float32 chunks: the latest sample at or before every reconstructed sample time."""
    stream = traj.load_sensor_stream(validate=True)
    grid = stream_timestamps(times, k, fps)
    return stream[hold_indices(traj.sensor_timestamps, grid)].reshape(traj.num_steps, k, -1)


def _list_type(shape: Sequence[int]) -> pa.DataType:
    """fixed_size_list for a vector (as LeRobot writes it), nested lists for (k, C) (datasets' Array2D storage)."""
    t: pa.DataType = pa.float32()
    for _ in shape[1:]:
        t = pa.list_(t)
    return pa.list_(t, shape[0]) if len(shape) == 1 else pa.list_(t)


def _hf_features(features: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The ``huggingface`` schema metadata the ``datasets`` library reads back the columns' types with."""
    out: dict[str, Any] = {}
    for key, ft in features.items():
        if ft["dtype"] == "video":
            continue
        if ft["dtype"] == "image":
            out[key] = {"_type": "Image"}
        elif list(ft["shape"]) == [1]:
            out[key] = {"dtype": ft["dtype"], "_type": "Value"}
        elif len(ft["shape"]) == 1:
            out[key] = {"feature": {"dtype": ft["dtype"], "_type": "Value"}, "length": ft["shape"][0], "_type": "List"}
        else:
            out[key] = {"shape": list(ft["shape"]), "dtype": ft["dtype"], "_type": f"Array{len(ft['shape'])}D"}
    return {"info": {"features": out}}


class _DataWriter:
    """Appends episodes to ``data/chunk-000/file-NNN.parquet``, starting a new file past the size limit."""

    def __init__(self, root: Path, schema: pa.Schema, file_mb: float) -> None:
        self.root, self.schema, self.limit = root, schema, file_mb * (1 << 20)
        self.file_index, self.bytes, self.writer = 0, 0, None

    def write(self, table: pa.Table, frame_bytes: int) -> tuple[int, int]:
        if self.writer is not None and self.bytes >= self.limit:
            self.close()
            self.file_index += 1
        if self.writer is None:
            path = self.root / DATA_PATH.format(chunk_index=0, file_index=self.file_index)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.writer, self.bytes = pq.ParquetWriter(path, self.schema), 0
        self.writer.write_table(table, row_group_size=max(1, ROW_GROUP_BYTES // max(frame_bytes, 1)))
        self.bytes += frame_bytes * table.num_rows
        return 0, self.file_index

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _episode_table(traj: Trajectory, times: np.ndarray, e: int, first_index: int, task_index: int,
                   lay: _Layout, s: ExportSettings, chunks: np.ndarray | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Columns of one episode and its per-feature stats."""
    m = traj.num_steps
    cols: dict[str, Any] = {"action": traj.actions}
    stats: dict[str, Any] = {"action": st.feature_stats(traj.actions)}
    for v, key in lay.views.items():
        if not s.video:
            cols[key] = [{"bytes": p.read_bytes(), "path": p.name} for p in traj.image_paths[v]]
        sample = [traj.images.decode(v, int(t), None) for t in st.sample_steps(m)]
        stats[key] = st.image_stats(sample)
    if lay.state_dim:
        cols[s.state_feature] = traj.states
        stats[s.state_feature] = st.feature_stats(traj.states)
    if chunks is not None:
        cols[s.sensor_feature] = chunks
        stats[s.sensor_feature] = st.feature_stats(chunks)
    ts = (times - times[0]).astype(np.float32)
    bookkeeping = {
        "timestamp": ts, "frame_index": np.arange(m, dtype=np.int64), "episode_index": np.full(m, e, np.int64),
        "index": np.arange(first_index, first_index + m, dtype=np.int64), "task_index": np.full(m, task_index, np.int64),
    }
    cols.update(bookkeeping)
    stats.update({k: st.feature_stats(v) for k, v in bookkeeping.items()})
    return cols, stats


def _arrow(cols: dict[str, Any], schema: pa.Schema) -> pa.Table:
    arrays = []
    for f in schema:
        value = cols[f.name]
        if isinstance(value, np.ndarray) and value.ndim > 1:
            flat: pa.Array = pa.array(value.reshape(-1))
            for n in reversed(value.shape[1:]):
                flat = pa.FixedSizeListArray.from_arrays(flat, n)
            arrays.append(flat.cast(f.type))
        else:
            arrays.append(pa.array(value, type=f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _schema(lay: _Layout, s: ExportSettings) -> pa.Schema:
    fields = []
    for key, ft in lay.features.items():
        if ft["dtype"] == "video":
            continue
        if ft["dtype"] == "image":
            t = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
        elif ft["shape"] == [1]:
            t = pa.from_numpy_dtype(np.dtype(ft["dtype"]))
        else:
            t = _list_type(ft["shape"])
        fields.append(pa.field(key, t))
    return pa.schema(fields, metadata={"huggingface": json.dumps(_hf_features(lay.features))})


def _stats_columns(stats: dict[str, dict[str, np.ndarray]]) -> dict[str, Any]:
    return {f"stats/{key}/{name}": np.asarray(v).tolist() for key, fs in stats.items() for name, v in fs.items()}


def _write_tables(out: Path, episodes: list[dict[str, Any]], tasks: list[str]) -> None:
    path = out / EPISODES_DIR / "chunk-000" / "file-000.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(episodes), path)
    pandas_meta = {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
             "metadata": None},
            {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode", "numpy_type": "object",
             "metadata": None},
        ],
    }
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "__index_level_0__": tasks})
    pq.write_table(table.replace_schema_metadata({"pandas": json.dumps(pandas_meta)}), out / TASKS_PATH)


def _info(lay: _Layout, s: ExportSettings, episodes: int, frames: int, tasks: int) -> dict[str, Any]:
    return {
        "codebase_version": CODEBASE_VERSION, "robot_type": s.robot_type, "total_episodes": episodes,
        "total_frames": frames, "total_tasks": tasks, "chunks_size": 1000, "data_files_size_in_mb": s.data_file_mb,
        "video_files_size_in_mb": 200, "fps": int(s.fps) if float(s.fps).is_integer() else s.fps,
        "splits": {"train": f"0:{episodes}"}, "data_path": DATA_PATH, "video_path": VIDEO_PATH if s.video else None,
        "features": lay.features,
    }


def _video_info(lay: _Layout, s: ExportSettings) -> None:
    for v, key in lay.views.items():
        h, w, c = lay.image_shapes[v]
        lay.features[key]["info"] = {
            "video.height": h, "video.width": w, "video.codec": "av1" if "av1" in s.vcodec else s.vcodec,
            "video.pix_fmt": "yuv420p", "video.is_depth_map": False, "video.fps": s.fps, "video.channels": c,
            "has_audio": False,
        }


def export_dataset(src: str | os.PathLike[str], out: str | os.PathLike[str], settings: ExportSettings | None = None,
                   reader: TrajectoryReader | None = None, progress: bool = True) -> Path:
    """Write the native trajectories under ``src`` as a LeRobot v3.0 dataset at ``out``; returns ``out``."""
    s = settings or ExportSettings()
    reader = reader or TrajectoryReader(expected_channels=None)
    out = Path(out)
    if (out / INFO_PATH).exists() or (out.exists() and any(out.iterdir())):
        raise DataFormatError(f"{out}: exists and is not empty; expected a new directory for the LeRobot dataset")
    trajs = [reader.read(d) for d in discover_trajectory_dirs(src, reader.actions_file)]
    with_sensor = [t for t in trajs if t.has_sensor]
    if with_sensor and len(with_sensor) != len(trajs):
        skipped = [t.path.name for t in trajs if not t.has_sensor]
        print(f"skipping {len(skipped)} trajectories without a sensor stream (a LeRobot feature is per frame): {skipped}")
        trajs = with_sensor
    rate = None
    if with_sensor:
        t0 = with_sensor[0]
        rate = (len(t0.sensor_timestamps) - 1) / float(t0.sensor_timestamps[-1] - t0.sensor_timestamps[0])
    lay = _layout(trajs[0], rate, s)
    if s.video:
        _video_info(lay, s)
    schema = _schema(lay, s)
    data = _DataWriter(out, schema, s.data_file_mb)
    tasks: list[str] = []
    episodes: list[dict[str, Any]] = []
    all_stats: dict[str, list[dict[str, np.ndarray]]] = {}
    frames = 0
    for e, traj in enumerate(trajs):
        _check_layout(traj, lay, s)
        task = traj.instruction or DEFAULT_INSTRUCTION
        if task not in tasks:
            tasks.append(task)
        times = frame_times(traj, s.fps)
        chunks = _sensor_chunks(traj, times, lay.k, s.fps) if lay.k else None
        cols, ep_stats = _episode_table(traj, times, e, frames, tasks.index(task), lay, s, chunks)
        frame_bytes = sum(np.asarray(v).nbytes for v in cols.values() if isinstance(v, np.ndarray)) // traj.num_steps
        frame_bytes += sum(len(c["bytes"]) for k in lay.views.values() if k in cols for c in cols[k]) // traj.num_steps
        chunk, file = data.write(_arrow(cols, schema), frame_bytes)
        row = {"episode_index": e, "tasks": [task], "length": traj.num_steps, "data/chunk_index": chunk,
               "data/file_index": file, "dataset_from_index": frames, "dataset_to_index": frames + traj.num_steps}
        if s.video:
            for key in lay.views.values():
                row.update({f"videos/{key}/chunk_index": 0, f"videos/{key}/file_index": 0,
                            f"videos/{key}/from_timestamp": frames / s.fps,
                            f"videos/{key}/to_timestamp": (frames + traj.num_steps) / s.fps})
        row.update(_stats_columns(ep_stats))
        row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
        episodes.append(row)
        for key, fs in ep_stats.items():
            all_stats.setdefault(key, []).append(fs)
        frames += traj.num_steps
        if progress:
            print(f"{traj.path.name}: {traj.num_steps} frames -> episode {e}")
    data.close()
    if s.video:
        _write_videos(out, trajs, lay, s)
    _write_tables(out, episodes, tasks)
    (out / STATS_PATH).write_text(json.dumps(
        {key: {n: np.asarray(v).tolist() for n, v in st.aggregate(fs).items()} for key, fs in all_stats.items()},
        indent=4))
    (out / INFO_PATH).write_text(json.dumps(_info(lay, s, len(trajs), frames, len(tasks)), indent=4))
    return out


def _check_layout(traj: Trajectory, lay: _Layout, s: ExportSettings) -> None:
    _check_rate(traj, s.fps)
    if traj.actions.shape[1] != lay.action_dim:
        raise DataFormatError(f"{traj.path}: {traj.actions.shape[1]} action dimensions, the first trajectory has "
                              f"{lay.action_dim}; a LeRobot feature has one shape")
    if list(traj.images.views) != list(lay.views):
        raise DataFormatError(f"{traj.path}: views {traj.images.views}, the first trajectory has {list(lay.views)}")
    if traj.state_dim != lay.state_dim:
        raise DataFormatError(f"{traj.path}: a {traj.state_dim}-dim state (0: none), the first trajectory has a "
                              f"{lay.state_dim}-dim one; a LeRobot feature has one shape")
    if lay.k and traj.num_channels != lay.channels:
        raise DataFormatError(f"{traj.path}: {traj.num_channels} sensor channels, the first trajectory has {lay.channels}")
    for v in lay.views:
        for p in traj.image_paths[v]:
            if _image_shape(p) != lay.image_shapes[v]:
                raise DataFormatError(f"{p}: image size {_image_shape(p)[:2]}, the first image of view {v!r} is "
                                      f"{lay.image_shapes[v][:2]}; a LeRobot feature has one shape")


def _write_videos(out: Path, trajs: list[Trajectory], lay: _Layout, s: ExportSettings) -> None:
    for v, key in lay.views.items():
        frames = (t.images.decode(v, i, None) for t in trajs for i in range(t.num_steps))
        encode_video(out / VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=0), frames, s.fps, s.vcodec)
