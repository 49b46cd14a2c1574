"""openpi's websocket policy encoding, so its ``WebsocketClientPolicy`` drives this server unchanged.

An openpi frame is a msgpack map holding the observation itself (no ``type`` field); its arrays are
maps with *binary* keys ``{b"__ndarray__": True, b"data", b"dtype": "<f4", b"shape"}``. Only the
plain numeric dtypes of :mod:`vla_sensor.serving.codec` are accepted and the byte count must match the
shape: nothing is unpickled and no object array is ever built. Replies use the same encoding; an
error is a text frame, which openpi's client raises as ``RuntimeError``.
"""

from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np

from vla_sensor.serving.codec import DTYPES, ProtocolError

ARRAY, GENERIC = b"__ndarray__", b"__npgeneric__"
# numpy's dtype strings ('<f4', '|u1', '|b1', ...) of the accepted dtypes, little-endian or byte-wide
_DTYPE_STRS = {dt.str: dt for dt in DTYPES.values()}


def is_openpi(message: dict[Any, Any]) -> bool:
    """An openpi request (the observation map itself) rather than a typed ``predict``/``reset`` message."""
    return "type" not in message


def _array(obj: dict[Any, Any], where: str) -> np.ndarray:
    name, shape, data = obj.get(b"dtype"), obj.get(b"shape"), obj.get(b"data")
    dtype = _DTYPE_STRS.get(name) if isinstance(name, str) else None
    if dtype is None:
        raise ProtocolError(f"{where}: dtype {name!r} is not accepted; expected one of {sorted(_DTYPE_STRS)}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ProtocolError(f"{where}: shape must be a list of non-negative integers, got {shape!r}")
    if not isinstance(data, bytes):
        raise ProtocolError(f"{where}: data must be binary, got {type(data).__name__}")
    if len(data) != math.prod(shape) * dtype.itemsize:
        raise ProtocolError(f"{where}: data holds {len(data)} bytes; shape {tuple(shape)} {name} needs "
                            f"{math.prod(shape) * dtype.itemsize}")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def decode(obj: Any, where: str = "observation") -> Any:
    """``obj`` with every openpi array map (at any depth) as a read-only numpy array; ``where`` names fields."""
    if isinstance(obj, dict):
        if obj.get(ARRAY) is True:
            return _array(obj, where)
        if obj.get(GENERIC) is True:
            value = obj.get(b"data")
            if not isinstance(value, (int, float, bool)):
                raise ProtocolError(f"{where}: a numpy scalar must hold a number, got {type(value).__name__}")
            return value
        return {k: decode(v, f"{where}.{k}" if where != "observation" else str(k)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    return obj


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.name not in DTYPES:
            raise TypeError(f"array dtype {obj.dtype} cannot be sent")
        data = np.ascontiguousarray(obj, dtype=DTYPES[obj.dtype.name])
        return {ARRAY: True, b"data": memoryview(data.reshape(-1)).cast("B"), b"dtype": data.dtype.str,
                b"shape": list(data.shape)}
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot send a {type(obj).__name__}")


def pack(message: dict[str, Any]) -> bytes:
    """``message`` in openpi's encoding (what its ``msgpack_numpy.unpackb`` reads back)."""
    return msgpack.packb(message, default=_default, use_bin_type=True)
