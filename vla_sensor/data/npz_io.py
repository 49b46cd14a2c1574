"""Reading and writing NPZ arrays piece by piece, so memory does not grow with a recording's length.

``np.load`` reads a whole NPZ member at once and ``np.savez`` needs whole arrays; a 10-minute
recording at 650 Hz holds 1.6 GB of A-lines. :func:`iter_npz_rows` streams one member's rows (stored
or deflated members alike) and :func:`write_npz` writes members from :class:`~vla_sensor.data.disk_cache.Chunks`
or arrays, producing the same file ``np.savez`` would (one ``<key>.npy`` per member, ZIP64).
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from vla_sensor.data.disk_cache import Chunks

CHUNK_BYTES = 32 << 20  # about this many bytes of one member in memory at a time


def _read_header(f) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    return np.lib.format.read_array_header_2_0(f)


def npz_member_rows(path: Path, key: str) -> int:
    """Rows (first dimension) of member ``key``, from its header alone."""
    with zipfile.ZipFile(path) as zf, zf.open(f"{key}.npy") as f:
        shape, _, _ = _read_header(f)
    return int(shape[0]) if shape else 1


def iter_npz_rows(path: Path, key: str, rows: int) -> Iterator[np.ndarray]:
    """Member ``key`` of the NPZ at ``path`` in pieces of at most ``rows`` rows (2-D: (n, K); 1-D: (n,))."""
    with zipfile.ZipFile(path) as zf, zf.open(f"{key}.npy") as f:
        shape, fortran, dtype = _read_header(f)
        if fortran or not shape or dtype.hasobject:  # rare layouts: read whole, hand out pieces
            with np.load(path, allow_pickle=False) as npz:
                whole = np.asarray(npz[key])
            whole = whole.reshape(1) if not shape else whole
            for i in range(0, whole.shape[0], rows):
                yield whole[i : i + rows]
            return
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        left = int(shape[0])
        while left:
            n = min(rows, left)
            buf = bytearray(n * row_bytes)
            view, got = memoryview(buf), 0
            while got < len(buf):
                k = f.readinto(view[got:])
                if not k:
                    raise EOFError(f"{path}:{key}: member ends after {shape[0] - left} + {got // max(row_bytes, 1)} rows")
                got += k
            yield np.frombuffer(buf, dtype).reshape((n, *shape[1:]))
            left -= n


def write_npz(path: Path, arrays: Mapping[str, np.ndarray | Chunks]) -> None:
    """Write ``arrays`` (whole arrays or :class:`Chunks`) as an uncompressed NPZ, one piece at a time."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, value in arrays.items():
            chunks = value if isinstance(value, Chunks) else Chunks.of(np.asarray(value), CHUNK_BYTES)
            dtype = np.dtype(chunks.dtype)
            with zf.open(f"{key}.npy", "w", force_zip64=True) as f:
                header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                          "shape": tuple(chunks.shape)}
                np.lib.format.write_array_header_1_0(f, header)
                for piece in chunks.pieces:
                    f.write(memoryview(np.ascontiguousarray(piece, dtype=dtype).reshape(-1).view(np.uint8)))
