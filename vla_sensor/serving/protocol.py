"""The policy server's message schema (see docs/serving.md): building and reading each message.

Every frame is one msgpack map with a ``type``. Client → server: ``predict`` (one observation of the
contract in :mod:`vla_sensor.data.observation`) and ``reset`` (a new episode). Server → client:
``hello`` (once, on connect), ``actions``, ``reset`` (the acknowledgement) and ``error``.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image

from vla_sensor.serving.codec import ProtocolError, decode_array, is_array

PROTOCOL_VERSION = 1
TOKEN_ENV = "VLA_SERVE_TOKEN"  # the shared secret, when not given on the command line
TOKEN_HEADER = "Authorization"  # "Bearer <token>", sent with the websocket handshake

# Error kinds of an ``error`` reply.
OBSERVATION, PROTOCOL, TOO_LARGE, INTERNAL = "observation", "protocol", "too_large", "internal"


def error_reply(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": kind, "message": message}


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """A uint8 (H, W, 3) image as JPEG bytes (smaller frames over slow links; lossy)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=int(quality))
    return buffer.getvalue()


def decode_image(data: bytes, where: str, max_pixels: int) -> np.ndarray:
    """An encoded image (JPEG or PNG bytes) as uint8 (H, W, 3), refusing more than ``max_pixels``."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format not in ("JPEG", "PNG"):
                raise ProtocolError(f"{where}: expected JPEG or PNG bytes, got {img.format}")
            if img.width * img.height > max_pixels:
                raise ProtocolError(f"{where}: {img.width}x{img.height} exceeds the server's {max_pixels} pixels")
            return np.asarray(img.convert("RGB"))
    except (OSError, Image.DecompressionBombError) as exc:
        raise ProtocolError(f"{where}: not a readable JPEG or PNG image ({exc})") from None


def encode_observation(obs: Mapping[str, Any], jpeg_quality: int | None = None) -> dict[str, Any]:
    """The ``predict`` request of ``obs``; images as JPEG when ``jpeg_quality`` is set."""
    payload = dict(obs)
    images = payload.get("images")
    if jpeg_quality is not None and isinstance(images, Mapping):
        payload["images"] = {v: encode_jpeg(img, jpeg_quality) if isinstance(img, np.ndarray) else img
                             for v, img in images.items()}
    return {"type": "predict", "observation": payload}


def decode_observation(payload: Any, max_pixels: int) -> dict[str, Any]:
    """The observation of a ``predict`` request with its typed arrays and encoded images decoded.

    Only the transport is undone here; the contract itself (keys, dtypes, shapes, finite values) is
    checked by the policy with :func:`~vla_sensor.data.observation.validate_observation`.
    """
    if not isinstance(payload, dict):
        raise ProtocolError(f"observation: expected a map, got {type(payload).__name__}")
    obs = dict(payload)
    images = obs.get("images")
    if isinstance(images, dict):
        obs["images"] = {
            view: decode_image(img, f"images[{view!r}]", max_pixels) if isinstance(img, bytes)
            else decode_array(img, f"images[{view!r}]") if is_array(img) else img
            for view, img in images.items()
        }
    sensor = obs.get("sensor")
    if isinstance(sensor, dict):
        obs["sensor"] = {key: decode_array(value, f"sensor.{key}") if is_array(value) else value
                         for key, value in sensor.items()}
    if is_array(obs.get("state")):  # the optional proprioceptive state (S,)
        obs["state"] = decode_array(obs["state"], "state")
    return obs
