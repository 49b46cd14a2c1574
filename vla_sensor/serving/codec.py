"""msgpack framing with typed numpy arrays: what crosses the socket, both ways.

An array travels as a map ``{"__ndarray__": true, "dtype": name, "shape": [...], "data": bin}`` holding
its raw little-endian C-order bytes. Only plain numeric dtypes are accepted, and the byte count must
match the shape, so nothing from the network is ever executed or unpickled — any language with a
msgpack library can be a client.
"""

from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np

ARRAY_KEY = "__ndarray__"
DTYPES = {name: np.dtype(name).newbyteorder("<") for name in
          ("bool", "uint8", "int8", "uint16", "int16", "int32", "int64", "float16", "float32", "float64")}


class ProtocolError(ValueError):
    """A message that is not valid msgpack or does not follow the message schema; names the field."""


def encode_array(array: np.ndarray) -> dict[str, Any]:
    """The typed-array map of ``array`` (copied to little-endian C order only when needed)."""
    name = array.dtype.name
    if name not in DTYPES:
        raise TypeError(f"array dtype {array.dtype} cannot be sent; expected one of {sorted(DTYPES)}")
    contiguous = np.ascontiguousarray(array, dtype=DTYPES[name])
    return {ARRAY_KEY: True, "dtype": name, "shape": list(contiguous.shape),
            "data": memoryview(contiguous.reshape(-1)).cast("B")}


def is_array(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get(ARRAY_KEY) is True


def decode_array(obj: Any, where: str) -> np.ndarray:
    """The (read-only) array a typed-array map holds; ``where`` names the field in errors."""
    if not is_array(obj):
        raise ProtocolError(f"{where}: expected a typed array map ({ARRAY_KEY}, dtype, shape, data)")
    name, shape, data = obj.get("dtype"), obj.get("shape"), obj.get("data")
    if name not in DTYPES:
        raise ProtocolError(f"{where}: dtype {name!r} is not accepted; expected one of {sorted(DTYPES)}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ProtocolError(f"{where}: shape must be a list of non-negative integers, got {shape!r}")
    if not isinstance(data, bytes):
        raise ProtocolError(f"{where}: data must be binary, got {type(data).__name__}")
    dtype = DTYPES[name]
    expected = math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise ProtocolError(f"{where}: data holds {len(data)} bytes; shape {tuple(shape)} {name} needs {expected}")
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="), copy=False)


def encode_default(obj: Any) -> Any:
    """msgpack's ``default``: numpy arrays as typed-array maps, numpy scalars as numbers."""
    if isinstance(obj, np.ndarray):
        return encode_array(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot send a {type(obj).__name__}; expected numpy arrays, numbers, strings, bytes, maps, lists")


def pack(message: dict[str, Any]) -> bytes:
    """``message`` as msgpack; numpy arrays (at any depth) become typed-array maps."""
    return msgpack.packb(message, default=encode_default, use_bin_type=True)


def unpack(frame: bytes) -> dict[str, Any]:
    """The message map of a frame (typed arrays left as maps: the receiver decodes the fields it expects)."""
    try:
        message = msgpack.unpackb(frame, raw=False, strict_map_key=True)
    except (ValueError, msgpack.UnpackException) as exc:  # ExtraData, FormatError, StackError, bad UTF-8
        raise ProtocolError(f"message: not a valid msgpack frame ({exc})") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"message: expected a map, got {type(message).__name__}")
    return message
