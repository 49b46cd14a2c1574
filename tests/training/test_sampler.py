"""Batch order: deterministic per (seed, epoch), disjoint shards, resumable by skipping batches."""

from __future__ import annotations

import itertools

from vla_sensor.training.sampler import EndlessBatches, ShardedBatchSampler


def test_shards_are_disjoint_equal_and_reshuffled_per_epoch():
    ranks = [ShardedBatchSampler(103, 4, num_replicas=3, rank=r, seed=7) for r in range(3)]
    epoch0 = [[i for b in s for i in b] for s in ranks]
    assert len({len(b) for b in epoch0}) == 1 and len(epoch0[0]) == 32  # 34 per rank, 8 full batches
    assert not set(epoch0[0]) & set(epoch0[1]) and not set(epoch0[1]) & set(epoch0[2])
    assert [i for b in ShardedBatchSampler(103, 4, 3, 0, seed=7) for i in b] == epoch0[0]  # no hidden state
    ranks[0].set_epoch(1)
    assert [i for b in ranks[0] for i in b] != epoch0[0]


def test_endless_batches_cross_epochs_and_resume_mid_epoch():
    inner = ShardedBatchSampler(50, 5, seed=1)
    epoch0, epoch1 = list(inner), None
    inner.set_epoch(1)
    epoch1 = list(inner)
    stream = EndlessBatches(ShardedBatchSampler(50, 5, seed=1))
    assert list(itertools.islice(stream, 20)) == epoch0 + epoch1
    resumed = EndlessBatches(ShardedBatchSampler(50, 5, seed=1), epoch=0, skip=3)
    assert list(itertools.islice(resumed, 17)) == epoch0[3:] + epoch1
    assert stream.epoch_length(5) == 10


def test_validation_batches_keep_every_sample():
    val = [ShardedBatchSampler(10, 3, 2, r, shuffle=False, drop_last=False) for r in range(2)]
    assert sorted(i for s in val for b in s for i in b) == list(range(10))
