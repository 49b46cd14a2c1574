"""Small, fast checks of the benchmark's helpers."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import pytest
import torch

from vla_sensor.bench import fmt
from vla_sensor.bench.config import BenchmarkConfig, resolve_config
from vla_sensor.bench.floor import memcpy_floor
from vla_sensor.bench.memory import count_saved_tensors, read_smaps_rollup, smaps_available
from vla_sensor.bench.targets import evaluate
from vla_sensor.bench.timing import Timing, measure, measure_each

ROOT = Path(__file__).resolve().parents[2]


def test_quick_flag_is_rewritten_for_hydra() -> None:
    sys.path.insert(0, str(ROOT))
    try:
        from benchmark import rewrite_quick_flag
    finally:
        sys.path.remove(str(ROOT))
    assert rewrite_quick_flag(["--quick", "benchmark.output_dir=x"]) == ["benchmark=quick", "benchmark.output_dir=x"]
    assert rewrite_quick_flag(["benchmark=quick"]) == ["benchmark=quick"]


@pytest.mark.parametrize("overrides", [["benchmark=quick"], []])
def test_config_group_composes(overrides: list[str]) -> None:
    from hydra import compose, initialize_config_dir

    from vla_sensor.bench.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose(config_name="benchmark", overrides=[*overrides, "benchmark.output_dir=elsewhere"])
    resolved = resolve_config(cfg.benchmark)
    assert resolved.output_dir == "elsewhere"
    assert resolved.name == ("quick" if overrides else "full")
    assert resolved.encoder.lengths == [325, 650, 1300]


def test_unknown_section_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown"):
        resolve_config({"sections": ["data", "bogus"]})
    assert isinstance(resolve_config(None), BenchmarkConfig)


def test_timing_statistics() -> None:
    t = measure(lambda: sum(range(100)), repeats=5, warmup=1)
    assert t.n == 5 and t.min <= t.median <= t.max and all(s > 0 for s in t.samples)
    each = measure_each(lambda i: i * 2, [1, 2, 3])
    assert each.n == 3
    assert Timing.from_samples([3.0, 1.0, 2.0]).median == 2.0


def test_memcpy_floor_is_positive() -> None:
    t = memcpy_floor(1 << 16, repeats=3, pool_factor=2)
    assert t.median > 0


@pytest.mark.skipif(not smaps_available(), reason="needs /proc/<pid>/smaps_rollup (Linux)")
def test_smaps_rollup_parses_this_process() -> None:
    m = read_smaps_rollup(os.getpid())
    assert m.rss > 0 and m.pss > 0 and m.private > 0
    assert m.private == m.private_clean + m.private_dirty


def test_saved_tensors_counts_each_storage_once() -> None:
    x = torch.randn(64, 64, requires_grad=True)
    with count_saved_tensors() as acc:
        y = x * x  # saves x twice (both operands): one storage
    y.sum().backward()
    assert acc.nbytes == x.numel() * 4 and acc.count == 1


def test_formatting() -> None:
    assert fmt.seconds(0.0015) == "1.5 ms"
    assert fmt.seconds(2e-6) == "2 µs"
    assert fmt.nbytes(650 * 1026 * 4) == "2.67 MB"
    assert fmt.ratio(812.4) == "812×"
    assert fmt.safe_div(1.0, 0.0) is None
    assert fmt.seconds(math.nan) == fmt.NA


def test_targets_with_nothing_measured_are_not_passes() -> None:
    results = {"meta": {}, "data": {}, "memory": {}, "encoder": {}, "floor": {}}
    assert all(t.passed is None for t in evaluate(results))
