"""The real (tiny Qwen-VL) model through kills: mid-way through building the mmap sensor cache, then
mid-step; the resumed run ends with the weights of an uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.reliability.helpers import assert_killed, assert_ok, launch, metric_steps, resumed_from
from vla_sensor.training.checkpointing import latest_checkpoint


def _args(root: Path, run: Path, cache: Path) -> list[str]:
    return ["cpu=true", f"data.root={root}", "data.generate_if_missing=false", "data.val_fraction=0.34",
            "data.num_workers=0", "data.batch_size=4", "data.progress=false", f"data.cache_strategy.cache_dir={cache}",
            "logger=jsonl", "trainer.progress_bar=false", "trainer.max_steps=5", "trainer.save_every=2",
            "trainer.log_every=1", "trainer.val_every=0", "trainer.warmup_steps=1", f"output_dir={run}",
            "trainer.resume=auto"]


def test_real_model_killed_mid_cache_build_and_mid_step(tiny_root: Path, tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    assert_ok(launch(_args(tiny_root, straight, tmp_path / "cache_straight"), tmp_path))

    run, cache = tmp_path / "run", tmp_path / "cache"
    assert_killed(launch(_args(tiny_root, run, cache), tmp_path, "cache@1"))
    assert list(cache.glob("*.tmp*.npy")) and not list(cache.glob("*.json")), "expected a half-built cache"
    assert not (run / "checkpoints").exists()

    proc = launch(_args(tiny_root, run, cache), tmp_path, "step@3")  # rebuilds the cache, dies in step 3
    assert_killed(proc)
    assert resumed_from(proc) is None
    assert not list(cache.glob("*.tmp*")), "the dead builder's temp file was not cleaned up"
    assert latest_checkpoint(run).name == "step_0000002"

    final = launch(_args(tiny_root, run, cache), tmp_path)
    assert_ok(final)
    assert resumed_from(final) == 2
    a = load_file(str(straight / "final" / "model.safetensors"))
    b = load_file(str(run / "final" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=f"{k} differs from the uninterrupted run")
    assert metric_steps(run) == metric_steps(straight) == [1, 2, 3, 4, 5]
