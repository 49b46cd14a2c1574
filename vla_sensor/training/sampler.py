"""Deterministic, sharded, resumable batch order.

Each epoch's order depends on ``(seed, epoch)`` alone, not on how much random state the run consumed
before, and process ``r`` of ``w`` takes its own share. A resumed run skips the batches it already
consumed in the epoch by index, without loading them.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator

from torch.utils.data import Sampler

from vla_sensor.data.sampler import ShardedBatchSampler

__all__ = ["EndlessBatches", "ShardedBatchSampler"]


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
