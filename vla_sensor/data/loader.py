"""The one DataLoader builder: training, validation, evaluation, the benchmark and the Python helper.

:func:`build_loader` turns a dataset and the ``data`` config into a :class:`BatchLoader`. Every
loader shards itself: its batch sampler gives process ``rank`` of ``num_replicas`` its own disjoint
share (the whole split across processes, each sample once, when ``drop_last`` is off), so it is
never passed through ``accelerator.prepare``.

With DataLoader workers and a cache every process can read (``stream``/``mmap``), the workers send
each sample's window reference instead of the (T, C) window, and the main process copies the
batch's windows straight from the cache into one buffer (:meth:`SensorCache.gather`). Shipping a
43.6 MB float32 batch through a new shared-memory segment costs about ten times that copy. The
batches are the same either way, bit for bit.

The gather runs on a small thread pool (``data.gather_threads``), several windows in flight (for
``mmap``: positional reads of about the window's bytes each, so a dataset larger than memory reads
what it needs from disk and not the kernel's read-ahead), and is issued for the next batch before the
current one is handed out, so its reads overlap the training step.

With ``pin_memory`` on a machine with CUDA every batch lands in page-locked memory, the windows the
main process gathered included, so its host-to-device copy (``non_blocking=True``) runs
asynchronously. Without CUDA the flag changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from vla_sensor.data.collate import collate_samples
from vla_sensor.data.config import data_config
from vla_sensor.data.sampler import (
    ChunkedBatchSampler,
    EpochBatchSampler,
    LengthBucketBatchSampler,
    ShardedBatchSampler,
)
from vla_sensor.data.worker_signals import ignore_stop_signals, stop_signals_held

REFS_KEY = "sensor_window_refs"


def make_batch_sampler(
    dataset: Dataset, data: Any, *, shuffle: bool, drop_last: bool, num_replicas: int = 1, rank: int = 0
) -> EpochBatchSampler:
    """Sharded fixed-size batches, or length buckets (``data.bucket_by_length``) for variable windows, or
    (``data.sampling=chunks``) shuffled runs of ``data.chunk_size`` consecutive samples of one trajectory."""
    if data.bucket_by_length:
        return LengthBucketBatchSampler(
            dataset.sensor_lengths(),  # type: ignore[attr-defined]
            int(data.batch_size), shuffle=shuffle, seed=int(data.seed), drop_last=drop_last,
            num_replicas=num_replicas, rank=rank, max_rows=data.max_rows,
        )
    if shuffle and getattr(data.sampling, "value", data.sampling) == "chunks":
        return ChunkedBatchSampler(dataset.sample_traj, int(data.batch_size), int(data.chunk_size or data.batch_size),  # type: ignore[attr-defined]
                                   num_replicas, rank, seed=int(data.seed), drop_last=drop_last)
    return ShardedBatchSampler(len(dataset), int(data.batch_size), num_replicas, rank, seed=int(data.seed),  # type: ignore[arg-type]
                               shuffle=shuffle, drop_last=drop_last)


def build_loader(
    dataset: Dataset,
    data: Any = None,
    *,
    shuffle: bool,
    drop_last: bool = False,
    num_replicas: int = 1,
    rank: int = 0,
    pin_memory: bool = False,
    batches: Iterable[list[int]] | None = None,
    collate_fn: Callable[[list[Any]], Any] = collate_samples,
    **overrides: Any,
) -> BatchLoader:
    """Batches of ``dataset`` as configured by ``data`` (batch size, workers, buckets, seed, gather).

    ``data``: the ``data`` config (None: the dataset's own); ``overrides``: fields of it by name, e.g.
    ``build_loader(ds, shuffle=True, batch_size=16, num_workers=4)``. ``batches`` replaces the sampler
    (the training loop's endless, resumable order).
    """
    if data is None or overrides:
        data = data_config(data if data is not None else dataset.config, **overrides)  # type: ignore[attr-defined]
    if batches is None:
        batches = make_batch_sampler(dataset, data, shuffle=shuffle, drop_last=drop_last,
                                     num_replicas=num_replicas, rank=rank)
    return BatchLoader(dataset, batches, num_workers=int(data.num_workers), seed=int(data.seed),
                       pin_memory=pin_memory, gather_in_main=bool(data.gather_sensor_in_main), collate_fn=collate_fn,
                       gather_threads=int(data.gather_threads))


def gathers_in_main(dataset: Dataset, num_workers: int, collate_fn: Any = collate_samples) -> bool:
    """Whether batches of ``dataset`` can carry window references (workers, a shared cache, our collate)."""
    cache = getattr(dataset, "cache", None)
    return num_workers > 0 and bool(getattr(cache, "shared_across_processes", False)) and collate_fn is collate_samples


class _WindowRefSamples(Dataset):
    """What the workers load when the main process gathers: samples with window references."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        return self.dataset.sample(idx, window_ref=True)


class BatchLoader:
    """A DataLoader over ``batches`` (index lists), filling sensor windows in this process when it pays."""

    def __init__(
        self,
        dataset: Dataset,
        batches: Iterable[list[int]],
        *,
        num_workers: int = 0,
        seed: int = 0,
        pin_memory: bool = False,
        gather_in_main: bool = True,
        collate_fn: Callable[[list[Any]], Any] = collate_samples,
        gather_threads: int = 0,
    ) -> None:
        self.dataset = dataset
        self.gather_threads = gather_threads
        self._pool: ThreadPoolExecutor | None = None
        self.batch_sampler = batches
        self.num_workers = num_workers
        self.gathers = gather_in_main and gathers_in_main(dataset, num_workers, collate_fn)
        self.pin = bool(pin_memory) and torch.cuda.is_available()  # page-locked memory only helps CUDA copies
        self.loader = DataLoader(
            _WindowRefSamples(dataset) if self.gathers else dataset,
            batch_sampler=batches,  # type: ignore[arg-type]
            num_workers=num_workers,
            collate_fn=collate_fn,
            pin_memory=self.pin,
            persistent_workers=num_workers > 0,
            prefetch_factor=4 if num_workers > 0 else None,
            # Worker seeds come from this generator, not from the global RNG, so iterating the loader never
            # perturbs the model's random stream (a resumed run stays on the straight run's trajectory).
            generator=torch.Generator().manual_seed(seed),
            worker_init_fn=ignore_stop_signals if num_workers > 0 else None,  # stop signals are the trainer's
        )

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> BatchIterator:
        with stop_signals_held():  # workers start here and must not run this process's handlers
            self._last = BatchIterator(iter(self.loader), self._start_fill if self.gathers else None)
        return self._last

    def close(self) -> None:
        """Stop the (persistent) workers and the gather threads now rather than at garbage collection."""
        last = getattr(self, "_last", None)
        if last is not None:
            last.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _threads(self) -> ThreadPoolExecutor | None:
        if self.gather_threads > 0 and self._pool is None:
            self._pool = ThreadPoolExecutor(self.gather_threads, thread_name_prefix="sensor-gather")
        return self._pool

    def _start_fill(self, batch: Mapping[str, Any]) -> Callable[[], dict[str, Any]]:
        """Start copying ``batch``'s windows from the cache; the returned function waits and gives the batch
        with its window references replaced by the windows."""
        cache = self.dataset.cache  # type: ignore[attr-defined]
        pending = cache.start_gather(batch[REFS_KEY].numpy(), stored=self.dataset.decode_on_device,  # type: ignore[attr-defined]
                                     pool=self._threads())

        def finish() -> dict[str, Any]:
            data, scale, offset = pending()
            out = {("sensor_data" if k == REFS_KEY else k): (torch.from_numpy(data) if k == REFS_KEY else v)
                   for k, v in batch.items()}
            if scale is not None:
                out["sensor_scale"], out["sensor_offset"] = torch.from_numpy(scale), torch.from_numpy(offset)
            if self.pin:  # the DataLoader pinned what the workers sent; the gathered buffers are new
                for key in ("sensor_data", "sensor_scale", "sensor_offset"):
                    if key in out:
                        out[key] = out[key].pin_memory()
            return out

        return finish


class BatchIterator:
    """One pass over a :class:`BatchLoader`; :meth:`close` stops its workers now (not at garbage collection).

    With a gather, batch ``i + 1``'s copies are issued before batch ``i`` is returned (one batch ahead).
    """

    def __init__(self, iterator: Iterator[Any], start_fill: Callable[[Any], Callable[[], Any]] | None) -> None:
        self._it = iterator
        self._start = start_fill
        self._pending: Callable[[], Any] | None = None
        self._error: BaseException | None = None
        self._done = False

    def __iter__(self) -> BatchIterator:
        return self

    def _issue(self) -> None:
        """Fetch the next batch of references and start its gather (an error is raised when it is due)."""
        try:
            self._pending = self._start(next(self._it))  # type: ignore[misc]
        except StopIteration:
            self._done = True
        except Exception as exc:  # a worker's error: raised at the batch it belongs to
            self._error = exc

    def __next__(self) -> Any:
        if self._start is None:
            return next(self._it)
        if self._pending is None and self._error is None and not self._done:
            self._issue()
        if self._pending is None:
            error, self._error = self._error, None
            if error is not None:
                raise error
            raise StopIteration
        current, self._pending = self._pending, None
        if not self._done:
            self._issue()
        return current()

    def close(self) -> None:
        shutdown = getattr(self._it, "_shutdown_workers", None)  # torch's multi-process iterator
        if shutdown is not None:
            shutdown()
