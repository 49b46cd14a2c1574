"""Samples and batches follow docs/ARCHITECTURE.md; DataLoader workers; collate; length buckets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vla_sensor import InsertionDataset, create_integrated_dataloader, insertionMeca500DatasetWithSensor
from vla_sensor.data.collate import collate_samples
from vla_sensor.data.format import TrajectoryReader
from vla_sensor.data.sampler import LengthBucketBatchSampler


def test_sample_keys_shapes_and_action_padding(small_dirs: list[Path], cache_dir: Path) -> None:
    ds = insertionMeca500DatasetWithSensor(
        trajectory_dir=str(small_dirs[1]), horizon=8, instruction=None, sensor_window_size=100,
        view_selection=["oak", "left"], cache_sensor_windows=True, image_size=(28, 56), cache_dir=cache_dir,
        progress=False,
    )
    assert ds.strategy.value == "mmap" and len(ds) == 15
    traj = TrajectoryReader().read(small_dirs[1])
    s = ds[12]
    assert set(s) == {"images", "actions", "action_is_pad", "sensor_data", "sensor_length", "has_sensor",
                      "instruction", "trajectory_index", "step_index"}
    assert s["images"].dtype == torch.uint8 and s["images"].shape == (2, 3, 28, 56)
    assert s["actions"].shape == (8, 7) and s["actions"].dtype == torch.float32
    np.testing.assert_array_equal(s["actions"][:3], traj.actions[12:15])
    np.testing.assert_array_equal(s["actions"][3:], np.repeat(traj.actions[14:], 5, 0))
    assert s["action_is_pad"].tolist() == [False] * 3 + [True] * 5
    assert s["sensor_data"].shape == (100, 1026) and s["sensor_length"] == 100 and s["has_sensor"]
    assert s["instruction"] == traj.instruction and s["step_index"] == 12 and s["trajectory_index"] == 0
    first = ds[0]  # the window at the trajectory's start is left-padded; the length is honest
    n = first["sensor_length"]
    assert 0 < n < 100 and not first["sensor_data"][: 100 - n].any() and first["sensor_data"][-1].any()
    # view order follows view_selection
    ref = InsertionDataset(small_dirs[1], view_selection=["left"], image_size=(28, 56), cache_sensor_windows=False,
                           progress=False)
    assert torch.equal(ref[12]["images"][0], s["images"][1])


def test_trajectory_without_sensor_gives_zeros(small_dirs: list[Path], cache_dir: Path) -> None:
    ds = InsertionDataset(small_dirs[3], sensor_window_size=50, cache_dir=cache_dir, progress=False)
    s = ds[4]
    assert not s["has_sensor"] and s["sensor_length"] == 0
    assert s["sensor_data"].shape == (50, 1026) and not s["sensor_data"].any()
    assert ds.cache_nbytes == 0 and ds.raw_sensor_nbytes == 0


def test_dataloader_workers_mix_sensor_and_sensorless_dirs(small_dirs: list[Path], cache_dir: Path) -> None:
    loader = create_integrated_dataloader(
        trajectory_dirs=small_dirs, batch_size=6, num_workers=2, shuffle=False, sensor_window_size=64,
        image_size=(28, 28), cache_dir=cache_dir, progress=False,
    )
    ds = loader.dataset
    seen = 0
    for batch in loader:
        b = batch["images"].shape[0]
        assert batch["sensor_data"].shape == (b, 64, 1026) and batch["sensor_lengths"].dtype == torch.int64
        for j in range(b):
            i = seen + j
            w, n = ds.sensor_window(i)
            assert torch.equal(batch["sensor_data"][j], torch.from_numpy(w))
            assert batch["has_sensor_mask"][j].item() == (ds.sample_traj[i] != 3)
            assert batch["sensor_lengths"][j].item() == n
        seen += b
    assert seen == len(ds) == 60


def test_collate_pads_per_the_contract() -> None:
    def sample(t: int, tokens: int, patches: int) -> dict:
        return {
            "sensor_data": torch.arange(t * 2, dtype=torch.float32).reshape(t, 2) + 1,
            "sensor_length": t, "has_sensor": t > 0, "instruction": f"go {t}", "step_index": t,
            "actions": torch.zeros(4, 3), "action_is_pad": torch.zeros(4, dtype=torch.bool),
            "pixel_values": torch.ones(patches, 5), "image_grid_thw": torch.tensor([[1, 2, patches // 2]]),
            "input_ids": torch.arange(1, tokens + 1), "attention_mask": torch.ones(tokens, dtype=torch.long),
        }

    batch = collate_samples([sample(3, 2, 4), sample(1, 5, 6)])
    sd = batch["sensor_data"]
    assert sd.shape == (2, 3, 2) and torch.equal(sd[1, :2], torch.zeros(2, 2)) and torch.equal(sd[1, 2], torch.tensor([1.0, 2.0]))
    assert batch["sensor_lengths"].tolist() == [3, 1] and batch["has_sensor_mask"].dtype == torch.bool
    assert batch["pixel_values"].shape == (10, 5) and batch["image_grid_thw"].shape == (2, 3)
    assert batch["input_ids"].tolist() == [[1, 2, 0, 0, 0], [1, 2, 3, 4, 5]]
    assert batch["attention_mask"].tolist() == [[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["instruction"] == ["go 3", "go 1"] and batch["actions"].shape == (2, 4, 3)


def test_adaptive_windows_collate_left_padded(small_dirs: list[Path], cache_dir: Path) -> None:
    ds = InsertionDataset(small_dirs, adaptive_window=True, cache_strategy="stream", image_size=(28, 28),
                          progress=False)
    idx = [5, 20, 35]  # 325, 650 and 1300 Hz: ~33, ~66, ~131 rows per 0.1 s
    batch = collate_samples([ds[i] for i in idx])
    lengths = batch["sensor_lengths"].tolist()
    assert lengths == sorted(lengths) and batch["sensor_data"].shape[1] == max(lengths)
    for j, i in enumerate(idx):
        w, n = ds.sensor_window(i)
        assert torch.equal(batch["sensor_data"][j, -n:], torch.from_numpy(w))


def test_length_bucket_sampler() -> None:
    lengths = np.random.default_rng(0).integers(10, 1000, 103)
    s = LengthBucketBatchSampler(lengths, 8, seed=1, pool_batches=4)
    batches = list(s)
    assert sorted(i for b in batches for i in b) == list(range(103)) and len(batches) == len(s)
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    assert spread < 0.5 * np.ptp(lengths)  # buckets group similar lengths
    assert batches == list(LengthBucketBatchSampler(lengths, 8, seed=1, pool_batches=4))  # deterministic
    s.set_epoch(1)
    assert list(s) != batches
    ranks = [list(LengthBucketBatchSampler(lengths, 8, seed=1, num_replicas=3, rank=r)) for r in range(3)]
    assert len({len(r) for r in ranks}) == 1  # every DDP rank gets the same number of batches
    assert {i for r in ranks for b in r for i in b} == set(range(103))
    dyn = list(LengthBucketBatchSampler(lengths, 64, seed=1, max_rows=2000))
    assert all(len(b) * lengths[b].max() <= 2000 or len(b) == 1 for b in dyn)
    with pytest.raises(ValueError, match="rank"):
        LengthBucketBatchSampler(lengths, 8, num_replicas=2, rank=2)


def test_workers_map_the_cache_file_instead_of_copying_it(small_dirs: list[Path], cache_dir: Path) -> None:
    import os

    ds = InsertionDataset(small_dirs[:2], sensor_window_size=32, cache_dir=cache_dir, image_size=(28, 28),
                          progress=False)

    class Probe(torch.utils.data.Dataset):
        """Each sample says whether its worker reads the cache through a mapping of the cache file."""

        def __len__(self) -> int:
            return len(ds)

        def __getitem__(self, i: int) -> dict:
            sample = ds[i]
            arr = ds.cache._files[sample["trajectory_index"]].array()
            sample["mapped"] = isinstance(arr, np.memmap) and str(arr.filename).startswith(str(cache_dir))
            sample["pid"] = os.getpid()
            return sample

    loader = torch.utils.data.DataLoader(Probe(), batch_size=10, num_workers=2, collate_fn=collate_samples)
    batches = list(loader)
    assert all(b["mapped"].all() for b in batches)
    assert os.getpid() not in {p for b in batches for p in b["pid"].tolist()}
