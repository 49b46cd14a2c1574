"""Storage dtypes for cached sensor streams: encode a whole stream once, decode any slice to float32.

Error bounds (per element, ``x`` the float32 input, decoded ``y``):

- ``float32``: exact (``y == x`` bit for bit).
- ``float16``: ``|y - x| <= max(|x| * 2**-11, 2**-25)`` (round-to-nearest, 11-bit significand;
  the second term covers float16 subnormals). Values beyond ±65504 do not fit and raise.
- ``int8``: affine per channel, ``scale_c = (max_c - min_c) / 254``, ``offset_c`` the channel's
  midrange; ``|y - x| <= scale_c / 2`` (plus float32 rounding, below ``1e-6 * max|x_c|``).

Memory: float16 is half the float32 bytes, int8 a quarter (plus two float32 per channel).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from vla_sensor.data.errors import DataFormatError

FLOAT16_MAX = float(np.finfo(np.float16).max)


class StorageDtype(str, Enum):
    """How a cached stream is stored; decoding always yields float32."""

    float32 = "float32"
    float16 = "float16"
    int8 = "int8"


STORAGE_NP = {StorageDtype.float32: np.float32, StorageDtype.float16: np.float16, StorageDtype.int8: np.int8}


@dataclass
class EncodedStream:
    """An encoded (N, C) stream plus the per-channel affine parameters (int8 only)."""

    data: np.ndarray
    dtype: StorageDtype
    scale: np.ndarray | None = None  # (C,) float32, int8 only
    offset: np.ndarray | None = None  # (C,) float32, int8 only

    @property
    def nbytes(self) -> int:
        extra = 0 if self.scale is None else self.scale.nbytes + self.offset.nbytes  # type: ignore[union-attr]
        return int(self.data.nbytes) + extra


def channel_affine(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 ``(scale, offset)`` per channel from the channel's min and max over the whole stream."""
    offset = ((lo.astype(np.float64) + hi) / 2).astype(np.float32)
    scale = ((hi.astype(np.float64) - lo) / 254.0).astype(np.float32)
    scale[scale == 0] = 1.0  # constant channel: any scale reproduces it exactly
    return scale, offset


def encode_chunk(x: np.ndarray, dtype: StorageDtype | str, scale: np.ndarray | None = None,
                 offset: np.ndarray | None = None, source: str = "stream") -> np.ndarray:
    """Encode rows of a float32 stream; int8 needs the whole stream's ``channel_affine``.

    Encoding piece by piece gives the same bytes as encoding the stream at once.
    """
    dtype = StorageDtype(dtype)
    x = np.asarray(x, dtype=np.float32)
    if dtype is StorageDtype.float32:
        return np.ascontiguousarray(x)
    if dtype is StorageDtype.float16:
        peak = float(np.abs(x).max()) if x.size else 0.0
        if peak > FLOAT16_MAX:
            raise DataFormatError(
                f"{source}: values up to {peak:g} do not fit float16 storage (max {FLOAT16_MAX:g}); "
                "use cache dtype float32 or int8"
            )
        return x.astype(np.float16)
    q = np.rint((x - offset) / scale)
    np.clip(q, -127, 127, out=q)
    return q.astype(np.int8)


def encode_stream(stream: np.ndarray, dtype: StorageDtype | str, source: str = "stream") -> EncodedStream:
    """Encode a float32 (N, C) stream for storage in ``dtype``."""
    dtype = StorageDtype(dtype)
    x = np.asarray(stream, dtype=np.float32)
    if dtype is not StorageDtype.int8:
        return EncodedStream(encode_chunk(x, dtype, source=source), dtype)
    lo = x.min(axis=0) if x.size else np.zeros(x.shape[1], np.float32)
    hi = x.max(axis=0) if x.size else np.zeros(x.shape[1], np.float32)
    scale, offset = channel_affine(lo, hi)
    return EncodedStream(encode_chunk(x, dtype, scale, offset, source), dtype, scale, offset)


def decode_slice(
    data: np.ndarray,
    dtype: StorageDtype | str,
    scale: np.ndarray | None = None,
    offset: np.ndarray | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Decode rows of an encoded stream to float32.

    float32 data is returned as is (a view, no copy) unless ``out`` is given.
    """
    dtype = StorageDtype(dtype)
    if dtype is StorageDtype.float32:
        if out is None:
            return data
        out[...] = data
        return out
    if out is None:
        out = np.empty(data.shape, dtype=np.float32)
    if dtype is StorageDtype.float16:
        out[...] = data
        return out
    np.multiply(data, scale, out=out, dtype=np.float32)
    out += offset
    return out


def max_abs_error_bound(stream: np.ndarray, encoded: EncodedStream) -> np.ndarray:
    """Element-wise error bound promised for ``encoded`` (same shape as ``stream``)."""
    x = np.abs(np.asarray(stream, dtype=np.float32))
    if encoded.dtype is StorageDtype.float32:
        return np.zeros_like(x)
    if encoded.dtype is StorageDtype.float16:
        return np.maximum(x * 2.0**-11, 2.0**-25)
    peak = np.abs(encoded.offset) + 127 * encoded.scale  # type: ignore[operator]
    return np.broadcast_to(encoded.scale / 2 + 1e-6 * peak, x.shape)  # type: ignore[operator]
