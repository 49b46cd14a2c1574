"""Deterministic, sharded, resumable sample order.

Each epoch's order is a permutation seeded by ``(seed, epoch)`` alone, so it does not depend on how
much random state the run consumed before; process ``r`` of ``w`` takes every ``w``-th index. A resumed
run skips the samples it already consumed in the epoch without loading them.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ShardedEpochSampler(Sampler[int]):
    """Like ``DistributedSampler`` (equal-sized shards, drop the remainder) plus a start offset."""

    def __init__(self, num_samples: int, num_replicas: int = 1, rank: int = 0, seed: int = 0,
                 shuffle: bool = True, drop_last: bool = True) -> None:
        self.num_samples = num_samples
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's permutation and skip this process's first ``start`` samples of it."""
        self.epoch = epoch
        self.start = start

    def shard(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            order = list(range(self.num_samples))
        if self.drop_last:
            order = order[: len(order) - len(order) % self.num_replicas]
        return order[self.rank :: self.num_replicas]

    def __len__(self) -> int:
        return max(len(self.shard()) - self.start, 0)

    def __iter__(self) -> Iterator[int]:
        return iter(self.shard()[self.start :])
