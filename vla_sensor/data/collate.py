"""Batching samples into the batch contract of docs/ARCHITECTURE.md."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

# sample key -> batch key where they differ
_RENAMES = {"sensor_length": "sensor_lengths", "has_sensor": "has_sensor_mask"}
_CONCAT = ("pixel_values", "image_grid_thw")
_RIGHT_PAD = ("input_ids", "attention_mask")


def _left_pad_sensor(windows: Sequence[torch.Tensor]) -> torch.Tensor:
    """(B, T_max, C) with each window's rows at the end (valid rows stay last)."""
    t_max = max(w.shape[0] for w in windows)
    c = windows[0].shape[1]
    out = torch.zeros((len(windows), t_max, c), dtype=torch.float32)
    for b, w in enumerate(windows):
        if w.shape[0]:
            out[b, t_max - w.shape[0] :] = torch.as_tensor(w)
    return out


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
            batch[out_key] = torch.stack(values)
        else:
            batch[out_key] = list(values)
    return batch
