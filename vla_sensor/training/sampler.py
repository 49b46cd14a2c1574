"""Deterministic, sharded, resumable batch order.

Each epoch's order depends on ``(seed, epoch)`` alone, not on how much random state the run consumed
before, and process ``r`` of ``w`` takes its own share. A resumed run skips the batches it already
consumed in the epoch by index, without loading them.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ShardedBatchSampler(Sampler[list[int]]):
    """Like ``DistributedSampler`` + ``BatchSampler``: a per-epoch permutation, equal shards, batches."""

    def __init__(self, num_samples: int, batch_size: int, num_replicas: int = 1, rank: int = 0, seed: int = 0,
                 shuffle: bool = True, drop_last: bool = True) -> None:
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def shard(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            order = list(range(self.num_samples))
        if self.drop_last:  # equal shards, so every process runs the same number of steps
            order = order[: len(order) - len(order) % self.num_replicas]
        return order[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[list[int]]:
        shard = self.shard()
        stop = len(shard) - len(shard) % self.batch_size if self.drop_last else len(shard)
        return (shard[i : i + self.batch_size] for i in range(0, stop, self.batch_size))

    def __len__(self) -> int:
        n = len(self.shard())
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


class EndlessBatches(Sampler[list[int]]):
    """Epoch after epoch of a batch sampler that has ``set_epoch``, from a given position, without end.

    One DataLoader iterator then lives for the whole run, so its workers keep prefetching across epoch
    boundaries instead of restarting cold at every epoch.
    """

    def __init__(self, batch_sampler, epoch: int = 0, skip: int = 0) -> None:
        self.batch_sampler = batch_sampler
        self.epoch = epoch
        self.skip = skip

    def epoch_length(self, epoch: int) -> int:
        """Batches in ``epoch`` (fixed for plain batches; bucketing with ``max_rows`` varies per epoch)."""
        probe = copy.copy(self.batch_sampler)
        probe.set_epoch(epoch)
        return len(probe)

    def __iter__(self) -> Iterator[list[int]]:
        epoch, skip = self.epoch, self.skip
        while True:
            sampler = copy.copy(self.batch_sampler)
            sampler.set_epoch(epoch)
            yield from itertools.islice(iter(sampler), skip, None)
            epoch, skip = epoch + 1, 0
