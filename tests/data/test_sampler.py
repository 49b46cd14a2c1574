"""Chunk-shuffled batches (``data.sampling=chunks``): runs of consecutive samples of one trajectory,
every sample at most once per epoch, deterministic per (seed, epoch), disjoint across ranks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from vla_sensor.data.config import data_config
from vla_sensor.data.loader import make_batch_sampler
from vla_sensor.data.sampler import ChunkedBatchSampler, ShardedBatchSampler

TRAJ = np.repeat(np.arange(4), [23, 9, 40, 17])  # sample -> trajectory, trajectories contiguous


def _runs(batch: list[int]) -> int:
    """Stretches of consecutive indices of one trajectory in a batch."""
    return 1 + sum(1 for a, b in itertools.pairwise(batch) if b != a + 1 or TRAJ[a] != TRAJ[b])


@pytest.mark.parametrize("drop_last", [True, False])
def test_chunks_are_consecutive_runs_and_each_sample_comes_once(drop_last: bool) -> None:
    s = ChunkedBatchSampler(TRAJ, batch_size=8, chunk_size=8, seed=3, drop_last=drop_last)
    batches = list(s)
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat))
    assert len(batches) == len(s)
    if drop_last:
        assert all(len(b) == 8 for b in batches) and len(flat) > len(TRAJ) - 8 * 5
    else:
        assert sorted(flat) == list(range(len(TRAJ)))
    # a batch of 8 spans at most a few runs (a full shuffle gives ~8)
    assert np.mean([_runs(b) for b in batches]) <= 3.0
    full = list(ShardedBatchSampler(len(TRAJ), 8, seed=3))
    assert np.mean([_runs(b) for b in full]) > 6.0


def test_order_depends_on_seed_and_epoch_only() -> None:
    a, b = ChunkedBatchSampler(TRAJ, 4, 6, seed=1), ChunkedBatchSampler(TRAJ, 4, 6, seed=1)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)  # runs re-cut and re-shuffled every epoch
    assert list(ChunkedBatchSampler(TRAJ, 4, 6, seed=2)) != list(b)


def test_ranks_take_disjoint_equal_shares() -> None:
    ranks = [ChunkedBatchSampler(TRAJ, 4, 4, num_replicas=3, rank=r, seed=5) for r in range(3)]
    shares = [[i for batch in r for i in batch] for r in ranks]
    assert len({len(s) for s in shares}) == 1
    assert not set(shares[0]) & set(shares[1]) and not set(shares[1]) & set(shares[2])


def test_the_loader_builds_it_from_the_data_config() -> None:
    class Data:
        sample_traj = TRAJ

        def __len__(self) -> int:
            return len(TRAJ)

    data = data_config(sampling="chunks", batch_size=8)
    s = make_batch_sampler(Data(), data, shuffle=True, drop_last=True)
    assert isinstance(s, ChunkedBatchSampler) and s.chunk_size == 8  # chunk_size null: the batch size
    assert isinstance(make_batch_sampler(Data(), data_config(sampling="chunks", chunk_size=3, batch_size=8),
                                         shuffle=False, drop_last=False), ShardedBatchSampler)  # eval: in order
    with pytest.raises(ValueError, match="sampling"):
        data_config(sampling="sorted")
