"""Length-bucketed batches for variable-length sensor windows (adaptive / seconds modes).

Padding a batch to its longest window wastes encoder work; grouping similar lengths keeps
``T_max`` close to every sample's length. Deterministic per ``seed + epoch``; DDP-aware: every rank
gets the same number of batches (short ranks repeat batches), so collective ops never hang.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


class LengthBucketBatchSampler(Sampler[list[int]]):
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
        if batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer, got {batch_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank: expected 0 <= rank < num_replicas={num_replicas}, got {rank}")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.num_replicas = num_replicas
        self.rank = rank
        self.pool_batches = pool_batches
        self.max_rows = max_rows
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for ``epoch`` (call before each epoch, like DistributedSampler)."""
        self.epoch = epoch

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
