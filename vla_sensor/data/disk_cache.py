"""The on-disk ``.npy`` cache machinery shared by the sensor (``mmap``), decoded-image and feature caches.

One array per file, built at most once per key: the builder holds an ``fcntl.flock`` (other ranks and
workers wait, then reuse), streams the array into a temp file in chunks (so a build's memory does not
grow with the array), ``fsync``s it, ``os.replace``s it into place and last writes a JSON sidecar
(key, shape, dtype, file size, data offset, and a CRC32 of every ``BLOCK`` bytes of data). A file
without a matching sidecar, of the wrong size or header is rebuilt at open.

Damage anywhere in the data never reaches a sample: :class:`CacheFile` checks each block's CRC the
first time this process serves bytes of it (a bitmap remembers which blocks passed), and a block that
fails makes the owner rebuild the file from its source, with a :class:`CacheDamagedWarning` naming it.
``verify_full`` checks every block at open instead. The cost is one CRC pass (~2.8 GB/s on one core)
over each block a process reads, once; later reads of the block cost nothing extra.

Files of every key coexist in one directory: a build never deletes another key's file. Stale files
are removed only on request (``python -m vla_sensor.data.cache_tool clean``).

Readers use the file two ways: memory-mapped copy-on-write (a view per sample; every process on a
node shares one page-cache copy and an accidental in-place write never reaches the cache), or
positional reads (:meth:`CacheFile.read_into`, ``os.preadv`` straight into a batch buffer with the
kernel's read-ahead off, so a window costs about its own bytes from disk and several can be in flight).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import threading
import warnings
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vla_sensor.data.errors import DataFormatError

HASH_BLOCK = 1 << 18  # bytes hashed at each end of a *source* file for its cache key (256 KiB)
BLOCK = 1 << 16  # bytes of cached data per CRC32 (64 KiB: a window's verification reads <= 128 KiB extra)
WRITE_CHUNK_BYTES = 32 << 20  # a build holds at most about this much of the array at once


class CacheDamagedWarning(UserWarning):
    """A cache file failed its checksum and is being rebuilt from its source."""


def hash_ends(path: Path, offset: int = 0, block: int = HASH_BLOCK) -> str:
    """blake2b of the first and last ``block`` bytes after ``offset`` (a cheap content check of a large file)."""
    h = hashlib.blake2b(digest_size=16)
    size = path.stat().st_size
    with open(path, "rb") as f:
        f.seek(offset)
        h.update(f.read(block))
        if size - offset > 2 * block:
            f.seek(size - block)
        h.update(f.read(block))
    return h.hexdigest()


def key_of(info: dict[str, Any]) -> str:
    """sha256 over a JSON description of everything the cached array depends on."""
    return hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()


@dataclass
class Chunks:
    """An array given as consecutive pieces along its first axis (a build writes one piece at a time)."""

    shape: tuple[int, ...]
    dtype: np.dtype
    pieces: Iterable[np.ndarray]

    @classmethod
    def of(cls, array: np.ndarray, chunk_bytes: int = WRITE_CHUNK_BYTES) -> Chunks:
        array = np.asarray(array)
        row = max(int(np.prod(array.shape[1:], dtype=np.int64)) * array.itemsize, 1)
        step = max(1, chunk_bytes // row)
        pieces = (array[i : i + step] for i in range(0, max(array.shape[0], 1), step)) if array.ndim else iter([array])
        return cls(tuple(array.shape), array.dtype, pieces)


def block_sums(sidecar: dict[str, Any]) -> np.ndarray:
    """The per-block CRC32s recorded in a sidecar, as uint32."""
    return np.frombuffer(base64.b64decode(sidecar["block_crc32"]), "<u4")


def read_valid(npy: Path, sidecar: Path, key: str, verify_full: bool = False, **_: Any) -> dict[str, Any] | None:
    """The sidecar when ``npy`` is a complete cache for ``key``; None otherwise (never raises).

    Checks the sidecar, file size, ``.npy`` header and the first and last blocks' CRCs; ``verify_full``
    every block's CRC (the whole file is read).
    """
    try:
        meta = json.loads(sidecar.read_text())
        if meta.get("key") != key or npy.stat().st_size != meta["file_size"] or "block_crc32" not in meta:
            return None
        with open(npy, "rb") as f:
            version = np.lib.format.read_magic(f)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = reader(f)
            if f.tell() != meta["data_offset"] or fortran:
                return None
        if list(shape) != meta["shape"] or str(dtype) != meta["dtype"]:
            return None
        if verify_full:
            return None if first_bad_block(npy, meta) is not None else meta
        return meta if _ends_match(npy, meta) else None
    except Exception:  # any damage (a garbled header raises SyntaxError in numpy's parser): rebuild
        return None


def _ends_match(npy: Path, meta: dict[str, Any]) -> bool:
    """The first and last blocks' CRCs (a cheap check at open; the others are checked when first served)."""
    sums, block, offset, size = block_sums(meta), int(meta["block_size"]), int(meta["data_offset"]), int(meta["data_bytes"])
    with open(npy, "rb", buffering=0) as f:
        for b in {0, len(sums) - 1} if len(sums) else ():
            f.seek(offset + b * block)
            if zlib.crc32(f.read(min(block, size - b * block))) != int(sums[b]):
                return False
    return True


