"""Decode a batch's sensor windows from their storage dtype to float32, where the model runs.

With ``decode_on_device`` the DataLoader ships float16/int8 windows as stored (half / a quarter of
the float32 bytes through worker IPC and host-to-device copies) plus, for int8, per-sample
``sensor_scale``/``sensor_offset`` (B, C). Decoding on the GPU is one fused multiply-add there
instead of a per-sample CPU pass in the workers. Same formulas as :mod:`vla_sensor.data.storage`,
so the error bounds documented there hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

SCALE_KEYS = ("sensor_scale", "sensor_offset")


def _float32_like(data: torch.Tensor) -> torch.Tensor:
    """``data`` as a new float32 tensor; on CPU in a numpy buffer (huge pages: far fewer page faults)."""
    if data.device.type != "cpu":
        return data.float()
    out = torch.from_numpy(np.empty(tuple(data.shape), np.float32))
    return out.copy_(data)


def _zero_padding(decoded: torch.Tensor, lengths: torch.Tensor) -> None:
    """Zero rows before each sample's last ``lengths[b]`` rows (touching only those rows)."""
    t = decoded.shape[1]
    if lengths.device.type == "cpu":  # no device sync: row ranges known on the host
        for b, n in enumerate(lengths.tolist()):
            if n < t:
                decoded[b, : t - n].zero_()
        return
    decoded.masked_fill_(pad_mask(t, lengths.to(decoded.device)).unsqueeze(-1), 0.0)


def pad_mask(t: int, lengths: torch.Tensor) -> torch.Tensor:
    """(B, t) bool, True on the left-padding rows (the device path: no host sync)."""
    return torch.arange(t, device=lengths.device).unsqueeze(0) < (t - lengths).unsqueeze(1)


def decode_sensor_batch(batch: Mapping[str, Any], device: torch.device | str | None = None) -> dict[str, Any]:
    """A shallow copy of ``batch`` with ``sensor_data`` float32 on ``device`` (scale/offset consumed).

    float32 ``sensor_data`` is only moved. int8 rows are ``q * scale + offset``; padding rows (before
    the last ``sensor_lengths[b]`` rows) are zeroed, as the float32 contract has them.
    """
    out = dict(batch)
    data = out.get("sensor_data")
    if data is None:
        return out
    data = data.to(device, non_blocking=True) if device is not None else data
    scale, offset = out.pop("sensor_scale", None), out.pop("sensor_offset", None)
    if data.dtype == torch.float32:
        out["sensor_data"] = data
        return out
    decoded = _float32_like(data)
    if scale is None:  # float16 (or int8 without codec: plain cast)
        out["sensor_data"] = decoded
        return out
    scale = scale.to(data.device, non_blocking=True).float().unsqueeze(1)
    offset = offset.to(data.device, non_blocking=True).float().unsqueeze(1)
    torch.addcmul(offset, decoded, scale, out=decoded)  # in place: one pass, one buffer
    lengths = out.get("sensor_lengths")
    if lengths is not None:
        _zero_padding(decoded, lengths)
    out["sensor_data"] = decoded
    return out


__all__ = ["SCALE_KEYS", "decode_sensor_batch"]
