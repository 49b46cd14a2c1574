"""Reading one trajectory directory (the on-disk format of the spec) with validation.

```
<trajectory_dir>/
  meta.json            optional: {"instruction": str, "sensor_rate_hz": float, ...}
  actions.npz          timestamps (M,) float64 s; actions (M, A) float32; optional states (M, S) float32
  images/<view>/       000000.jpg, 000001.jpg, ... (png too), one per action step
  sensor*.npz          optional: timestamps (N,) float64 s; forces (N,) or (N, F); alines (N, 1025)
```

Everything checkable without loading the big sensor arrays is checked in :meth:`TrajectoryReader.read`
(keys, shapes and channel count from the NPY headers, timestamps, coverage, images); the stream
itself is loaded lazily (:meth:`Trajectory.load_sensor_stream`), where NaN/inf are checked, so a
warm on-disk cache never has to read it. A user's own layout plugs in with any class satisfying
:class:`TrajectoryReaderProtocol` (``data.reader._target_=my_pkg.MyReader``).
"""

from __future__ import annotations

import functools
import json
import os
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from vla_sensor.data.errors import DataFormatError, suggest
from vla_sensor.data.images import ImageFiles, ImageSource
from vla_sensor.data.npz_io import iter_npz_rows
from vla_sensor.data.timebase import check_time_base
from vla_sensor.data.windows import SENSOR_CHANNELS

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# The prompt of a trajectory whose meta.json names no instruction (and of data.instruction=null)
DEFAULT_INSTRUCTION = "Insert the needle into the target."


@dataclass
class Trajectory:
    """One recorded insertion: actions, image paths per view, and (optionally) the sensor stream."""

    path: Path
    action_timestamps: np.ndarray  # (M,) float64 seconds
    actions: np.ndarray  # (M, A) float32, robot units
    images: ImageSource  # one image per step and view (files, or a container's frames)
    sensor_timestamps: np.ndarray | None = None  # (N,) float64 seconds
    sensor_stream: np.ndarray | None = None  # (N, C) float32, loaded lazily
    instruction: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    sensor_files: tuple[Path, ...] = ()  # sources, for cache keys (empty: hash the stream)
    # JSON-able, for cache keys: what in sensor_files is this trajectory's (e.g. a row range of a file
    # that holds many episodes); None when the files hold this trajectory alone
    sensor_fingerprint: Any = None
    # sensor_loader(validate) returns the (N, C) float32 stream; validate=True checks NaN/inf
    sensor_loader: Callable[[bool], np.ndarray] | None = None
    num_channels: int | None = None
    # sensor_chunks(rows, validate) yields the stream in pieces of at most ``rows`` rows (cache builds
    # in bounded memory); None: pieces are cut from the whole stream
    sensor_chunks: Callable[[int, bool], Iterator[np.ndarray]] | None = None
    # the robot's proprioceptive state at each action step (e.g. the tip position), robot units
    states: np.ndarray | None = None  # (M, S) float32, or None when the recording has none

    @property
    def image_paths(self) -> dict[str, list[Path]]:
        """view -> the M image files (native format only)."""
        if not isinstance(self.images, ImageFiles):
            raise AttributeError(f"{self.path}: images come from {type(self.images).__name__}, not files")
        return self.images.paths

    @property
    def has_sensor(self) -> bool:
        return self.sensor_timestamps is not None

    @property
    def state_dim(self) -> int:
        """S of ``states`` (M, S); 0 when the trajectory has no proprioceptive state."""
        return 0 if self.states is None else int(self.states.shape[1])

    @property
    def num_steps(self) -> int:
        return int(self.action_timestamps.shape[0])

    def load_sensor_stream(self, validate: bool = True) -> np.ndarray:
        """The (N, C) float32 stream, read from disk on every call unless the reader kept it."""
        if not self.has_sensor:
            raise DataFormatError(f"{self.path}: trajectory has no sensor stream")
        if self.sensor_stream is not None:
            return self.sensor_stream
        if self.sensor_loader is None:
            raise DataFormatError(f"{self.path}: reader gave sensor timestamps but no stream or loader")
        return self.sensor_loader(validate)

    def iter_sensor_stream(self, rows: int, validate: bool = True) -> Iterator[np.ndarray]:
        """The (N, C) float32 stream in consecutive pieces of at most ``rows`` rows."""
        if self.sensor_chunks is not None and self.sensor_stream is None:
            yield from self.sensor_chunks(rows, validate)
            return
        stream = self.load_sensor_stream(validate)
        for i in range(0, stream.shape[0], rows):
            yield stream[i : i + rows]

    def source_name(self) -> str:
        return ", ".join(str(p) for p in self.sensor_files) or str(self.path)


