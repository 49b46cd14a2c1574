"""Sensor windows gathered in the main process instead of shipped through DataLoader worker IPC.

With the ``stream`` / ``mmap`` caches every process can read the sensor streams directly (``mmap``:
the same page cache), so a worker sending a batch's (B, T, C) windows to the main process through a
new shared-memory segment only adds work: about 30 ms for a 43.6 MB float32 batch, ten times the copy
itself. In this mode the workers return each sample's window reference (``sensor_window_ref``:
trajectory, start row, end row, window rows; collated to ``sensor_window_refs`` (B, 4) int64) and
:class:`MainProcessSensorLoader` fills ``sensor_data`` (and, with ``decode_on_device`` on int8,
``sensor_scale``/``sensor_offset``) from the cache as each batch arrives. Downstream code sees the
same batch as without it: same keys in the same order, dtypes and values (bit-exact).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

from vla_sensor.data.cache import CacheStrategy
from vla_sensor.data.storage import STORAGE_NP

REF_KEY = "sensor_window_ref"
REFS_KEY = "sensor_window_refs"
_DEFER_STRATEGIES = (CacheStrategy.stream, CacheStrategy.mmap)


def can_gather_in_main(dataset: Any, num_workers: int, collate_fn: Any = None) -> bool:
    """Whether batches of ``dataset`` can carry window references instead of windows.

    Needs workers (in-process loading has no IPC to save), a ``stream``/``mmap`` sensor cache, the
    contract's collate function, and no ``sample_transform`` unless it declares
    ``reads_sensor_data = False`` (as the model's Qwen-VL pre-processing does): another transform
    might read or change ``sensor_data``, which the workers then no longer have.
    """
    from vla_sensor.data.collate import collate_samples
    from vla_sensor.data.dataset import InsertionDataset

    return (
        num_workers > 0
        and isinstance(dataset, InsertionDataset)
        and dataset.strategy in _DEFER_STRATEGIES
        and (dataset.sample_transform is None or getattr(dataset.sample_transform, "reads_sensor_data", True) is False)
        and (collate_fn is None or collate_fn is collate_samples)
    )


def deferring_copy(dataset: Any) -> Any:
    """A shallow copy of ``dataset`` whose workers return window references (the cache is shared)."""
    worker_ds = copy.copy(dataset)
    worker_ds.defer_sensor_to_main = True
    return worker_ds


def window_ref(dataset: Any, idx: int) -> torch.Tensor:
    """Sample ``idx``'s window reference: (trajectory, start row, end row, window rows) int64."""
    cache = dataset.cache
    k = int(cache.sample_traj[idx])
    start, end = int(cache.starts[idx]), int(cache.ends[idx])
    fixed = cache.spec.fixed_length
    if not cache.has_sensor[k]:
        start = end = 0
        rows = fixed or 1
    else:
        rows = max(fixed or 0, end - start)
    return torch.tensor([k, start, end, rows], dtype=torch.int64)


def gather_sensor(dataset: Any, batch: Mapping[str, Any]) -> dict[str, Any]:
    """``batch`` with ``sensor_window_refs`` replaced by ``sensor_data`` read from ``dataset``'s cache.

    One (B, T_max, C) buffer per batch (numpy: huge pages), each window copied (float32: decoded) into
    its last rows, only the padding rows zeroed; the storage dtype plus int8 ``sensor_scale`` /
    ``sensor_offset`` (B, C) when ``dataset.decode_on_device``. A batch without refs is returned as is.
    """
    if REFS_KEY not in batch:
        return dict(batch)
    cache = dataset.cache
    refs = batch[REFS_KEY].numpy()
    stored = bool(dataset.decode_on_device)
    b_size, t_max, channels = refs.shape[0], int(refs[:, 3].max()), int(cache.channels)
    data = np.empty((b_size, t_max, channels), STORAGE_NP[cache.dtype] if stored else np.float32)
    int8_codec = stored and cache.dtype.value == "int8"
    scales = np.empty((b_size, channels), np.float32) if int8_codec else None
    offsets = np.empty((b_size, channels), np.float32) if int8_codec else None
    for b, (k, start, end, _) in enumerate(refs.tolist()):
        n = end - start
        if n < t_max:
            data[b, : t_max - n] = 0
        if not cache.has_sensor[k]:
            if int8_codec:
                scales[b], offsets[b] = 1.0, 0.0  # type: ignore[index]
            continue
        if stored:
            enc, scale, offset = cache._encoded(k)
            if n:
                data[b, t_max - n :] = enc[start:end]
            if int8_codec:
                scales[b], offsets[b] = scale, offset  # type: ignore[index]
        elif n:
            cache._rows(k, start, end, data[b, t_max - n :])
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if key == REFS_KEY:
            out["sensor_data"] = torch.from_numpy(data)
        else:
            out[key] = value
    if int8_codec:
        out["sensor_scale"] = torch.from_numpy(scales)
        out["sensor_offset"] = torch.from_numpy(offsets)
    return out


class _GatheringIterator:
    """The DataLoader iterator's batches with ``sensor_data`` filled in; other attributes forwarded."""

    def __init__(self, iterator: Iterator[Any], dataset: Any) -> None:
        self._it = iterator
        self._dataset = dataset

    def __iter__(self) -> _GatheringIterator:
        return self

    def __next__(self) -> Any:
        return gather_sensor(self._dataset, next(self._it))

    def __getattr__(self, name: str) -> Any:  # e.g. _shutdown_workers
        return getattr(self._it, name)


class MainProcessSensorLoader:
    """A DataLoader whose workers return window references; ``sensor_data`` is filled here.

    Built by :func:`vla_sensor.data.loader.make_dataloader` (and the training loop) when
    :func:`can_gather_in_main` holds; iterates like the DataLoader it wraps (``loader``) and forwards
    its attributes (``batch_sampler``, ``batch_size``, ``num_workers``...). ``dataset`` is the dataset
    given, not the workers' shallow copy.
    """

    def __init__(self, loader: Any, dataset: Any) -> None:
        self.loader = loader
        self.dataset = dataset

    def __iter__(self) -> _GatheringIterator:
        return _GatheringIterator(iter(self.loader), self.loader.dataset)

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        if name == "loader":  # not set yet (e.g. during unpickling)
            raise AttributeError(name)
        return getattr(self.loader, name)


__all__ = [
    "REFS_KEY",
    "REF_KEY",
    "MainProcessSensorLoader",
    "can_gather_in_main",
    "deferring_copy",
    "gather_sensor",
    "window_ref",
]
