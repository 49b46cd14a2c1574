"""The on-disk ``.npy`` cache machinery shared by the sensor (``mmap``) and decoded-image caches.

One array per file, built at most once per key: the builder holds an ``fcntl.flock`` (other ranks and
workers wait, then reuse), writes a temp file, ``fsync``s it, ``os.replace``s it into place and last
writes a JSON sidecar (key, shape, dtype, file size, data offset, checksums). A file without a matching
sidecar, of the wrong size or header, or whose head/tail checksum differs is rebuilt, never read as
data. Readers map the file copy-on-write, lazily, in their own process, so every process on a node
shares one page-cache copy and an accidental in-place write never reaches the cache.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HASH_BLOCK = 1 << 18  # bytes hashed at each end of a source file / cache file (256 KiB)


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


def read_valid(
    npy: Path, sidecar: Path, key: str, verify_full: bool = False, hash_block: int = HASH_BLOCK
) -> dict[str, Any] | None:
    """The sidecar when ``npy`` is a complete cache for ``key``; None otherwise (never raises)."""
    try:
        meta = json.loads(sidecar.read_text())
        if meta.get("key") != key or npy.stat().st_size != meta["file_size"]:
            return None
        arr = np.load(npy, mmap_mode="r", allow_pickle=False)
        if list(arr.shape) != meta["shape"] or str(arr.dtype) != meta["dtype"]:
            return None
        if hash_ends(npy, meta["data_offset"], hash_block) != meta["ends_checksum"]:
            return None
        if verify_full and hashlib.blake2b(arr.data, digest_size=16).hexdigest() != meta["checksum"]:
            return None
        return meta
    except Exception:  # any damage (a garbled header raises SyntaxError in numpy's parser): rebuild
        return None


def _data_offset(path: Path) -> int:
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            np.lib.format.read_array_header_1_0(f)
        else:
            np.lib.format.read_array_header_2_0(f)
        return f.tell()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(
    npy: Path, sidecar: Path, key: str, array: np.ndarray, extra: dict[str, Any], prefix: str, hash_block: int = HASH_BLOCK
) -> dict[str, Any]:
    """Write ``array`` and its sidecar (last, marking completion); delete older files of ``prefix``."""
    sidecar.unlink(missing_ok=True)  # from here on the old file is never "complete"
    tmp = npy.with_name(f"{npy.stem}.tmp{os.getpid()}.npy")
    with open(tmp, "wb") as f:
        np.lib.format.write_array(f, array, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    data_offset = _data_offset(tmp)
    os.replace(tmp, npy)
    meta = {
        "key": key,
        **extra,
        "shape": list(array.shape),
        "dtype": str(array.dtype),
        "file_size": npy.stat().st_size,
        "data_offset": data_offset,
        "data_bytes": int(array.nbytes),
        "ends_checksum": hash_ends(npy, data_offset, hash_block),
        "checksum": hashlib.blake2b(np.ascontiguousarray(array).data, digest_size=16).hexdigest(),
    }
    tmp_meta = sidecar.with_name(f"{sidecar.stem}.tmp{os.getpid()}.json")
    with open(tmp_meta, "w") as f:
        json.dump(meta, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp_meta, sidecar)
    _fsync_dir(npy.parent)
    for old in npy.parent.glob(f"{prefix}*"):  # stale versions of the same source
        if old.name not in (npy.name, sidecar.name) and not old.name.endswith("lock"):
            old.unlink(missing_ok=True)
    return meta


def build_or_reuse(
    npy: Path,
    sidecar: Path,
    lock: Path,
    key: str,
    produce: Callable[[], tuple[np.ndarray, dict[str, Any]]],
    prefix: str,
    verify_full: bool = False,
    hash_block: int = HASH_BLOCK,
) -> tuple[dict[str, Any], bool]:
    """``(sidecar, built_here)``: reuse a valid cache, else build it under the lock (one builder).

    ``hash_block``: bytes checked at each end of the file at every start (smaller for many small files).
    """
    meta = read_valid(npy, sidecar, key, verify_full, hash_block)
    if meta is not None:
        return meta, False
    with open(lock, "a+b") as lf:
        fcntl.flock(lf, fcntl.LOCK_EX)  # one builder; the others wait here, then reuse
        try:
            meta = read_valid(npy, sidecar, key, verify_full, hash_block)
            if meta is not None:
                return meta, False
            array, extra = produce()
            return write_atomic(npy, sidecar, key, array, extra, prefix, hash_block), True
        finally:
            fcntl.flock(lf, fcntl.LOCK_UN)


def open_cow(path: Path) -> np.ndarray:
    """Map ``path`` copy-on-write: shared page-cache pages, private only where written."""
    return np.load(path, mmap_mode="c", allow_pickle=False)
