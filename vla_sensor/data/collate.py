"""Batching samples into the batch contract of docs/ARCHITECTURE.md."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import get_worker_info

_NUMPY = {
    t: np.dtype(n)
    for t, n in [
        (torch.float32, "float32"), (torch.float16, "float16"), (torch.float64, "float64"), (torch.int8, "int8"),
        (torch.uint8, "uint8"), (torch.int32, "int32"), (torch.int64, "int64"), (torch.bool, "bool"),
    ]
}

# sample key -> batch key where they differ. ``sensor_window_ref`` (4,) int64 replaces ``sensor_data``
# in samples from workers when the main process gathers the windows (vla_sensor.data.loader):
# stacked to ``sensor_window_refs`` (B, 4), which the loader wrapper turns back into ``sensor_data``.
_RENAMES = {
    "sensor_length": "sensor_lengths",
    "has_sensor": "has_sensor_mask",
    "sensor_window_ref": "sensor_window_refs",
}
_CONCAT = ("pixel_values", "image_grid_thw")
_RIGHT_PAD = ("input_ids", "attention_mask")


def _empty(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """Uninitialized batch storage; in a DataLoader worker, directly in shared memory.

    In the main process the buffer comes from numpy, which advises huge pages for large arrays: a
    fresh 40 MB batch then costs about one memcpy, against several for 4 KiB page faults.

    A worker sends each batch to the main process through shared memory: allocating it there from
    the start (as torch's ``default_collate`` does) saves moving every byte a second time.
    """
    if get_worker_info() is None:
        try:  # numpy asks for transparent huge pages on large buffers: far fewer first-touch faults
            return torch.from_numpy(np.empty(tuple(shape), dtype=_NUMPY[dtype]))
        except KeyError:
            return torch.empty(tuple(shape), dtype=dtype)
    nbytes = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
    storage = torch.UntypedStorage._new_shared(nbytes)
    return torch.empty(0, dtype=dtype).set_(storage, 0, tuple(shape))


def _left_pad_sensor(windows: Sequence[torch.Tensor]) -> torch.Tensor:
    """(B, T_max, C) with each window's rows at the end (valid rows stay last).

    Only the padding rows are zeroed: zero-filling the whole batch first would write every byte twice.
    Keeps the windows' dtype (float16/int8 when they are decoded on the device).
    """
    windows = [torch.as_tensor(w) for w in windows]
    t_max = max(w.shape[0] for w in windows)
    out = _empty((len(windows), t_max, windows[0].shape[1]), windows[0].dtype)
    for b, w in enumerate(windows):
        pad = t_max - w.shape[0]
        if pad:
            out[b, :pad].zero_()
        if w.shape[0]:
            out[b, pad:].copy_(w)
    return out


def _stack(values: Sequence[torch.Tensor]) -> torch.Tensor:
    first = values[0]
    return torch.stack(list(values), out=_empty((len(values), *first.shape), first.dtype))


def _right_pad(seqs: Sequence[torch.Tensor], value: int = 0) -> torch.Tensor:
    seqs = [torch.as_tensor(s).reshape(-1) for s in seqs]
    n = max(s.shape[0] for s in seqs)
    out = torch.full((len(seqs), n), value, dtype=seqs[0].dtype)
    for b, s in enumerate(seqs):
        out[b, : s.shape[0]] = s
    return out


def collate_samples(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors, left-pad sensor windows, concat Qwen-VL pixel inputs, right-pad token ids."""
    if not samples:
        raise ValueError("collate_samples: expected at least one sample")
    batch: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        out_key = _RENAMES.get(key, key)
        if key == "sensor_data":
            batch[out_key] = _left_pad_sensor(values)
        elif key in _CONCAT:
            batch[out_key] = torch.cat([torch.as_tensor(v) for v in values], dim=0)
        elif key in _RIGHT_PAD:
            batch[out_key] = _right_pad(values, 0)
        elif isinstance(values[0], str):
            batch[out_key] = list(values)
        elif isinstance(values[0], bool):
            batch[out_key] = torch.tensor(values, dtype=torch.bool)
        elif isinstance(values[0], int):
            batch[out_key] = torch.tensor(values, dtype=torch.int64)
        elif isinstance(values[0], torch.Tensor):
            batch[out_key] = _stack(values)
        else:
            batch[out_key] = list(values)
    return batch
