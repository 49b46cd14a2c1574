"""Pinned batches: on CUDA every batch (the main-process gather included) is page-locked; without CUDA
``pin_memory`` changes nothing."""

from __future__ import annotations

import pytest
import torch

from vla_sensor import InsertionDataset
from vla_sensor.data.loader import build_loader


def _batches(ds: InsertionDataset, pin: bool) -> list[dict]:
    loader = build_loader(ds, shuffle=False, batch_size=6, num_workers=1, pin_memory=pin)
    try:
        assert loader.gathers and loader.pin == (pin and torch.cuda.is_available())
        return list(loader)
    finally:
        loader.close()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU path")
def test_without_cuda_nothing_is_pinned_and_the_batches_are_unchanged(small_dirs, cache_dir) -> None:
    ds = InsertionDataset(small_dirs, cache_dir=cache_dir, progress=False, image_size=(28, 28), cache_strategy="mmap",
                          sensor_window_size=200)
    pinned, plain = _batches(ds, True), _batches(ds, False)
    assert len(pinned) == len(plain) > 1
    for got, want in zip(pinned, plain):
        assert list(got) == list(want)
        for key, value in want.items():
            if isinstance(value, torch.Tensor):
                assert not got[key].is_pinned(), key
                assert torch.equal(got[key], value), key
            else:
                assert got[key] == value, key


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_every_batch_tensor_is_pinned(small_dirs, cache_dir) -> None:
    ds = InsertionDataset(small_dirs, cache_dir=cache_dir, progress=False, image_size=(28, 28), cache_strategy="mmap",
                          sensor_window_size=200)
    for batch in _batches(ds, True):
        assert all(v.is_pinned() for v in batch.values() if isinstance(v, torch.Tensor))
