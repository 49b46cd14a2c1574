"""collate_samples: only padding rows are zeroed, the stored dtype is kept, workers collate into shared memory."""

from __future__ import annotations

import pytest
import torch

from vla_sensor.data import collate


def _samples(lengths: list[int], dtype: torch.dtype = torch.float32) -> list[dict]:
    return [
        {"sensor_data": (torch.arange(n * 3).reshape(n, 3) + 1).to(dtype), "sensor_length": n, "has_sensor": n > 0}
        for n in lengths
    ]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.int8])
def test_left_padding_is_zero_even_in_a_dirty_buffer(monkeypatch, dtype) -> None:
    real = collate._empty
    monkeypatch.setattr(collate, "_empty", lambda shape, dt: real(shape, dt).fill_(7))  # garbage, as empty may be
    batch = collate.collate_samples(_samples([4, 0, 2], dtype))
    data = batch["sensor_data"]
    assert data.shape == (3, 4, 3) and data.dtype == dtype
    assert torch.equal(data[0], (torch.arange(12).reshape(4, 3) + 1).to(dtype))
    assert not data[1].any()
    assert not data[2, :2].any() and torch.equal(data[2, 2:], (torch.arange(6).reshape(2, 3) + 1).to(dtype))
    assert batch["sensor_lengths"].tolist() == [4, 0, 2] and batch["has_sensor_mask"].tolist() == [True, False, True]


def test_worker_batches_are_allocated_in_shared_memory(monkeypatch) -> None:
    monkeypatch.setattr(collate, "get_worker_info", lambda: object())
    batch = collate.collate_samples(
        [{**s, "images": torch.zeros(2, 3, 4, 4, dtype=torch.uint8)} for s in _samples([3, 2])]
    )
    assert batch["sensor_data"].is_shared() and batch["images"].is_shared()
    assert not batch["sensor_data"][1, 0].any()


def test_main_process_batches_are_ordinary_tensors() -> None:
    batch = collate.collate_samples(_samples([2, 2]))
    assert not batch["sensor_data"].is_shared() and batch["sensor_data"].is_contiguous()
