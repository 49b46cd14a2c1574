"""Windows kept in their storage dtype through the loader decode, where the model runs, within the dtype's bound."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vla_sensor import InsertionDataset
from vla_sensor.data.collate import collate_samples
from vla_sensor.data.format import TrajectoryReader
from vla_sensor.data.loader import build_loader
from vla_sensor.data.sensor_decode import decode_sensor_batch
from vla_sensor.data.storage import encode_stream, max_abs_error_bound

MODES = {"fixed": {"sensor_window_size": 200}, "adaptive": {"adaptive_window": True}}


def _ds(dirs, cache_dir, **kw) -> InsertionDataset:
    return InsertionDataset(dirs, cache_dir=cache_dir, progress=False, image_size=(28, 28), **kw)


@pytest.mark.parametrize("strategy", ["stream", "mmap", "windows"])
@pytest.mark.parametrize("dtype", ["float16", "int8"])
@pytest.mark.parametrize("mode", list(MODES))
def test_decoded_batch_matches_float32_within_the_storage_bound(small_dirs, cache_dir, strategy, dtype, mode) -> None:
    ref = _ds(small_dirs, cache_dir, cache_strategy="stream", **MODES[mode])
    ds = _ds(small_dirs, cache_dir, cache_strategy=strategy, cache_dtype=dtype, decode_on_device=True, **MODES[mode])
    idx = [0, 1, 16, 20, 31, 47, 50]  # trajectory starts (padding), middles, and the sensorless trajectory
    raw = collate_samples([ds[i] for i in idx])
    assert raw["sensor_data"].dtype == {"float16": torch.float16, "int8": torch.int8}[dtype]
    assert raw["sensor_data"].element_size() == {"float16": 2, "int8": 1}[dtype]
    assert ("sensor_scale" in raw) == (dtype == "int8")
    got = decode_sensor_batch(raw)
    want = collate_samples([ref[i] for i in idx])
    assert "sensor_scale" not in got and got["sensor_data"].dtype == torch.float32
    assert got["sensor_data"].shape == want["sensor_data"].shape
    streams = {k: TrajectoryReader().read(small_dirs[k]).load_sensor_stream() for k in range(3)}
    for b, i in enumerate(idx):
        k, n = int(ds.sample_traj[i]), int(want["sensor_lengths"][b])
        g, w = got["sensor_data"][b].numpy(), want["sensor_data"][b].numpy()
        assert not g[: g.shape[0] - n].any()  # padding decodes to zeros, as in float32 batches
        if n:
            s, e = int(ds.cache.starts[i]), int(ds.cache.ends[i])
            bound = max_abs_error_bound(streams[k], encode_stream(streams[k], dtype))[s:e]
            assert (np.abs(g[-n:] - w[-n:]) <= bound * 1.0001 + 1e-7).all(), (b, i)


def test_float32_is_unchanged_and_worker_decode_is_a_choice(small_dirs, cache_dir) -> None:
    f32 = _ds(small_dirs[:2], cache_dir, sensor_window_size=64, decode_on_device=True)
    assert not f32.decode_on_device
    batch = collate_samples([f32[i] for i in range(4)])
    assert batch["sensor_data"].dtype == torch.float32
    assert decode_sensor_batch(batch)["sensor_data"] is batch["sensor_data"]
    plain = _ds(small_dirs[:2], cache_dir, sensor_window_size=64, cache_dtype="int8", decode_on_device=False)
    assert plain[3]["sensor_data"].dtype == torch.float32 and "sensor_scale" not in plain[3]


def test_workers_ship_the_stored_dtype(small_dirs, cache_dir) -> None:
    ds = _ds(small_dirs, cache_dir, sensor_window_size=64, cache_dtype="int8", decode_on_device=True)
    batch = next(iter(build_loader(ds, shuffle=False, batch_size=5, num_workers=1)))
    assert batch["sensor_data"].dtype == torch.int8 and batch["sensor_scale"].shape == (5, 1026)
    ref = decode_sensor_batch(collate_samples([ds[i] for i in range(5)]))
    assert torch.equal(decode_sensor_batch(batch)["sensor_data"], ref["sensor_data"])


def test_device_pad_mask_matches_the_host_path() -> None:
    from vla_sensor.data.sensor_decode import _zero_padding, pad_mask

    lengths = torch.tensor([4, 0, 2, 3])
    host = torch.ones(4, 4, 2)
    _zero_padding(host, lengths)
    device = torch.ones(4, 4, 2).masked_fill_(pad_mask(4, lengths).unsqueeze(-1), 0.0)
    assert torch.equal(host, device) and host.sum() == 2 * (4 + 0 + 2 + 3)