@runtime_checkable
class TrajectoryReaderProtocol(Protocol):
    """What a custom reader must provide (plugged in with ``data.reader._target_``).

    ``read`` returns a :class:`Trajectory` with ``actions``/``action_timestamps``, an
    :class:`~vla_sensor.data.images.ImageSource` with one image per step for each requested view
    (``views=None``: all), and either no sensor (``sensor_timestamps``
    None) or ``sensor_timestamps`` plus ``sensor_stream`` or a ``sensor_loader``, and optionally
    ``states`` (M, S) float32, the robot's state at each action step. Raise
    :class:`DataFormatError` for bad input. The constructor receives the ``data.reader`` fields as
    keyword arguments (accept ``**kwargs`` for the ones you ignore).
    """

    expected_channels: int | None

    def read(self, path: str | os.PathLike[str], views: Sequence[str] | None = None) -> Trajectory: ...


def discover_trajectories(reader: Any, root: str | os.PathLike[str]) -> list[Path]:
    """The trajectories under ``data.root``: ``reader.discover(root)`` where the reader has one (a
    container format lists its episodes), else the sub-directories holding ``actions.npz``."""
    discover = getattr(reader, "discover", None)
    if callable(discover):
        return list(discover(root))
    return discover_trajectory_dirs(root, getattr(reader, "actions_file", "actions.npz"))


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; a DataFormatError naming the file when it is unreadable or not an object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataFormatError(f"{path}: invalid JSON ({exc}); expected an object") from exc
    if not isinstance(value, dict):
        raise DataFormatError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def check_directory(path: str | os.PathLike[str], what: str = "trajectory directory") -> Path:
    """Return ``path`` as a Path, or raise naming close sibling names when it does not exist."""
    p = Path(path)
    if p.is_dir():
        return p
    parent = p.parent if str(p.parent) else Path(".")
    siblings = [c.name for c in parent.iterdir() if c.name != p.name] if parent.is_dir() else []
    if p.is_symlink() and not p.exists():
        raise DataFormatError(f"{what} {p} is a broken symlink or a symlink loop; expected a directory")
    state = "is not a directory" if p.exists() else "does not exist"
    raise DataFormatError(f"{what} {p} {state}{suggest(p.name, siblings)}")


def _npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shapes and dtypes of every array in an NPZ, read from the NPY headers only (no data)."""
    out: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with zf.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                    else:
                        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                    out[info.filename[:-4]] = (tuple(shape), np.dtype(dtype))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise DataFormatError(f"{path}: corrupt or truncated NPZ file ({exc}); expected a readable .npz") from exc
    return out


def _load_key(path: Path, key: str, npz: Any) -> np.ndarray:
    try:
        return np.asarray(npz[key])
    except KeyError as exc:
        raise DataFormatError(
            f"{path}: missing key {key!r}; expected keys include {key!r} (found: {sorted(npz.files)})"
            f"{suggest(key, npz.files)}"
        ) from exc
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise DataFormatError(f"{path}: corrupt or truncated data for key {key!r} ({exc})") from exc


def _open_npz(path: Path) -> Any:
    try:
        return np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise DataFormatError(f"{path}: corrupt or truncated NPZ file ({exc}); expected a readable .npz") from exc


def check_numeric(dtype: np.dtype, where: str) -> None:
    """Numbers (bool, int, float) only: text or object arrays would fail deep inside numpy later."""
    if np.dtype(dtype).kind not in "biuf":
        raise DataFormatError(f"{where}: expected numbers (int or float), got dtype {np.dtype(dtype)}")


def check_timestamps(ts: np.ndarray, where: str) -> None:
    """1-D, finite, strictly increasing — or a DataFormatError naming the first bad index."""
    if ts.ndim != 1:
        raise DataFormatError(f"{where}: expected a 1-D array of seconds, got shape {ts.shape}")
    bad = np.flatnonzero(~np.isfinite(ts))
    if bad.size:
        raise DataFormatError(f"{where}: NaN/inf timestamp at index {bad[0]}; expected finite seconds")
    steps = np.diff(ts)
    bad = np.flatnonzero(steps <= 0)
    if bad.size:
        i = int(bad[0])
        kind = "duplicate" if steps[i] == 0 else "non-monotonic"
        raise DataFormatError(
            f"{where}: {kind} timestamps at index {i + 1} ({ts[i]!r} then {ts[i + 1]!r}); "
            "expected strictly increasing seconds"
        )


def check_finite(a: np.ndarray, where: str, first_row: int = 0) -> None:
    """``first_row``: the index of ``a``'s first row in the whole array (a piece of a longer stream)."""
    if not np.isfinite(a).all():
        row = first_row + int(np.flatnonzero(~np.isfinite(a).reshape(a.shape[0], -1).all(axis=1))[0])
        raise DataFormatError(f"{where}: NaN/inf value at row {row}; expected finite numbers")


