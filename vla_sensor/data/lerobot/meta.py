"""A LeRobot v3.0 dataset's metadata: ``meta/info.json``, ``meta/tasks.parquet`` and the episodes table.

Loaded once per dataset root (small: no stats columns are read) and validated here, so every later
error can name the file and feature at fault.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vla_sensor.data.errors import DataFormatError, suggest
from vla_sensor.data.format import read_json_object
from vla_sensor.data.lerobot.parquet import read_table

CODEBASE_VERSION = "v3.0"
INFO_PATH = "meta/info.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
STATS_PATH = "meta/stats.json"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODE_NAME = "episode_{index:06d}"
EPISODE_RE = re.compile(r"^episode_(\d+)$")
IMAGE_DTYPES = ("image", "video")
# per-frame bookkeeping columns every LeRobot dataset has
DEFAULT_FEATURES = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}


@dataclass(frozen=True)
class Episode:
    """One episode's row of the episodes table (only what reading needs)."""

    index: int
    length: int
    data_chunk: int
    data_file: int
    from_index: int  # global frame index of its first row (the ``index`` column)
    to_index: int  # exclusive
    tasks: tuple[str, ...]
    videos: dict[str, tuple[int, int, float, float]] = field(default_factory=dict)  # key -> chunk, file, from, to


def episode_path(root: str | os.PathLike[str], index: int) -> Path:
    """The virtual trajectory path of episode ``index`` (names, cache keys, error messages)."""
    return Path(root) / EPISODE_NAME.format(index=index)


def parse_episode_path(path: str | os.PathLike[str]) -> tuple[Path, int]:
    """(dataset root, episode index) of a virtual path ``<root>/episode_000012``."""
    p = Path(path)
    m = EPISODE_RE.match(p.name)
    if m is None:
        raise DataFormatError(
            f"{p}: not a LeRobot episode path; expected <dataset root>/episode_NNNNNN (from the reader's discover())"
        )
    return p.parent, int(m.group(1))


