"""The one loader builder: main-process gather (same batches as shipping windows through worker IPC),
self-sharding (every sample once across processes), and the original API's helper on top of it."""

from __future__ import annotations

import pytest
import torch

from vla_sensor import InsertionDataset, create_integrated_dataloader
from vla_sensor.data.config import strategy_settings
from vla_sensor.data.loader import REFS_KEY, BatchLoader, build_loader

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


@pytest.mark.parametrize(("strategy", "mode", "dtype"), [
    ("mmap", "fixed", "float32"), ("mmap", "adaptive", "int8"), ("stream", "fixed", "float16"),
    ("stream", "adaptive", "float32"),
])
def test_gathered_batches_are_bit_identical(small_dirs, cache_dir, strategy, mode, dtype) -> None:
    ds = _ds(small_dirs, cache_dir, cache_strategy=strategy, **MODES[mode], **DTYPES[dtype])
    gathered = build_loader(ds, shuffle=False, batch_size=7, num_workers=2)
    plain = build_loader(ds, shuffle=False, batch_size=7, num_workers=2, gather_sensor_in_main=False)
    assert gathered.gathers and not plain.gathers
    got, want = list(gathered), list(plain)
    assert all(REFS_KEY not in b for b in got)
    assert ("sensor_scale" in want[0]) == (dtype == "int8")
    _assert_same_batches(got, want)
    in_process = build_loader(ds, shuffle=False, batch_size=7, num_workers=0)
    _assert_same_batches(list(in_process), want)


def test_buckets_len_and_second_epoch(small_dirs, cache_dir) -> None:
    ds = _ds(small_dirs, cache_dir, cache_strategy="mmap", adaptive_window=True)
    loader = build_loader(ds, shuffle=True, batch_size=5, num_workers=2, bucket_by_length=True, seed=3)
    assert isinstance(loader, BatchLoader) and loader.gathers and loader.dataset is ds
    assert len(loader) == len(loader.batch_sampler) > 0
    batches = list(loader)
    assert len(batches) == len(loader)
    plain = build_loader(ds, shuffle=True, batch_size=5, num_workers=2, bucket_by_length=True, seed=3,
                         gather_sensor_in_main=False)
    _assert_same_batches(batches, list(plain))
    assert len(list(loader)) == len(loader)  # persistent workers: a second pass works too
    loader.close()


def test_gather_applies_only_where_it_can(small_dirs, cache_dir) -> None:
    stream = _ds(small_dirs[:2], cache_dir, cache_strategy="stream", sensor_window_size=64)
    assert not build_loader(stream, shuffle=False, batch_size=4, num_workers=0).gathers  # no worker IPC to save
    windows = _ds(small_dirs[:2], cache_dir, cache_strategy="windows", sensor_window_size=64)
    assert not build_loader(windows, shuffle=False, batch_size=4, num_workers=2).gathers  # not shared memory
    none = _ds(small_dirs[:2], cache_dir, **strategy_settings("none"), sensor_window_size=64)
    assert not build_loader(none, shuffle=False, batch_size=4, num_workers=2).gathers


class _ImageMean:
    """A model-input transform: it sees images and instruction only, never the sensor window."""

    def __call__(self, inputs: dict) -> dict:
        assert set(inputs) == {"images", "instruction"}, sorted(inputs)
        return {"image_mean": inputs["images"].float().mean(), "instruction": inputs["instruction"]}


def test_input_transform_sees_no_sensor_and_keeps_the_gather(small_dirs, cache_dir) -> None:
    ds = _ds(small_dirs[:2], cache_dir, cache_strategy="mmap", sensor_window_size=64)
    ds.input_transform = _ImageMean()
    gathered = build_loader(ds, shuffle=False, batch_size=4, num_workers=2)
    assert gathered.gathers
    got = list(gathered)
    assert "images" not in got[0] and got[0]["image_mean"].shape == (4,)
    _assert_same_batches(got, list(build_loader(ds, shuffle=False, batch_size=4, num_workers=2,
                                                gather_sensor_in_main=False)))


@pytest.mark.parametrize(("strategy", "workers"), [("none", 0), ("mmap", 2)])
def test_shards_cover_every_sample_once(small_dirs, cache_dir, strategy, workers) -> None:
    """Under N processes each rank's evaluation loader takes a disjoint share, together all samples."""
    ds = _ds(small_dirs, cache_dir, **strategy_settings(strategy), sensor_window_size=32)
    seen: list[tuple[int, int]] = []
    for rank in range(3):
        loader = build_loader(ds, shuffle=False, batch_size=4, num_workers=workers, num_replicas=3, rank=rank)
        seen += [(int(k), int(t)) for b in loader for k, t in zip(b["trajectory_index"], b["step_index"])]
        loader.close()
    assert len(seen) == len(set(seen)) == len(ds)


def test_create_integrated_dataloader_keeps_the_original_arguments(small_dirs, cache_dir) -> None:
    loader = create_integrated_dataloader(small_dirs[:2], batch_size=4, num_workers=0, shuffle=False,
                                          sensor_window_size=32, view_selection=["left"], cache_dir=cache_dir,
                                          progress=False, image_size=[28, 28])
    batch = next(iter(loader))
    assert batch["sensor_data"].shape == (4, 32, 1026) and batch["images"].shape == (4, 1, 3, 28, 28)
    assert batch["has_sensor_mask"].dtype == torch.bool and len(loader) == len(loader.dataset) // 4 + (
        len(loader.dataset) % 4 > 0)


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_threaded_prefetching_gather_gives_the_same_batches(small_dirs, cache_dir, dtype) -> None:
    """Positional reads on threads, one batch ahead, equal the in-line copy; every batch comes once, in order."""
    ds = _ds(small_dirs, cache_dir, cache_strategy="mmap", sensor_window_size=200, **DTYPES[dtype])
    inline = build_loader(ds, shuffle=True, batch_size=5, num_workers=2, gather_threads=0, seed=4)
    threaded = build_loader(ds, shuffle=True, batch_size=5, num_workers=2, gather_threads=3, seed=4)
    want = list(inline)
    for _ in range(2):  # a second pass over the same loader too
        _assert_same_batches(list(threaded), want)
    threaded.close()
    assert threaded._pool is None
    inline.close()
