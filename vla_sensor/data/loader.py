"""DataLoader construction: the contract's collate function, optional length buckets, workers."""

from __future__ import annotations

from typing import Any

from torch.utils.data import DataLoader, Dataset

from vla_sensor.data.collate import collate_samples
from vla_sensor.data.sampler import LengthBucketBatchSampler
from vla_sensor.data.sensor_gather import MainProcessSensorLoader, can_gather_in_main, deferring_copy


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
    gather_sensor_in_main: bool = True,
    **loader_kwargs: Any,
) -> DataLoader | MainProcessSensorLoader:
    """A DataLoader over ``dataset`` batching with :func:`collate_samples`.

    ``bucket_by_length`` groups samples of similar sensor length (adaptive / seconds windows) with
    :class:`LengthBucketBatchSampler` (``max_rows`` caps ``batch rows × T_max`` for dynamic batches).
    Workers map the mmap cache lazily in their own process (no copy of the cache per worker).

    ``gather_sensor_in_main`` (default): with workers and a ``stream``/``mmap`` cache, the workers send
    only window references and the main process fills ``sensor_data`` from the cache
    (:class:`~vla_sensor.data.sensor_gather.MainProcessSensorLoader`, same batches, bit-exact).
    """
    collate_fn = loader_kwargs.pop("collate_fn", collate_samples)
    gather = gather_sensor_in_main and can_gather_in_main(dataset, num_workers, collate_fn)
    source = deferring_copy(dataset) if gather else dataset
    if persistent_workers is None:
        persistent_workers = num_workers > 0
    common: dict[str, Any] = {
        "num_workers": num_workers,
        "collate_fn": collate_fn,
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
        loader = DataLoader(source, batch_sampler=sampler, **common)
    else:
        loader = DataLoader(source, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, **common)
    return MainProcessSensorLoader(loader, dataset) if gather else loader


def wrap_for_main_process_gather(
    dataset: Dataset, num_workers: int, collate_fn: Any, gather_sensor_in_main: bool, build: Any
) -> Any:
    """``build(dataset)`` (a DataLoader) wrapped for the main-process sensor gather when it applies.

    For callers that construct their own DataLoader (the training loop, the benchmark): ``build`` gets
    the workers' deferring copy of ``dataset`` when the gather applies, else ``dataset`` itself.
    """
    if not (gather_sensor_in_main and can_gather_in_main(dataset, num_workers, collate_fn)):
        return build(dataset)
    return MainProcessSensorLoader(build(deferring_copy(dataset)), dataset)