class DatasetMeta:
    """info.json, tasks and episodes of one dataset root."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.info = self._load_info()
        self.fps = self._fps()
        self.features: dict[str, dict[str, Any]] = self.info["features"]
        self.tasks = self._load_tasks()
        self.episodes = self._load_episodes()

    # ----------------------------------------------------------------- info
    def _load_info(self) -> dict[str, Any]:
        path = self.root / INFO_PATH
        if not self.root.is_dir():
            raise DataFormatError(f"LeRobot dataset root {self.root} does not exist or is not a directory")
        if not path.is_file():
            raise DataFormatError(
                f"{path}: missing; expected a LeRobot v3.0 dataset root holding meta/info.json "
                f"(found: {sorted(p.name for p in self.root.iterdir())[:10]})"
            )
        info = read_json_object(path)
        version = info.get("codebase_version")
        if version != CODEBASE_VERSION:
            hint = (
                " Convert it with lerobot's own converter first: `python -m "
                "lerobot.datasets.v30.convert_dataset_v21_to_v30 --repo-id=<id>` (lerobot >= 0.4)."
                if isinstance(version, str) and version.startswith("v2")
                else ""
            )
            raise DataFormatError(
                f"{path}:codebase_version: {version!r} is not supported; expected {CODEBASE_VERSION!r}.{hint}"
            )
        for key in ("fps", "features", "data_path"):
            if key not in info:
                raise DataFormatError(f"{path}: missing key {key!r}; expected a LeRobot v3.0 info.json")
        if not isinstance(info["features"], dict):
            raise DataFormatError(f"{path}:features: expected an object of feature specs")
        for name, ft in info["features"].items():
            if not isinstance(ft, dict) or "dtype" not in ft or "shape" not in ft:
                raise DataFormatError(f"{path}:features.{name}: expected an object with 'dtype' and 'shape'")
        return info

    def _fps(self) -> float:
        fps = self.info["fps"]
        if not isinstance(fps, int | float) or not fps > 0:
            raise DataFormatError(f"{self.root / INFO_PATH}:fps: expected a positive number, got {fps!r}")
        return float(fps)

    def feature(self, key: str, what: str) -> dict[str, Any]:
        """The spec of feature ``key``, or an error listing the available ones."""
        ft = self.features.get(key)
        if ft is None:
            available = sorted(self.features)
            raise DataFormatError(
                f"{self.root / INFO_PATH}: {what} feature {key!r} is absent; available features: {available}"
                f"{suggest(key, available)}"
            )
        return ft

    def image_features(self) -> list[str]:
        return [k for k, ft in self.features.items() if ft["dtype"] in IMAGE_DTYPES]

    def data_file(self, ep: Episode) -> Path:
        template = self.info.get("data_path") or DATA_PATH
        return self.root / template.format(chunk_index=ep.data_chunk, file_index=ep.data_file)

    def video_file(self, ep: Episode, key: str) -> Path:
        template = self.info.get("video_path") or VIDEO_PATH
        chunk, file, _, _ = self.episode_video(ep, key)
        return self.root / template.format(video_key=key, chunk_index=chunk, file_index=file)

    def episode_video(self, ep: Episode, key: str) -> tuple[int, int, float, float]:
        if key not in ep.videos:
            raise DataFormatError(
                f"{self.episodes_files[0]}: episode {ep.index} has no 'videos/{key}/...' columns; "
                f"expected the video chunk, file and from/to timestamps of video feature {key!r}"
            )
        return ep.videos[key]

    # ---------------------------------------------------------------- tasks
    def _load_tasks(self) -> dict[int, str]:
        path = self.root / TASKS_PATH
        if not path.is_file():
            raise DataFormatError(f"{path}: missing; expected the task strings of the dataset")
        table = read_table(path)
        if "task_index" not in table.column_names:
            raise DataFormatError(f"{path}: missing column 'task_index' (found: {table.column_names})")
        text = "task" if "task" in table.column_names else next(
            (n for n in table.column_names if n != "task_index"), None
        )
        if text is None:
            raise DataFormatError(f"{path}: no task string column; expected 'task' or the pandas index")
        return dict(zip(table.column("task_index").to_pylist(), table.column(text).to_pylist(), strict=True))

    # ------------------------------------------------------------- episodes
    def _load_episodes(self) -> dict[int, Episode]:
        files = sorted((self.root / EPISODES_DIR).glob("chunk-*/file-*.parquet"))
        if not files:
            raise DataFormatError(
                f"{self.root / EPISODES_DIR}: no episodes files; expected meta/episodes/chunk-XXX/file-XXX.parquet"
            )
        self.episodes_files = files
        out: dict[int, Episode] = {}
        for path in files:
            for ep in self._episodes_of(path):
                out[ep.index] = ep
        return dict(sorted(out.items()))

    def _episodes_of(self, path: Path) -> list[Episode]:
        import pyarrow.parquet as pq

        try:
            names = pq.read_schema(path).names
        except (OSError, ValueError) as exc:  # pyarrow.ArrowInvalid is a ValueError
            raise DataFormatError(f"{path}: corrupt or truncated parquet file ({exc})") from exc
        required = ["episode_index", "length", "data/chunk_index", "data/file_index",
                    "dataset_from_index", "dataset_to_index"]
        missing = [c for c in required if c not in names]
        if missing:
            raise DataFormatError(f"{path}: missing columns {missing}; expected a LeRobot v3.0 episodes table")
        video_cols = [n for n in names if n.startswith("videos/")]
        extra = ["tasks"] if "tasks" in names else []
        cols = read_table(path, required + extra + video_cols).to_pydict()
        eps = []
        for i in range(len(cols["episode_index"])):
            videos: dict[str, tuple[int, int, float, float]] = {}
            for key in {n[len("videos/"):].rsplit("/", 1)[0] for n in video_cols}:
                pre = f"videos/{key}/"
                videos[key] = (int(cols[pre + "chunk_index"][i]), int(cols[pre + "file_index"][i]),
                               float(cols[pre + "from_timestamp"][i]), float(cols[pre + "to_timestamp"][i]))
            eps.append(Episode(
                index=int(cols["episode_index"][i]), length=int(cols["length"][i]),
                data_chunk=int(cols["data/chunk_index"][i]), data_file=int(cols["data/file_index"][i]),
                from_index=int(cols["dataset_from_index"][i]), to_index=int(cols["dataset_to_index"][i]),
                tasks=tuple(cols["tasks"][i] or ()) if extra else (), videos=videos,
            ))
        return eps

    def episode(self, index: int) -> Episode:
        ep = self.episodes.get(index)
        if ep is None:
            known = list(self.episodes)
            span = f"{known[0]}..{known[-1]}" if known else "none"
            raise DataFormatError(
                f"{self.episodes_files[0].parent.parent}: episode index {index} out of bounds; "
                f"the dataset has {len(known)} episodes ({span})"
            )
        if ep.length < 1 or ep.to_index - ep.from_index != ep.length:
            raise DataFormatError(
                f"{self.episodes_files[0]}: episode {index}: row range {ep.from_index}..{ep.to_index} does not "
                f"match its length {ep.length}; expected dataset_to_index - dataset_from_index == length >= 1"
            )
        return ep

    def task(self, task_index: int, where: str) -> str:
        if task_index not in self.tasks:
            raise DataFormatError(
                f"{where}:task_index: {task_index} is not in {self.root / TASKS_PATH} "
                f"(known: {sorted(self.tasks)[:10]})"
            )
        return str(self.tasks[task_index])


def feature_shape(ft: dict[str, Any]) -> tuple[int, ...]:
    return tuple(int(s) for s in np.atleast_1d(ft["shape"]))
