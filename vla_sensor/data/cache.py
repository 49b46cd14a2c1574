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
  atomically and in bounded memory (the stream is read, encoded and written in pieces), by one process
  holding an ``fcntl.flock`` while the others wait; keyed by the source files (path, size, mtime,
  head/tail content hash) and the cache settings, so caches of every dtype coexist in one directory.
  A JSON sidecar written last (header, size, a CRC32 per 64 KiB block) marks it complete: stale or
  truncated caches are rebuilt at open, and every block is checked the first time a process serves it
  (:class:`~vla_sensor.data.disk_cache.CacheFile`), so a damaged cache is rebuilt, never read as data.
  Batches gathered in the main process are read with positional reads (``os.preadv``), several in
  flight, about the window's own bytes each.

Every strategy returns identical windows (bit-exact for float32 storage). Sample windows of the
``stream``/``mmap``/``windows`` strategies are views of the cache: do not modify them in place.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from vla_sensor.data.disk_cache import CacheFile, Chunks, build_or_reuse, ensure_cache_dir, hash_ends, key_of
from vla_sensor.data.errors import DataFormatError
from vla_sensor.data.format import Trajectory
from vla_sensor.data.storage import (
    STORAGE_NP,
    EncodedStream,
    StorageDtype,
    channel_affine,
    decode_slice,
    encode_chunk,
    encode_stream,
)
from vla_sensor.data.windows import SENSOR_CHANNELS, WindowSpec, window_bounds

