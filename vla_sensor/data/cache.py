"""Sensor cache strategies: how a sample's sensor window is produced.

- ``none``: the no-cache path (``data.cache=false``) — every sample re-reads its trajectory's NPZ
  and cuts the window.
- ``windows``: the per-window cache — every window pre-extracted at init into its own array; memory
  grows with samples × window. Kept as the reference the benchmark compares against.
- ``stream``: each trajectory's stream read once into one contiguous array; every sample's
  ``(start, end)`` rows precomputed with ``searchsorted``; a sample is a slice (a view, no copy, for
  float32). Memory ≈ the raw stream.
- ``mmap``: like ``stream``, but the array lives in an on-disk ``.npy`` cache that every process
  memory-maps, so DataLoader workers and DDP ranks on a node share one page-cache copy. Built once,
  atomically, by one process holding an ``fcntl.flock`` while the others wait; keyed by the source
  files (path, size, mtime, head/tail content hash) and the cache settings; a JSON sidecar written
  last (header, size, checksums) marks it complete, so stale, truncated or corrupt caches are rebuilt
  and never read as data.

Every strategy returns identical windows (bit-exact for float32 storage). Sample windows of the
``stream``/``mmap``/``windows`` strategies are views of the cache: do not modify them in place.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from vla_sensor.data.disk_cache import build_or_reuse, hash_ends, key_of, open_cow
from vla_sensor.data.errors import DataFormatError
from vla_sensor.data.format import Trajectory
from vla_sensor.data.storage import STORAGE_NP, EncodedStream, StorageDtype, decode_slice, encode_stream
from vla_sensor.data.windows import SENSOR_CHANNELS, WindowSpec, window_bounds

CACHE_FORMAT_VERSION = 1


class CacheStrategy(str, Enum):
    """Where sensor windows come from at ``__getitem__`` time."""

    none = "none"
    windows = "windows"
    stream = "stream"
    mmap = "mmap"


DEFAULT_STRATEGY = CacheStrategy.mmap


def default_cache_dir() -> Path:
    """``$VLA_SENSOR_CACHE_DIR``, else ``$XDG_CACHE_HOME/vla_sensor``, else ``~/.cache/vla_sensor``."""
    env = os.environ.get("VLA_SENSOR_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vla_sensor"


class SensorCache:
    """Base: per-sample window bounds over each trajectory's stream, plus strategy-specific rows."""

    strategy = CacheStrategy.none
    # Whether any process can copy a window straight from the cache (stream: inherited at fork;
    # mmap: the shared page cache), so DataLoader workers may send window references instead.
    shared_across_processes = False

    def __init__(
        self,
        trajectories: Sequence[Trajectory],
        spec: WindowSpec,
        dtype: StorageDtype | str = StorageDtype.float32,
        channels: int | None = None,
        progress: bool = True,
        **_: Any,
    ) -> None:
        self.spec = spec
        self.dtype = StorageDtype(dtype)
        self.progress = progress
        self.trajectories = list(trajectories)
        found = {t.num_channels for t in self.trajectories if t.has_sensor and t.num_channels}
        if len(found) > 1:
            raise DataFormatError(f"sensor channel counts differ between trajectories: {sorted(found)}")
        self.channels = int(next(iter(found)) if found else (channels or SENSOR_CHANNELS))
        traj_idx, starts, ends = [], [], []
        for k, traj in enumerate(self.trajectories):
            m = traj.num_steps
            traj_idx.append(np.full(m, k, np.int32))
            if traj.has_sensor:
                s, e = window_bounds(
                    traj.sensor_timestamps,  # type: ignore[arg-type]
                    traj.action_timestamps,
                    spec,
                    source=traj.source_name(),
                )
            else:
                s = e = np.zeros(m, np.int64)
            starts.append(s)
            ends.append(e)
        self.sample_traj = np.concatenate(traj_idx) if traj_idx else np.zeros(0, np.int32)
        self.starts = np.concatenate(starts) if starts else np.zeros(0, np.int64)
        self.ends = np.concatenate(ends) if ends else np.zeros(0, np.int64)
        self.lengths = (self.ends - self.starts).astype(np.int64)
        self.has_sensor = np.array([t.has_sensor for t in self.trajectories], bool)
        self.raw_nbytes = int(
            sum(t.sensor_timestamps.shape[0] * self.channels * 4 for t in self.trajectories if t.has_sensor)  # type: ignore[union-attr]
        )

    # -------------------------------------------------------------- strategy API
    @property
    def nbytes(self) -> int:
        """Bytes held by the cache (0 for ``none``)."""
        return 0

    def storage(self) -> dict[str, list[Any]] | None:
        """Where the cached bytes live: ``{"arrays": [...]}`` in memory, ``{"files": [...]}`` on disk, or
        None (nothing cached); for memory accounting, e.g. whether workers share the pages."""
        return None

    def _rows(self, k: int, start: int, end: int, out: np.ndarray | None) -> np.ndarray:
        """Rows ``start:end`` of trajectory ``k``'s stream as float32 (into ``out`` when given)."""
        stream = self.trajectories[k].load_sensor_stream(validate=False)
        return decode_slice(stream[start:end], StorageDtype.float32, out=out)

    # ----------------------------------------------------------------- samples
    def __len__(self) -> int:
        return int(self.sample_traj.shape[0])

    def window(self, i: int) -> tuple[np.ndarray, int]:
        """Sample ``i``'s window as float32 ``(T, C)`` (valid rows last) and its valid length."""
        k = int(self.sample_traj[i])
        fixed = self.spec.fixed_length
        if not self.has_sensor[k]:
            return np.zeros((fixed or 1, self.channels), np.float32), 0
        start, end = int(self.starts[i]), int(self.ends[i])
        length = end - start
        if fixed is not None and length < fixed:
            out = np.zeros((fixed, self.channels), np.float32)
            self._rows(k, start, end, out[fixed - length :])
            return out, length
        return self._rows(k, start, end, None), length

    def _encoded(self, k: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None] | None:
        """Trajectory ``k``'s stored stream and int8 scale/offset (None: no stored copy to slice)."""
        return None

    def window_stored(self, i: int) -> tuple[np.ndarray, int, np.ndarray | None, np.ndarray | None]:
        """Sample ``i``'s window in the storage dtype, its valid length and the int8 scale/offset (C,).

        For decoding where the model runs (:func:`vla_sensor.data.sensor_decode.decode_sensor_batch`):
        float16/int8 windows cross the DataLoader's worker IPC at half / a quarter of the float32 bytes.
        float32 storage (and the no-cache path) returns :meth:`window` with no scale/offset. Padding rows
        are stored zeros; for int8 they decode to the offset, so the decoder zeroes them by length.
        """
        k = int(self.sample_traj[i])
        if self.dtype is StorageDtype.float32:
            w, n = self.window(i)
            return w, n, None, None
        fixed = self.spec.fixed_length
        unit = self.dtype is StorageDtype.int8
        if not self.has_sensor[k]:
            ones = np.ones(self.channels, np.float32) if unit else None
            zeros = np.zeros(self.channels, np.float32) if unit else None
            return np.zeros((fixed or 1, self.channels), STORAGE_NP[self.dtype]), 0, ones, zeros
        enc = self._encoded(k)
        if enc is None:
            w, n = self.window(i)
            return w, n, None, None
        data, scale, offset = enc
        start, end = int(self.starts[i]), int(self.ends[i])
        length = end - start
        if fixed is not None and length < fixed:
            out = np.zeros((fixed, self.channels), data.dtype)
            out[fixed - length :] = data[start:end]
            return out, length, scale, offset
        return data[start:end], length, scale, offset

    # ------------------------------------------------- window references (main-process gather)
    def window_ref(self, i: int) -> np.ndarray:
        """Sample ``i``'s window as (trajectory, start row, end row, window rows) int64: 32 bytes that
        stand for the window in a DataLoader worker's batch; :meth:`gather` turns refs into windows."""
        k = int(self.sample_traj[i])
        start, end = int(self.starts[i]), int(self.ends[i])
        fixed = self.spec.fixed_length
        if not self.has_sensor[k]:
            return np.array([k, 0, 0, fixed or 1], np.int64)
        return np.array([k, start, end, max(fixed or 0, end - start)], np.int64)

    def gather(
        self, refs: np.ndarray, stored: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """The (B, T_max, C) windows of ``refs`` (B, 4), left-padded, in one new buffer.

        Each window is copied once into its last rows (float32: decoded on the way) and only padding
        rows are zeroed. ``stored`` keeps float16/int8 as stored and returns the int8 scale/offset
        (B, C) for :func:`~vla_sensor.data.sensor_decode.decode_sensor_batch`; else (data, None, None).
        """
        stored = stored and self.dtype is not StorageDtype.float32
        b_size, t_max = refs.shape[0], int(refs[:, 3].max())
        data = np.empty((b_size, t_max, self.channels), STORAGE_NP[self.dtype] if stored else np.float32)
        int8 = stored and self.dtype is StorageDtype.int8
        scales = np.ones((b_size, self.channels), np.float32) if int8 else None
        offsets = np.zeros((b_size, self.channels), np.float32) if int8 else None
        for b, (k, start, end, _) in enumerate(refs.tolist()):
            n = end - start
            if n < t_max:
                data[b, : t_max - n] = 0
            if not self.has_sensor[k] or not n:
                continue
            if stored:
                enc, scale, offset = self._encoded(k)  # type: ignore[misc]
                data[b, t_max - n :] = enc[start:end]
                if int8:
                    scales[b], offsets[b] = scale, offset  # type: ignore[index]
            else:
                self._rows(k, start, end, data[b, t_max - n :])
        return data, scales, offsets

    def _bar(self, items: Sequence[Any], desc: str) -> Any:
        return tqdm(items, desc=desc, disable=not self.progress, leave=False)


class NoCache(SensorCache):
    """The no-cache path (``data.cache=false``): re-read the NPZ for every sample."""

    strategy = CacheStrategy.none

    def __init__(self, trajectories: Sequence[Trajectory], spec: WindowSpec, **kw: Any) -> None:
        super().__init__(trajectories, spec, **kw)
        self.dtype = StorageDtype.float32
        for traj in self._bar([t for t in self.trajectories if t.has_sensor], "sensor check (no cache)"):
            traj.load_sensor_stream(validate=True)  # bad data fails now, not mid-epoch


class WindowsCache(SensorCache):
    """The per-window cache: one stored array per sample window (reference; memory ∝ samples × T)."""

    strategy = CacheStrategy.windows

    def __init__(self, trajectories: Sequence[Trajectory], spec: WindowSpec, **kw: Any) -> None:
        super().__init__(trajectories, spec, **kw)
        self._windows: list[np.ndarray | None] = [None] * len(self)
        self._codec: dict[int, EncodedStream] = {}
        fixed = spec.fixed_length
        for k in self._bar(range(len(self.trajectories)), "sensor windows"):
            traj = self.trajectories[k]
            if not traj.has_sensor:
                continue
            enc = encode_stream(traj.load_sensor_stream(), self.dtype, traj.source_name())
            self._codec[k] = EncodedStream(enc.data[:0], enc.dtype, enc.scale, enc.offset)
            for i in np.flatnonzero(self.sample_traj == k):
                s, e = int(self.starts[i]), int(self.ends[i])
                if fixed is not None:
                    w = np.zeros((fixed, self.channels), enc.data.dtype)
                    w[fixed - (e - s) :] = enc.data[s:e]
                else:
                    w = enc.data[s:e].copy()
                self._windows[i] = w

    @property
    def nbytes(self) -> int:
        return int(sum(w.nbytes for w in self._windows if w is not None))

    def storage(self) -> dict[str, list[Any]] | None:
        return {"arrays": [w for w in self._windows if w is not None]}

    def window(self, i: int) -> tuple[np.ndarray, int]:
        w = self._windows[i]
        if w is None:
            return super().window(i)
        c = self._codec[int(self.sample_traj[i])]
        return decode_slice(w, c.dtype, c.scale, c.offset), int(self.lengths[i])

    def window_stored(self, i: int) -> tuple[np.ndarray, int, np.ndarray | None, np.ndarray | None]:
        w = self._windows[i]
        if w is None or self.dtype is StorageDtype.float32:
            return super().window_stored(i)
        c = self._codec[int(self.sample_traj[i])]
        return w, int(self.lengths[i]), c.scale, c.offset


class StreamCache(SensorCache):
    """One contiguous (encoded) array per trajectory; samples are slices of it."""

    strategy = CacheStrategy.stream
    shared_across_processes = True

    def __init__(self, trajectories: Sequence[Trajectory], spec: WindowSpec, **kw: Any) -> None:
        super().__init__(trajectories, spec, **kw)
        self._streams: dict[int, EncodedStream] = {}
        for k in self._bar(range(len(self.trajectories)), "sensor streams"):
            traj = self.trajectories[k]
            if traj.has_sensor:
                self._streams[k] = encode_stream(traj.load_sensor_stream(), self.dtype, traj.source_name())

    @property
    def nbytes(self) -> int:
        return int(sum(s.nbytes for s in self._streams.values()))

    def storage(self) -> dict[str, list[Any]] | None:
        return {"arrays": [s.data for s in self._streams.values()]}

    def _encoded(self, k: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None] | None:
        s = self._streams[k]
        return s.data, s.scale, s.offset

    def _rows(self, k: int, start: int, end: int, out: np.ndarray | None) -> np.ndarray:
        s = self._streams[k]
        return decode_slice(s.data[start:end], s.dtype, s.scale, s.offset, out=out)


class MmapCache(SensorCache):
    """On-disk ``.npy`` per trajectory, built once (flock + temp + fsync + rename), mmapped lazily."""

    strategy = CacheStrategy.mmap
    shared_across_processes = True

    def __init__(
        self,
        trajectories: Sequence[Trajectory],
        spec: WindowSpec,
        cache_dir: str | os.PathLike[str] | None = None,
        reader_settings: dict[str, Any] | None = None,
        verify_full: bool = False,
        **kw: Any,
    ) -> None:
        super().__init__(trajectories, spec, **kw)
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.verify_full = verify_full
        self._reader_settings = reader_settings or {}
        self._files: dict[int, Path] = {}
        self._codec: dict[int, tuple[np.ndarray | None, np.ndarray | None]] = {}
        self._file_bytes = 0
        self.built_here: list[int] = []  # trajectories this process (re)built
        self._arrays: dict[int, np.ndarray] = {}
        self._pid = os.getpid()
        for k in self._bar(range(len(self.trajectories)), "sensor mmap cache"):
            if self.trajectories[k].has_sensor:
                self._prepare(k)

    # ------------------------------------------------------------------- files
    def _key(self, traj: Trajectory) -> str:
        info: dict[str, Any] = {
            "version": CACHE_FORMAT_VERSION,
            "dtype": self.dtype.value,
            "channels": self.channels,
            "reader": self._reader_settings,
        }
        if traj.sensor_files:
            info["sources"] = [
                [str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns, hash_ends(p)] for p in traj.sensor_files
            ]
            if traj.sensor_fingerprint is not None:
                info["part"] = traj.sensor_fingerprint
        else:  # a custom reader without files: hash the stream itself
            info["stream"] = hashlib.blake2b(np.ascontiguousarray(traj.load_sensor_stream()).data).hexdigest()
        return key_of(info)

    def _paths(self, traj: Trajectory, key: str) -> tuple[Path, Path, Path, str]:
        where = hashlib.sha1(str(traj.path.resolve()).encode()).hexdigest()[:8]
        prefix = f"{traj.path.name}-{where}-"
        npy = self.cache_dir / f"{prefix}{key[:24]}.npy"
        return npy, npy.with_suffix(".json"), self.cache_dir / f"{prefix}lock", prefix

    def _prepare(self, k: int) -> None:
        traj = self.trajectories[k]
        key = self._key(traj)
        npy, sidecar, lock, prefix = self._paths(traj, key)

        def produce() -> tuple[np.ndarray, dict[str, Any]]:
            enc = encode_stream(traj.load_sensor_stream(validate=True), self.dtype, traj.source_name())
            extra = {
                "source": traj.source_name(),
                "scale": None if enc.scale is None else enc.scale.tolist(),
                "offset": None if enc.offset is None else enc.offset.tolist(),
            }
            return enc.data, extra

        meta, built = build_or_reuse(npy, sidecar, lock, key, produce, prefix, self.verify_full)
        if built:
            self.built_here.append(k)
        self._files[k] = npy
        scale = None if meta["scale"] is None else np.asarray(meta["scale"], np.float32)
        offset = None if meta["offset"] is None else np.asarray(meta["offset"], np.float32)
        self._codec[k] = (scale, offset)
        self._file_bytes += int(meta["data_bytes"])
        if meta["shape"][0] != traj.sensor_timestamps.shape[0]:  # type: ignore[union-attr]
            raise DataFormatError(f"{npy}: cache has {meta['shape'][0]} rows, source has more/less; delete it")

    # ----------------------------------------------------------------- access
    @property
    def nbytes(self) -> int:
        return self._file_bytes

    def storage(self) -> dict[str, list[Any]] | None:
        return {"files": list(self._files.values())}

    def _array(self, k: int) -> np.ndarray:
        if self._pid != os.getpid():  # forked worker: map again in this process
            self._arrays, self._pid = {}, os.getpid()
        arr = self._arrays.get(k)
        if arr is None:
            # copy-on-write mapping: pages are shared with every other process reading the file, and
            # an accidental in-place write only touches a private page, never the cache
            arr = self._arrays[k] = open_cow(self._files[k])
        return arr

    def _encoded(self, k: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None] | None:
        scale, offset = self._codec[k]
        return self._array(k), scale, offset

    def _rows(self, k: int, start: int, end: int, out: np.ndarray | None) -> np.ndarray:
        scale, offset = self._codec[k]
        return decode_slice(self._array(k)[start:end], self.dtype, scale, offset, out=out)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_arrays"] = {}  # never pickle a mapping: each process opens its own, lazily
        return state


_STRATEGIES: dict[CacheStrategy, type[SensorCache]] = {
    CacheStrategy.none: NoCache,
    CacheStrategy.windows: WindowsCache,
    CacheStrategy.stream: StreamCache,
    CacheStrategy.mmap: MmapCache,
}


def make_sensor_cache(
    strategy: CacheStrategy | str, trajectories: Sequence[Trajectory], spec: WindowSpec, **kw: Any
) -> SensorCache:
    """Build the cache for ``strategy`` (``none``/``windows``/``stream``/``mmap``)."""
    try:
        cls = _STRATEGIES[CacheStrategy(strategy)]
    except ValueError as exc:
        raise DataFormatError(
            f"cache_strategy: unknown strategy {strategy!r}; expected one of {[s.value for s in CacheStrategy]}"
        ) from exc
    return cls(trajectories, spec, **kw)
