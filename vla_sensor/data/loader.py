"""DataLoader construction: the contract's collate function, optional length buckets, workers."""

from __future__ import annotations

from typing import Any

from torch.utils.data import DataLoader, Dataset

from vla_sensor.data.collate import collate_samples
from vla_sensor.data.sampler import LengthBucketBatchSampler


def make_dataloader(
    dataset: Dataset,
    batch_size: int = 16,
    num_workers: int = 0,
    shuffle: bool = True,
    *,
    bucket_by_length: bool = False,
    max_rows: int | None = None,
    seed: int = 0,
    drop_last: bool = False,
    num_replicas: int = 1,
    rank: int = 0,
    pin_memory: bool = False,
    persistent_workers: bool | None = None,
    **loader_kwargs: Any,
) -> DataLoader:
    """A DataLoader over ``dataset`` batching with :func:`collate_samples`.

    ``bucket_by_length`` groups samples of similar sensor length (adaptive / seconds windows) with
    :class:`LengthBucketBatchSampler` (``max_rows`` caps ``batch rows × T_max`` for dynamic batches).
    Workers map the mmap cache lazily in their own process (no copy of the cache per worker).
    """
    if persistent_workers is None:
        persistent_workers = num_workers > 0
    common: dict[str, Any] = {
        "num_workers": num_workers,
        "collate_fn": collate_samples,
        "pin_memory": pin_memory,
        "persistent_workers": persistent_workers and num_workers > 0,
        **loader_kwargs,
    }
    if bucket_by_length:
        sampler = LengthBucketBatchSampler(
            dataset.sensor_lengths(),  # type: ignore[attr-defined]
            batch_size,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
            num_replicas=num_replicas,
            rank=rank,
            max_rows=max_rows,
        )
        return DataLoader(dataset, batch_sampler=sampler, **common)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, **common)
