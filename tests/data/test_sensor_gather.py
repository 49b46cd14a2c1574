"""Sensor windows gathered in the main process: the same batches as shipping them through worker IPC."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from vla_sensor import InsertionDataset
from vla_sensor.data.loader import make_dataloader
from vla_sensor.data.sensor_gather import REFS_KEY, MainProcessSensorLoader

MODES = {"fixed": {"sensor_window_size": 200}, "adaptive": {"adaptive_window": True}}
DTYPES = {"float32": {}, "int8": {"cache_dtype": "int8", "decode_on_device": True},
          "float16": {"cache_dtype": "float16", "decode_on_device": True}}


def _ds(dirs, cache_dir, **kw) -> InsertionDataset:
    return InsertionDataset(dirs, cache_dir=cache_dir, progress=False, image_size=(28, 28), **kw)


def _assert_same_batches(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert list(g) == list(w)  # same keys, same order
        for key, value in w.items():
            if isinstance(value, torch.Tensor):
                assert g[key].dtype == value.dtype and g[key].shape == value.shape, key
                assert torch.equal(g[key], value), key
            else:
                assert g[key] == value, key


@pytest.mark.parametrize("strategy", ["stream", "mmap"])
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_gathered_batches_are_bit_identical(small_dirs, cache_dir, strategy, mode, dtype) -> None:
    ds = _ds(small_dirs, cache_dir, cache_strategy=strategy, **MODES[mode], **DTYPES[dtype])
    gathered = make_dataloader(ds, batch_size=7, num_workers=2, shuffle=False)
    plain = make_dataloader(ds, batch_size=7, num_workers=2, shuffle=False, gather_sensor_in_main=False)
    assert isinstance(gathered, MainProcessSensorLoader) and isinstance(plain, DataLoader)
    got, want = list(gathered), list(plain)
    assert all(REFS_KEY not in b for b in got)
    assert ("sensor_scale" in want[0]) == (dtype == "int8")
    _assert_same_batches(got, want)
    assert not ds.defer_sensor_to_main  # the workers' copy defers, the given dataset is untouched
    assert "sensor_data" in ds[0]


def test_wrapper_with_batch_sampler_and_len(small_dirs, cache_dir) -> None:
    ds = _ds(small_dirs, cache_dir, cache_strategy="mmap", adaptive_window=True)
    loader = make_dataloader(ds, batch_size=5, num_workers=2, bucket_by_length=True, seed=3)
    assert isinstance(loader, MainProcessSensorLoader)
    assert loader.dataset is ds and loader.num_workers == 2
    assert len(loader) == len(loader.batch_sampler) > 0
    batches = list(loader)
    assert len(batches) == len(loader)
    plain = make_dataloader(ds, batch_size=5, num_workers=2, bucket_by_length=True, seed=3,
                            gather_sensor_in_main=False)
    _assert_same_batches(batches, list(plain))
    again = list(loader)  # persistent workers: a second epoch works too
    assert len(again) == len(loader)


def test_gather_applies_only_where_it_can(small_dirs, cache_dir) -> None:
    stream = _ds(small_dirs[:2], cache_dir, cache_strategy="stream", sensor_window_size=64)
    assert isinstance(make_dataloader(stream, batch_size=4, num_workers=0), DataLoader)  # no worker IPC
    windows = _ds(small_dirs[:2], cache_dir, cache_strategy="windows", sensor_window_size=64)
    assert isinstance(make_dataloader(windows, batch_size=4, num_workers=2), DataLoader)
    transformed = _ds(small_dirs[:2], cache_dir, cache_strategy="stream", sensor_window_size=64,
                      sample_transform=lambda s: s)
    assert isinstance(make_dataloader(transformed, batch_size=4, num_workers=2), DataLoader)


class _ImagesOnlyTransform:
    """A worker-side transform that declares it never reads the sensor window (like the model's)."""

    reads_sensor_data = False

    def __call__(self, sample: dict) -> dict:
        out = dict(sample)
        out["image_mean"] = out.pop("images").float().mean()
        return out


def test_a_transform_that_ignores_the_sensor_keeps_the_gather(small_dirs, cache_dir) -> None:
    ds = _ds(small_dirs[:2], cache_dir, cache_strategy="mmap", sensor_window_size=64,
             sample_transform=_ImagesOnlyTransform())
    gathered = make_dataloader(ds, batch_size=4, num_workers=2, shuffle=False)
    assert isinstance(gathered, MainProcessSensorLoader)
    plain = make_dataloader(ds, batch_size=4, num_workers=2, shuffle=False, gather_sensor_in_main=False)
    _assert_same_batches(list(gathered), list(plain))