def first_bad_block(npy: Path, meta: dict[str, Any]) -> int | None:
    """Index of the first block whose CRC differs from the sidecar's (None: all match). Reads the whole file."""
    sums, block, offset = block_sums(meta), int(meta["block_size"]), int(meta["data_offset"])
    buf = bytearray(min(block * 256, max(int(meta["data_bytes"]), block)))
    with open(npy, "rb", buffering=0) as f:
        _advise(f.fileno(), getattr(os, "POSIX_FADV_SEQUENTIAL", 0))
        f.seek(offset)
        b = 0
        while b < len(sums):
            n = f.readinto(buf)
            if not n:
                return b
            view = memoryview(buf)[:n]
            for o in range(0, n, block):
                if b >= len(sums) or zlib.crc32(view[o : o + block]) != int(sums[b]):
                    return b
                b += 1
    return None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _advise(fd: int, advice: int) -> None:
    with contextlib.suppress(AttributeError, OSError):  # not Linux / not supported here: only a hint
        os.posix_fadvise(fd, 0, 0, advice)


class _BlockSummer:
    """CRC32 of every ``block`` bytes of a byte stream fed in arbitrary pieces."""

    def __init__(self, block: int) -> None:
        self.block, self.sums, self._crc, self._fill = block, [], 0, 0

    def update(self, data: memoryview) -> None:
        pos = 0
        while pos < len(data):
            take = min(self.block - self._fill, len(data) - pos)
            self._crc = zlib.crc32(data[pos : pos + take], self._crc)
            self._fill += take
            pos += take
            if self._fill == self.block:
                self.sums.append(self._crc)
                self._crc, self._fill = 0, 0

    def finish(self) -> np.ndarray:
        if self._fill:
            self.sums.append(self._crc)
            self._crc, self._fill = 0, 0
        return np.asarray(self.sums, "<u4")


def write_atomic(npy: Path, sidecar: Path, key: str, array: np.ndarray | Chunks, extra: dict[str, Any],
                 prefix: str = "", **_: Any) -> dict[str, Any]:
    """Stream ``array`` into ``npy`` and write its sidecar last (marking completion). Other files stay."""
    chunks = array if isinstance(array, Chunks) else Chunks.of(array)
    dtype = np.dtype(chunks.dtype)
    sidecar.unlink(missing_ok=True)  # from here on the old file is never "complete"
    tmp = npy.with_name(f"{npy.stem}.tmp{os.getpid()}.npy")
    summer = _BlockSummer(BLOCK)
    row_items = int(np.prod(chunks.shape[1:], dtype=np.int64))
    rows = 0
    try:
        with open(tmp, "wb") as f:
            header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(chunks.shape)}
            np.lib.format.write_array_header_1_0(f, header)
            data_offset = f.tell()
            for piece in chunks.pieces:
                piece = np.ascontiguousarray(piece, dtype=dtype)
                if piece.shape[1:] != tuple(chunks.shape[1:]):
                    raise ValueError(f"{npy}: chunk of shape {piece.shape} for an array of shape {chunks.shape}")
                view = memoryview(piece.reshape(-1).view(np.uint8))
                f.write(view)
                summer.update(view)
                rows += piece.shape[0] if piece.ndim else 1
            if rows != (chunks.shape[0] if chunks.shape else 1):
                raise ValueError(f"{npy}: chunks gave {rows} rows, expected {chunks.shape[0]}")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, npy)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    data_bytes = rows * row_items * dtype.itemsize if chunks.shape else dtype.itemsize
    meta = {
        "key": key,
        **extra,
        "shape": list(chunks.shape),
        "dtype": str(dtype),
        "file_size": npy.stat().st_size,
        "data_offset": data_offset,
        "data_bytes": int(data_bytes),
        "block_size": BLOCK,
        "block_crc32": base64.b64encode(summer.finish().tobytes()).decode(),
        "build": f"{os.getpid()}-{os.urandom(6).hex()}",  # tells a rebuilt file from the damaged one
    }
    tmp_meta = sidecar.with_name(f"{sidecar.stem}.tmp{os.getpid()}.json")
    with open(tmp_meta, "w") as f:
        json.dump(meta, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp_meta, sidecar)
    _fsync_dir(npy.parent)
    return meta