CACHE_FORMAT_VERSION = 2  # 2: per-block CRC32 in the sidecar
BUILD_ROWS_BYTES = 32 << 20  # a build holds about this many bytes of the stream at a time


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

    # whether _stored/_codec give the encoded rows (stream, mmap); else windows are decoded float32
    stores_encoded = False

    def _stored(self, k: int, start: int, end: int) -> np.ndarray:
        """Rows ``start:end`` of trajectory ``k``'s stored (encoded) stream, a view where possible."""
        raise NotImplementedError

    def _codec(self, k: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Trajectory ``k``'s int8 ``(scale, offset)`` (None, None for float32/float16)."""
        return None, None

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
        if not self.stores_encoded:
            w, n = self.window(i)
            return w, n, None, None
        scale, offset = self._codec(k)
        start, end = int(self.starts[i]), int(self.ends[i])
        length = end - start
        rows = self._stored(k, start, end)
        if fixed is not None and length < fixed:
            out = np.zeros((fixed, self.channels), rows.dtype)
            out[fixed - length :] = rows
            return out, length, scale, offset
        return rows, length, scale, offset

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
        self, refs: np.ndarray, stored: bool = False, pool: Executor | None = None
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """The (B, T_max, C) windows of ``refs`` (B, 4), left-padded, in one new buffer.

        Each window is copied once into its last rows (float32: decoded on the way) and only padding
        rows are zeroed. ``stored`` keeps float16/int8 as stored and returns the int8 scale/offset
        (B, C) for :func:`~vla_sensor.data.sensor_decode.decode_sensor_batch`; else (data, None, None).
        ``pool``: copy the windows on its threads, several at once (see :meth:`start_gather`).
        """
        return self.start_gather(refs, stored, pool)()

    def start_gather(
        self, refs: np.ndarray, stored: bool = False, pool: Executor | None = None
    ) -> Callable[[], tuple[np.ndarray, np.ndarray | None, np.ndarray | None]]:
        """Issue the copies of :meth:`gather` on ``pool`` now; the returned function waits for them.

        The loader issues the next batch's gather before it hands out the current batch, so the
        reads of one batch run while the model trains on the previous one.
        """
        stored = stored and self.dtype is not StorageDtype.float32
        b_size, t_max = refs.shape[0], int(refs[:, 3].max())
        data = np.empty((b_size, t_max, self.channels), STORAGE_NP[self.dtype] if stored else np.float32)
        int8 = stored and self.dtype is StorageDtype.int8
        scales = np.ones((b_size, self.channels), np.float32) if int8 else None
        offsets = np.zeros((b_size, self.channels), np.float32) if int8 else None
        jobs = []
        for b, (k, start, end, _) in enumerate(refs.tolist()):
            n = end - start
            if n < t_max:
                data[b, : t_max - n] = 0
            if not self.has_sensor[k] or not n:
                continue
            if int8:
                scales[b], offsets[b] = self._codec(k)  # type: ignore[index]
            jobs.append((k, start, end, data[b, t_max - n :], stored))
        if pool is None or len(jobs) < 2:
            for job in jobs:
                self._copy_window(*job)
            futures = []
        else:
            futures = [pool.submit(self._copy_window, *job) for job in jobs]

        def result() -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
            for f in futures:
                f.result()
            return data, scales, offsets

        return result

    def _copy_window(self, k: int, start: int, end: int, out: np.ndarray, stored: bool) -> None:
        """Rows ``start:end`` of trajectory ``k`` into ``out``: as stored, or decoded to float32."""
        if stored:
            out[...] = self._stored(k, start, end)
        else:
            self._rows(k, start, end, out)

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

    stores_encoded = True

    def _stored(self, k: int, start: int, end: int) -> np.ndarray:
        return self._streams[k].data[start:end]

    def _codec(self, k: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        s = self._streams[k]
        return s.scale, s.offset

    def _rows(self, k: int, start: int, end: int, out: np.ndarray | None) -> np.ndarray:
        s = self._streams[k]
        return decode_slice(s.data[start:end], s.dtype, s.scale, s.offset, out=out)


class MmapCache(SensorCache):
    """On-disk ``.npy`` per trajectory, built once (flock + temp + fsync + rename), read verified."""

    strategy = CacheStrategy.mmap
    shared_across_processes = True
    stores_encoded = True

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
        self.cache_dir = ensure_cache_dir(Path(cache_dir) if cache_dir else default_cache_dir())
        self.verify_full = verify_full
        self._reader_settings = reader_settings or {}
        self._files: dict[int, CacheFile] = {}
        self._keys: dict[int, str] = {}
        self._scale_offset: dict[int, tuple[np.ndarray | None, np.ndarray | None]] = {}
        self._file_bytes = 0
        self.built_here: list[int] = []  # trajectories this process (re)built
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

    def _produce(self, traj: Trajectory) -> tuple[Chunks, dict[str, Any]]:
        """The encoded stream as pieces (a build never holds the whole stream) and the sidecar extras."""
        rows = max(1, BUILD_ROWS_BYTES // (4 * self.channels))
        n = int(traj.sensor_timestamps.shape[0])  # type: ignore[union-attr]
        scale = offset = None
        if self.dtype is StorageDtype.int8:  # the per-channel range first: one pass over the source
            lo = np.full(self.channels, np.inf, np.float32)
            hi = np.full(self.channels, -np.inf, np.float32)
            for piece in traj.iter_sensor_stream(rows, validate=True):
                np.minimum(lo, piece.min(axis=0), out=lo)
                np.maximum(hi, piece.max(axis=0), out=hi)
            scale, offset = channel_affine(lo, hi)
        source = traj.source_name()
        pieces = (encode_chunk(p, self.dtype, scale, offset, source) for p in traj.iter_sensor_stream(rows, True))
        extra = {
            "source": source,
            "sources": [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in traj.sensor_files],
            "scale": None if scale is None else scale.tolist(),
            "offset": None if offset is None else offset.tolist(),
        }
        return Chunks((n, self.channels), np.dtype(STORAGE_NP[self.dtype]), pieces), extra

    def _build(self, k: int, damaged: str | None = None) -> dict[str, Any]:
        """Trajectory ``k``'s sidecar: its cache reused or built (``damaged``: rebuilt unless done already)."""
        traj = self.trajectories[k]
        key = self._keys.get(k) or self._keys.setdefault(k, self._key(traj))
        npy, sidecar, lock, prefix = self._paths(traj, key)
        meta, built = build_or_reuse(npy, sidecar, lock, key, lambda: self._produce(traj), prefix, self.verify_full,
                                     damaged_build=damaged)
        if built:
            self.built_here.append(k)
        return meta

    def _prepare(self, k: int) -> None:
        traj = self.trajectories[k]
        meta = self._build(k)
        npy = self._paths(traj, self._keys[k])[0]
        if meta["shape"][0] != traj.sensor_timestamps.shape[0]:  # type: ignore[union-attr]
            raise DataFormatError(f"{npy}: cache has {meta['shape'][0]} rows, source has more/less; delete it")
        self._files[k] = CacheFile(npy, meta, rebuild=functools.partial(self._build, k), source=traj.source_name())
        scale = None if meta["scale"] is None else np.asarray(meta["scale"], np.float32)
        offset = None if meta["offset"] is None else np.asarray(meta["offset"], np.float32)
        self._scale_offset[k] = (scale, offset)
        self._file_bytes += int(meta["data_bytes"])

    # ----------------------------------------------------------------- access
    @property
    def nbytes(self) -> int:
        return self._file_bytes

    def storage(self) -> dict[str, list[Any]] | None:
        return {"files": [f.path for f in self._files.values()]}

    def _stored(self, k: int, start: int, end: int) -> np.ndarray:
        # copy-on-write mapping: pages are shared with every other process reading the file, and an
        # accidental in-place write only touches a private page, never the cache
        return self._files[k].view(start, end)

    def _codec(self, k: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        return self._scale_offset[k]

    def _rows(self, k: int, start: int, end: int, out: np.ndarray | None) -> np.ndarray:
        scale, offset = self._scale_offset[k]
        return decode_slice(self._stored(k, start, end), self.dtype, scale, offset, out=out)

    def _copy_window(self, k: int, start: int, end: int, out: np.ndarray, stored: bool) -> None:
        """Positional reads into ``out`` (no page faults on a mapping, no read-ahead past the window)."""
        file = self._files[k]
        if stored or self.dtype is StorageDtype.float32:
            file.read_into(start, end, out)
            return
        raw = np.empty((end - start, self.channels), file.dtype)
        file.read_into(start, end, raw)
        scale, offset = self._scale_offset[k]
        decode_slice(raw, self.dtype, scale, offset, out=out)


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
