"""Batch samplers: sharded fixed-size batches, length-bucketed ones for variable-length windows, and
shuffled runs of consecutive samples (locality when the cache does not fit in memory).

For length buckets (adaptive / seconds modes): padding a batch to its longest window wastes encoder work; grouping similar lengths keeps
``T_max`` close to every sample's length. Deterministic per ``seed + epoch``; DDP-aware: every rank
gets the same number of batches (short ranks repeat batches), so collective ops never hang.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler


class EpochBatchSampler(Sampler[list[int]]):
    """Base of the batch samplers: order fixed by ``(seed, epoch)`` alone, ``rank`` of ``num_replicas``.

    Nothing else feeds the order, so a resumed run rebuilds exactly the batches it had left.
    """

    def __init__(self, batch_size: int, *, shuffle: bool, seed: int, drop_last: bool, num_replicas: int,
                 rank: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer, got {batch_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank: expected 0 <= rank < num_replicas={num_replicas}, got {rank}")
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for ``epoch`` (call before each epoch, like DistributedSampler)."""
        self.epoch = epoch


class ShardedBatchSampler(EpochBatchSampler):
    """Like ``DistributedSampler`` + ``BatchSampler``: a per-epoch permutation, equal shards, batches."""

    def __init__(self, num_samples: int, batch_size: int, num_replicas: int = 1, rank: int = 0, seed: int = 0,
                 shuffle: bool = True, drop_last: bool = True) -> None:
        super().__init__(batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last,
                         num_replicas=num_replicas, rank=rank)
        self.num_samples = num_samples

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


class LengthBucketBatchSampler(EpochBatchSampler):
    """Batches of indices with similar ``lengths``.

    Indices are shuffled, cut into pools of ``batch_size * pool_batches``, sorted by length inside a
    pool and cut into batches; batch order is shuffled again. With ``max_rows``, a batch also closes
    once ``len(batch) * max_length_in_batch`` would exceed it (dynamic batch size).
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        num_replicas: int = 1,
        rank: int = 0,
        pool_batches: int = 50,
        max_rows: int | None = None,
    ) -> None:
        super().__init__(batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last,
                         num_replicas=num_replicas, rank=rank)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.pool_batches = pool_batches
        self.max_rows = max_rows

    def _all_batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        n = len(self.lengths)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        pool = self.batch_size * self.pool_batches
        batches: list[list[int]] = []
        for p in range(0, n, pool):
            chunk = order[p : p + pool]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batch: list[int] = []
            longest = 0
            for i in chunk.tolist():
                longest_new = max(longest, int(self.lengths[i]), 1)
                full = len(batch) >= self.batch_size or (
                    self.max_rows is not None and batch and (len(batch) + 1) * longest_new > self.max_rows
                )
                if full:
                    batches.append(batch)
                    batch, longest_new = [], max(int(self.lengths[i]), 1)
                batch.append(i)
                longest = longest_new
            if batch:
                batches.append(batch)
        if self.drop_last and self.max_rows is None:
            batches = [b for b in batches if len(b) == self.batch_size]
        if self.shuffle:
            batches = [batches[j] for j in rng.permutation(len(batches))]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._all_batches()
        if not batches:
            return iter([])
        per_rank = math.ceil(len(batches) / self.num_replicas)
        padded = batches + batches[: per_rank * self.num_replicas - len(batches)]
        return iter(padded[self.rank :: self.num_replicas])

    def __len__(self) -> int:
        return math.ceil(len(self._all_batches()) / self.num_replicas)


class ChunkedBatchSampler(EpochBatchSampler):
    """Shuffled runs of consecutive samples: locality for a cache larger than memory.

    Each epoch every trajectory's samples are cut into runs of ``chunk_size`` consecutive steps (from a
    random first cut, so runs differ between epochs), the runs of all trajectories are shuffled and
    concatenated, and the result is cut into batches; batch ``j`` goes to rank ``j % num_replicas``. A
    batch then reads a few contiguous stretches of the cache instead of ``batch_size`` scattered windows.
    Neighbouring samples of a batch are correlated, which is the trade against full shuffling.
    """

    def __init__(self, sample_traj: Sequence[int] | np.ndarray, batch_size: int, chunk_size: int,
                 num_replicas: int = 1, rank: int = 0, seed: int = 0, drop_last: bool = True) -> None:
        super().__init__(batch_size, shuffle=True, seed=seed, drop_last=drop_last, num_replicas=num_replicas,
                         rank=rank)
        if chunk_size < 1:
            raise ValueError(f"chunk_size: expected a positive integer, got {chunk_size}")
        self.sample_traj = np.asarray(sample_traj)
        self.chunk_size = chunk_size
        bounds = np.flatnonzero(np.diff(self.sample_traj)) + 1
        self._spans = list(zip([0, *bounds.tolist()], [*bounds.tolist(), len(self.sample_traj)]))

    def _all_batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        runs = []
        for a, b in self._spans:
            cut = a + int(rng.integers(0, min(self.chunk_size, b - a)))  # first run may be shorter
            edges = [a, *range(cut if cut > a else a + self.chunk_size, b, self.chunk_size), b]
            runs += [(s, e) for s, e in itertools.pairwise(edges) if e > s]
        shuffled = [runs[j] for j in rng.permutation(len(runs))]
        order = np.concatenate([np.arange(s, e) for s, e in shuffled]) if runs else np.zeros(0, np.int64)
        batches = [order[i : i + self.batch_size].tolist() for i in range(0, len(order), self.batch_size)]
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
            return batches[: len(batches) - len(batches) % self.num_replicas]
        per_rank = math.ceil(len(batches) / self.num_replicas)
        return batches + batches[: per_rank * self.num_replicas - len(batches)]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._all_batches()[self.rank :: self.num_replicas])

    def __len__(self) -> int:
        return len(self._all_batches()) // self.num_replicas