def _claims(sidecar: Path, key: str) -> bool:
    try:
        return json.loads(sidecar.read_text()).get("key") == key
    except (OSError, ValueError):
        return False


def ensure_cache_dir(path: Path) -> Path:
    """Create ``path`` if needed; a clear error naming it when that is impossible."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataFormatError(_unwritable(path, exc)) from exc
    return path


def _unwritable(path: Path, exc: OSError) -> str:
    return (
        f"cache directory {path} is not writable ({exc.strerror or exc}); set data.cache_strategy.cache_dir "
        "(or $VLA_SENSOR_CACHE_DIR) to a writable directory, or build the cache once where it is writable"
    )


def build_or_reuse(
    npy: Path,
    sidecar: Path,
    lock: Path,
    key: str,
    produce: Callable[[], tuple[np.ndarray | Chunks, dict[str, Any]]],
    prefix: str = "",
    verify_full: bool = False,
    hash_block: int = HASH_BLOCK,
    damaged_build: str | None = None,
) -> tuple[dict[str, Any], bool]:
    """``(sidecar, built_here)``: reuse a valid cache, else build it under the lock (one builder).

    ``produce`` returns the array (or :class:`Chunks` of it) and extra sidecar fields. A complete cache
    in a read-only directory is reused; one that must be built there is a DataFormatError naming the
    directory. ``damaged_build``: the ``build`` id of a file found damaged, rebuilt unless another
    process rebuilt it already.
    """
    if damaged_build is None:
        meta = read_valid(npy, sidecar, key, verify_full)
        if meta is not None:
            return meta, False
        if _claims(sidecar, key):  # complete once, for this very key: the file was damaged since
            warnings.warn(f"{npy}: cache damaged (size, header or checksum differs from its sidecar); rebuilding it",
                          CacheDamagedWarning, stacklevel=3)
    try:
        lf = open(lock, "a+b")  # noqa: SIM115 (held for the build below)
    except OSError as exc:
        raise DataFormatError(_unwritable(npy.parent, exc)) from exc
    with lf:
        fcntl.flock(lf, fcntl.LOCK_EX)  # one builder; the others wait here, then reuse
        try:
            meta = read_valid(npy, sidecar, key, verify_full)
            if meta is not None and (damaged_build is None or meta.get("build") != damaged_build):
                return meta, False
            for dead in npy.parent.glob(f"{npy.stem}.tmp*"):  # a killed builder's debris (we hold the lock)
                dead.unlink(missing_ok=True)
            array, extra = produce()
            try:
                return write_atomic(npy, sidecar, key, array, extra), True
            except OSError as exc:
                if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                    raise DataFormatError(_unwritable(npy.parent, exc)) from exc
                raise
        finally:
            fcntl.flock(lf, fcntl.LOCK_UN)


def open_cow(path: Path) -> np.ndarray:
    """Map ``path`` copy-on-write: shared page-cache pages, private only where written."""
    return np.load(path, mmap_mode="c", allow_pickle=False)


class CacheFile:
    """One complete cache file, served with per-block verification (once per block and process).

    ``rebuild(damaged_build)`` returns the sidecar of a fresh file at the same path (the owner's
    :func:`build_or_reuse`); it runs when a block fails its CRC, then the new file is served.
    """

    def __init__(self, path: Path, meta: dict[str, Any], rebuild: Callable[[str], dict[str, Any]] | None = None,
                 source: str = "") -> None:
        self.path = path
        self.source = source
        self._rebuild = rebuild
        self._lock = threading.Lock()
        self._set_meta(meta)

    def _set_meta(self, meta: dict[str, Any]) -> None:
        self.meta = meta
        self.shape = tuple(meta["shape"])
        self.dtype = np.dtype(meta["dtype"])
        self.row_nbytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self.block = int(meta["block_size"])
        self.data_offset = int(meta["data_offset"])
        self.sums = block_sums(meta)
        self.verified = np.zeros(len(self.sums), bool)
        self._pid, self._fd, self._map = -1, -1, None

    # ------------------------------------------------------------- per process
    def _own(self) -> None:
        if self._pid != os.getpid():  # new process (fork): own descriptor and mapping, lazily
            self._pid, self._fd, self._map = os.getpid(), -1, None

    def fd(self) -> int:
        self._own()
        if self._fd < 0:
            self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            _advise(self._fd, getattr(os, "POSIX_FADV_RANDOM", 0))  # read exactly what is asked: no read-ahead
        return self._fd

    def array(self) -> np.ndarray:
        """The copy-on-write mapping of the whole array (not verified: use :meth:`view`)."""
        self._own()
        if self._map is None:
            self._map = open_cow(self.path)
        return self._map

    # -------------------------------------------------------------- verifying
    def _blocks(self, start: int, end: int) -> tuple[int, int]:
        lo, hi = start * self.row_nbytes, end * self.row_nbytes
        return lo // self.block, -(-hi // self.block)

    def _check_mapped(self, b0: int, b1: int) -> None:
        todo = np.flatnonzero(~self.verified[b0:b1]) + b0
        if not todo.size:
            return
        build = self.meta.get("build", "")
        raw = self.array().reshape(-1).view(np.uint8)
        for b in todo.tolist():
            if zlib.crc32(raw[b * self.block : (b + 1) * self.block]) != int(self.sums[b]):
                self._damaged(b, build)
                return self._check_mapped(b0, b1)
            self.verified[b] = True

    def _damaged(self, block: int, build: str) -> None:
        """Block ``block`` of the file built as ``build`` failed: rebuild it (or refuse), then serve the new file."""
        where = f"{self.path}: cache damaged (block {block}, data bytes {block * self.block}..{(block + 1) * self.block})"
        if self._rebuild is None:
            raise DataFormatError(f"{where}; it cannot be rebuilt here: delete it")
        with self._lock:
            if self.meta.get("build", "") != build:  # another thread of this process rebuilt it meanwhile
                return
            warnings.warn(f"{where}; rebuilding it from {self.source or 'its source'}", CacheDamagedWarning,
                          stacklevel=4)
            try:
                meta = self._rebuild(build)
            except (DataFormatError, OSError) as exc:
                raise DataFormatError(f"{where}; refused: rebuilding it from its source failed ({exc})") from exc
            self._set_meta(meta)  # the old descriptor may still be in use by another thread: left open

    def view(self, start: int, end: int) -> np.ndarray:
        """Rows ``start:end`` of the mapping, every block under them verified first."""
        self._check_mapped(*self._blocks(start, end))
        return self.array()[start:end]

    def check_all(self) -> None:
        """Verify every block now (``verify_full``-style, e.g. for a tool)."""
        build = self.meta.get("build", "")
        bad = first_bad_block(self.path, self.meta)
        if bad is not None:
            self._damaged(bad, build)
        self.verified[:] = True

    # -------------------------------------------------------- positional reads
    def _pread(self, out: memoryview, offset: int) -> None:
        fd, done = self.fd(), 0
        while done < len(out):
            n = os.preadv(fd, [out[done:]], offset + done)
            if n <= 0:
                raise DataFormatError(f"{self.path}: ended at byte {offset + done}; expected {self.meta['file_size']}")
            done += n

    def read_into(self, start: int, end: int, out: np.ndarray) -> None:
        """Copy rows ``start:end`` into ``out`` (C-contiguous, the stored dtype) with positional reads.

        Unverified blocks are read whole once (so their CRC can be checked) and the rows copied out of
        that read; verified ones are read straight into ``out``.
        """
        if end <= start:
            return
        build = self.meta.get("build", "")
        b0, b1 = self._blocks(start, end)
        if self.verified[b0:b1].all():
            self._pread(memoryview(out.reshape(-1).view(np.uint8)), self.data_offset + start * self.row_nbytes)
            return
        lo, hi = b0 * self.block, min(b1 * self.block, int(self.meta["data_bytes"]))
        span = np.empty(hi - lo, np.uint8)
        self._pread(memoryview(span), self.data_offset + lo)
        for b in range(b0, b1):
            if not self.verified[b]:
                piece = span[(b - b0) * self.block : (b - b0 + 1) * self.block]
                if zlib.crc32(piece) != int(self.sums[b]):
                    self._damaged(b, build)
                    return self.read_into(start, end, out)
                self.verified[b] = True
        a = start * self.row_nbytes - lo
        out.reshape(-1).view(np.uint8)[...] = span[a : a + (end - start) * self.row_nbytes]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_map=None, _fd=-1, _pid=-1, _lock=None)  # never pickle a mapping or a descriptor
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def close(self) -> None:
        if self._pid == os.getpid() and self._fd >= 0:
            os.close(self._fd)
        self._fd, self._map = -1, None