def check_states(states: np.ndarray, steps: int, where: str) -> np.ndarray:
    """A proprioceptive state array as (M, S) float32: numeric, one finite row per action step."""
    check_numeric(states.dtype, where)
    if states.ndim == 1:
        states = states[:, None]
    if states.ndim != 2 or states.shape[0] != steps or states.shape[1] < 1:
        raise DataFormatError(
            f"{where}: expected shape ({steps}, S) (one state per action step, {steps} steps), got {states.shape}"
        )
    states = states.astype(np.float32)
    check_finite(states, where)
    return states


def discover_trajectory_dirs(root: str | os.PathLike[str], actions_file: str = "actions.npz") -> list[Path]:
    """Sub-directories of ``root`` holding ``actions_file`` (or ``root`` itself), sorted by name."""
    root = check_directory(root, "data.root")
    if (root / actions_file).is_file():
        return [root]
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and (p / actions_file).is_file())
    if not dirs:
        raise DataFormatError(
            f"data.root {root}: no trajectory directories (sub-directories holding {actions_file}); "
            "expected <root>/<trajectory>/actions.npz"
        )
    return dirs


class TrajectoryReader:
    """Reads and validates the spec's trajectory directory; every name in it is configurable."""

    def __init__(
        self,
        actions_file: str = "actions.npz",
        action_timestamps_key: str = "timestamps",
        actions_key: str = "actions",
        sensor_glob: str = "sensor*.npz",
        sensor_timestamps_key: str = "timestamps",
        channel_keys: Sequence[str] = ("forces", "alines"),
        expected_channels: int | None = SENSOR_CHANNELS,
        images_dir: str = "images",
        meta_file: str = "meta.json",
        coverage_tolerance_s: float | None = None,
        states_key: str | None = "states",
        **_: Any,
    ) -> None:
        self.actions_file = actions_file
        self.action_timestamps_key = action_timestamps_key
        self.actions_key = actions_key
        self.sensor_glob = sensor_glob
        self.sensor_timestamps_key = sensor_timestamps_key
        self.channel_keys = list(channel_keys)
        self.expected_channels = expected_channels
        self.images_dir = images_dir
        self.meta_file = meta_file
        self.coverage_tolerance_s = coverage_tolerance_s
        self.states_key = states_key

    def settings(self) -> dict[str, Any]:
        """Everything that changes how a stream is decoded (part of on-disk cache keys)."""
        return {
            "sensor_timestamps_key": self.sensor_timestamps_key,
            "channel_keys": self.channel_keys,
        }

    # ------------------------------------------------------------------ public
    def discover(self, root: str | os.PathLike[str]) -> list[Path]:
        return discover_trajectory_dirs(root, self.actions_file)

    def read(self, path: str | os.PathLike[str], views: Sequence[str] | None = None) -> Trajectory:
        root = check_directory(path)
        meta = self._read_meta(root)
        action_ts, actions = self._read_actions(root)
        image_paths = self._image_paths(root, views, len(action_ts))
        files = sorted(root.glob(self.sensor_glob))
        traj = Trajectory(
            path=root,
            action_timestamps=action_ts,
            actions=actions,
            images=ImageFiles(image_paths),
            instruction=meta.get("instruction"),
            meta=meta,
            states=self._read_states(root, len(action_ts)),
        )
        if files:
            ts, channels = self._inspect_sensor(files)
            check_time_base(ts, action_ts, sensor_where=f"{files[0]}:{self.sensor_timestamps_key}",
                            action_where=f"{root / self.actions_file}:{self.action_timestamps_key}",
                            meta_where=str(root / self.meta_file), sensor_rate_hz=meta.get("sensor_rate_hz"),
                            action_rate_hz=meta.get("action_rate_hz"))
            self._check_coverage(files, ts, action_ts, meta)
            traj.sensor_timestamps = ts
            traj.sensor_files = tuple(files)
            traj.num_channels = channels
            traj.sensor_loader = functools.partial(self._load_stream, tuple(files), len(ts), channels)
            traj.sensor_chunks = functools.partial(self._iter_stream, tuple(files), len(ts), channels)
        return traj

    # ----------------------------------------------------------------- pieces
    def _read_meta(self, root: Path) -> dict[str, Any]:
        path = root / self.meta_file
        if not path.exists():
            return {}
        meta = read_json_object(path)
        if meta.get("instruction") is not None and not isinstance(meta["instruction"], str):
            raise DataFormatError(
                f"{path}:instruction: expected a string, got {type(meta['instruction']).__name__}"
            )
        return meta

    def _read_actions(self, root: Path) -> tuple[np.ndarray, np.ndarray]:
        path = root / self.actions_file
        if not path.is_file():
            present = [p.name for p in root.iterdir()]
            raise DataFormatError(
                f"{root}: no actions file {self.actions_file!r}; expected a trajectory directory holding "
                f"{self.actions_file} (found: {sorted(present)[:10]}){suggest(self.actions_file, present)}"
            )
        with _open_npz(path) as npz:
            ts = _load_key(path, self.action_timestamps_key, npz)
            actions = _load_key(path, self.actions_key, npz)
        check_numeric(ts.dtype, f"{path}:{self.action_timestamps_key}")
        check_numeric(actions.dtype, f"{path}:{self.actions_key}")
        ts = ts.astype(np.float64)
        check_timestamps(ts, f"{path}:{self.action_timestamps_key}")
        if actions.ndim == 1:
            actions = actions[:, None]
        if actions.ndim != 2 or actions.shape[0] != ts.shape[0]:
            raise DataFormatError(
                f"{path}:{self.actions_key}: expected shape ({ts.shape[0]}, A) matching "
                f"{ts.shape[0]} timestamps, got {actions.shape}"
            )
        if ts.shape[0] == 0:
            raise DataFormatError(f"{path}: no action steps; expected at least one")
        actions = actions.astype(np.float32)
        check_finite(actions, f"{path}:{self.actions_key}")
        return ts, actions

    def _read_states(self, root: Path, steps: int) -> np.ndarray | None:
        """The optional ``states_key`` array of the actions file as (M, S) float32, or None without it."""
        path = root / self.actions_file
        if self.states_key is None or self.states_key not in _npz_headers(path):
            return None
        with _open_npz(path) as npz:
            states = _load_key(path, self.states_key, npz)
        return check_states(states, steps, f"{path}:{self.states_key}")

    def _image_paths(self, root: Path, views: Sequence[str] | None, steps: int) -> dict[str, list[Path]]:
        img_root = root / self.images_dir
        available = sorted(p.name for p in img_root.iterdir() if p.is_dir()) if img_root.is_dir() else []
        if views is None:
            views = available
        out: dict[str, list[Path]] = {}
        for view in views:
            vdir = img_root / view
            if view not in available and vdir.is_symlink() and not vdir.exists():
                raise DataFormatError(
                    f"{root}: view {view!r}: {self.images_dir}/{view} is a broken symlink or a symlink loop; "
                    "expected a directory of images"
                )
            if view not in available:
                raise DataFormatError(
                    f"{root}: unknown view {view!r}; available views under {self.images_dir}/: "
                    f"{available or 'none'}{suggest(view, available)}"
                )
            by_stem: dict[str, Path] = {}
            for entry in os.scandir(vdir):
                stem, ext = os.path.splitext(entry.name)
                if ext.lower() in IMAGE_EXTENSIONS:
                    by_stem[stem] = Path(entry.path)
            paths = []
            for t in range(steps):
                p = by_stem.get(f"{t:06d}")
                if p is None:
                    raise DataFormatError(
                        f"{vdir}: missing image for step {t}; expected {t:06d}.jpg or {t:06d}.png "
                        f"(one image per action step, {steps} steps)"
                    )
                paths.append(p)
            out[view] = paths
        return out

    def _inspect_sensor(self, files: list[Path]) -> tuple[np.ndarray, int]:
        """Timestamps (loaded) and channel count (from headers) of the sensor file(s)."""
        all_ts = []
        channels: int | None = None
        for path in files:
            headers = _npz_headers(path)
            keys = [self.sensor_timestamps_key, *self.channel_keys]
            for key in keys:
                if key not in headers:
                    raise DataFormatError(
                        f"{path}: missing key {key!r}; expected keys {keys} (found: {sorted(headers)})"
                        f"{suggest(key, headers)}"
                    )
            for key in keys:
                check_numeric(headers[key][1], f"{path}:{key}")
            ts_shape = headers[self.sensor_timestamps_key][0]
            if len(ts_shape) != 1:
                raise DataFormatError(
                    f"{path}:{self.sensor_timestamps_key}: expected a 1-D array of seconds, got {ts_shape}"
                )
            n = ts_shape[0]
            c = 0
            for key in self.channel_keys:
                shape = headers[key][0]
                if len(shape) not in (1, 2) or shape[0] != n:
                    raise DataFormatError(
                        f"{path}:{key}: expected shape ({n},) or ({n}, K) matching "
                        f"{self.sensor_timestamps_key}, got {shape}"
                    )
                c += 1 if len(shape) == 1 else shape[1]
            if self.expected_channels is not None and c != self.expected_channels:
                detail = " + ".join(f"{k}{headers[k][0][1:] or '(1)'}" for k in self.channel_keys)
                raise DataFormatError(
                    f"{path}: wrong channel count {c} ({detail}); expected {self.expected_channels} "
                    f"channels from {self.channel_keys}"
                )
            if channels is not None and c != channels:
                raise DataFormatError(f"{path}: {c} channels, but {files[0]} has {channels}")
            channels = c
            with _open_npz(path) as npz:
                all_ts.append(_load_key(path, self.sensor_timestamps_key, npz).astype(np.float64))
        ts = np.concatenate(all_ts) if len(all_ts) > 1 else all_ts[0]
        where = f"{files[0]}:{self.sensor_timestamps_key}" if len(files) == 1 else f"{files}"
        if ts.shape[0] == 0:
            raise DataFormatError(f"{where}: empty sensor stream; expected at least one sample")
        check_timestamps(ts, where)
        return ts, int(channels or 0)

    def _check_coverage(self, files: list[Path], ts: np.ndarray, action_ts: np.ndarray, meta: dict) -> None:
        tol = self.coverage_tolerance_s
        if tol is None:  # two sample periods
            tol = 2.0 * float(np.median(np.diff(ts))) if ts.size > 1 else 0.0
        if ts[0] > action_ts[0] or ts[-1] < action_ts[-1] - tol:
            raise DataFormatError(
                f"{files[0]}: sensor stream covers {ts[0]:.6f}..{ts[-1]:.6f} s but the actions span "
                f"{action_ts[0]:.6f}..{action_ts[-1]:.6f} s; expected the stream to start at or before the "
                f"first action and to last until the last action (tolerance {tol:.4f} s)"
            )

    def _iter_stream(self, files: tuple[Path, ...], n: int, channels: int, rows: int,
                     validate: bool = True) -> Iterator[np.ndarray]:
        """The stream of :meth:`_load_stream` in pieces of at most ``rows`` rows (memory: one piece)."""
        done = 0
        for path in files:
            try:
                parts = [iter_npz_rows(path, key, rows) for key in self.channel_keys]
                for pieces in zip(*parts):
                    out = np.concatenate([p[:, None] if p.ndim == 1 else p for p in pieces], axis=1, dtype=np.float32)
                    if validate:
                        check_finite(out, f"{path}:{'+'.join(self.channel_keys)}", first_row=done)
                    done += out.shape[0]
                    yield out
            except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as exc:
                if isinstance(exc, DataFormatError):
                    raise
                raise DataFormatError(f"{path}: corrupt or truncated sensor data ({exc})") from exc
        if done != n:
            raise DataFormatError(f"{files[0]}: {done} sensor rows but {n} timestamps")

    def _load_stream(self, files: tuple[Path, ...], n: int, channels: int, validate: bool = True) -> np.ndarray:
        """Read the full (N, C) float32 stream; checks shapes and NaN/inf."""
        out = np.empty((n, channels), dtype=np.float32)
        row = 0
        for path in files:
            col = 0
            with _open_npz(path) as npz:
                rows = None
                for key in self.channel_keys:
                    a = _load_key(path, key, npz)
                    a = a[:, None] if a.ndim == 1 else a
                    rows = a.shape[0]
                    out[row : row + rows, col : col + a.shape[1]] = a
                    col += a.shape[1]
            if validate:
                check_finite(out[row : row + (rows or 0)], f"{path}:{'+'.join(self.channel_keys)}")
            row += rows or 0
        if row != n:
            raise DataFormatError(f"{files[0]}: {row} sensor rows but {n} timestamps")
        return out
