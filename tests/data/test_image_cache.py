"""Decoded-image cache: same pixels as decoding per sample, rebuilt when stale or damaged, shared by workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vla_sensor import InsertionDataset
from vla_sensor.data.build import build_datasets
from vla_sensor.data.cache_tool import clean
from vla_sensor.data.collate import collate_samples
from vla_sensor.data.loader import build_loader


def _ds(dirs, cache_dir: Path, **kw) -> InsertionDataset:
    kw.setdefault("image_size", (28, 42))
    return InsertionDataset(dirs, sensor_window_size=32, cache_dir=cache_dir, progress=False, **kw)


def test_cached_images_equal_direct_decode_and_resize(small_dirs: list[Path], cache_dir: Path) -> None:
    cached = _ds(small_dirs, cache_dir, cache_strategy="stream")
    direct = _ds(small_dirs, cache_dir, cache_strategy="stream", cache_images=False)
    assert cached.image_cache is not None and direct.image_cache is None
    assert cached.image_cache_nbytes == len(cached) * 2 * 3 * 28 * 42
    for i in range(0, len(cached), 7):
        a, b = cached[i]["images"], direct[i]["images"]
        assert a.dtype == torch.uint8 and a.shape == (2, 3, 28, 42)
        assert torch.equal(a, b), i
    assert len(list((cache_dir / "images").glob("*.npy"))) == len(small_dirs) * 2  # one per trajectory and view
    assert _ds(small_dirs, cache_dir).image_cache.built_here == []  # warm: reused, any sensor strategy


def test_no_cache_decodes_per_sample(small_dirs: list[Path], tmp_path: Path) -> None:
    ds = _ds(small_dirs[:1], tmp_path / "c", cache_sensor_windows=False)
    assert ds.image_cache is None and not (tmp_path / "c" / "images").exists()
    train, _, _ = build_datasets({"trajectory_dirs": [str(d) for d in small_dirs[:2]], "val_fraction": 0.0,
                                  "cache": False, "progress": False})
    assert train.image_cache is None


def test_changed_image_rebuilds_the_view(traj_copy: Path, cache_dir: Path) -> None:
    before = _ds(traj_copy, cache_dir)
    assert len(before.image_cache.built_here) == 2
    step4 = before[4]["images"].clone()
    path = sorted((traj_copy / "images" / "oak").iterdir())[5]
    Image.new("RGB", (32, 32), (255, 0, 0)).save(path)
    after = _ds(traj_copy, cache_dir)
    assert after.image_cache.built_here == [(0, "oak")]  # only the changed view
    red = after[5]["images"][after.view_selection.index("oak")]
    assert (red[0] > 200).all() and (red[1:] < 50).all()
    assert torch.equal(after[4]["images"], step4)
    assert len(list((cache_dir / "images").glob("*oak*.npy"))) == 2  # a build deletes nothing ...
    clean(cache_dir)
    assert len(list((cache_dir / "images").glob("*oak*.npy"))) == 1  # ... cleaning removes the stale version
    assert _ds(traj_copy, cache_dir).image_cache.built_here == []


@pytest.mark.parametrize("damage", ["truncate", "no_sidecar"])
def test_damaged_image_cache_is_rebuilt(traj_copy: Path, cache_dir: Path, damage: str) -> None:
    expected = _ds(traj_copy, cache_dir)[7]["images"].clone()
    npy = sorted((cache_dir / "images").glob("*left*.npy"))[0]
    if damage == "truncate":
        with open(npy, "r+b") as f:
            f.truncate(npy.stat().st_size - 100)
    else:
        npy.with_suffix(".json").unlink()
    again = _ds(traj_copy, cache_dir)
    assert again.image_cache.built_here == [(0, "left")]
    assert torch.equal(again[7]["images"], expected)


def test_workers_read_the_image_cache(small_dirs: list[Path], cache_dir: Path) -> None:
    ds = _ds(small_dirs, cache_dir, cache_strategy="mmap")
    ref = collate_samples([ds[i] for i in range(len(ds))])
    loader = build_loader(ds, shuffle=False, batch_size=8, num_workers=2)
    got = list(loader)
    images = torch.cat([b["images"] for b in got])
    sensor = torch.cat([b["sensor_data"] for b in got])
    assert torch.equal(images, ref["images"]) and torch.equal(sensor, ref["sensor_data"])
    assert np.array_equal(torch.cat([b["sensor_lengths"] for b in got]).numpy(), ref["sensor_lengths"].numpy())
