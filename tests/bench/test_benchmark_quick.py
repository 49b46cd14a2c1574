"""``benchmark.py --quick`` writes complete, well-formed results (no timing assertions)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
STRATEGIES = ["none", "windows", "stream", "mmap"]
CACHED = ["windows", "stream", "mmap"]
DTYPES = ["float32", "float16", "int8"]
LENGTHS = ["325", "650", "1300"]
MODES = ["linear", "nearest", "cubic"]


def _positive_timing(t: dict[str, Any], where: str) -> None:
    for key in ("median", "min", "max"):
        value = t[key]
        assert isinstance(value, float) and math.isfinite(value) and value > 0, f"{where}.{key} = {value!r}"
    assert t["min"] <= t["median"] <= t["max"], where
    assert t["n"] == len(t["samples"]) >= 1, where


def _positive(value: Any, where: str) -> None:
    assert isinstance(value, int | float) and math.isfinite(value) and value > 0, f"{where} = {value!r}"


def _finite_everywhere(obj: Any, where: str = "") -> None:
    if isinstance(obj, float):
        assert math.isfinite(obj), where
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _finite_everywhere(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _finite_everywhere(v, f"{where}[{i}]")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("bench_out")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "benchmark.py", "--quick", f"benchmark.output_dir={out}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, proc.stdout


@pytest.mark.slow
def test_outputs_written(quick_run: tuple[Path, str]) -> None:
    out, stdout = quick_run
    for name in ("benchmark.md", "benchmark.json", "benchmark.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "### Data Loading Speed" in stdout  # the tables are also printed


@pytest.mark.slow
def test_json_complete_and_finite(quick_run: tuple[Path, str]) -> None:
    out, _ = quick_run
    r = json.loads((out / "benchmark.json").read_text())
    _finite_everywhere(r)
    meta = r["meta"]
    assert meta["name"] == "quick"
    assert meta["device"]["cpu"].startswith("CPU: ") and "cores" in meta["device"]["cpu"]

    for key in ("window", "batch"):
        _positive(r["floor"][key]["nbytes"], f"floor.{key}.nbytes")
        _positive_timing(r["floor"][key]["timing"], f"floor.{key}")

    data = r["data"]
    ds = data["dataset"]
    assert ds["channels"] == 1026 and ds["samples"] > 0
    assert ds["window_nbytes"] == ds["window"] * 1026 * 4
    for table in ("per_sample", "per_sample_materialized"):
        _positive_timing(data[table]["none"]["float32"], f"{table}.none")
        for s in CACHED:
            for d in DTYPES:
                _positive_timing(data[table][s][d], f"{table}.{s}.{d}")
    assert set(data["batch"]) == {"0", "2"}
    for workers, per in data["batch"].items():
        for s in STRATEGIES:
            _positive_timing(per[s], f"batch.{workers}.{s}")
    _positive(data["batch_nbytes"], "batch_nbytes")
    for phase in ("first", "subsequent"):
        for s in STRATEGIES:
            _positive_timing(data["epoch"][phase][s], f"epoch.{phase}.{s}")
    assert set(data["init"]) == {"none", "windows", "stream", "mmap_cold", "mmap_warm"}
    for k, t in data["init"].items():
        _positive_timing(t, f"init.{k}")

    mem = r["memory"]
    _positive(mem["raw_sensor_nbytes"], "raw_sensor_nbytes")
    assert mem["cache_nbytes"]["none"]["float32"] == 0
    for s in CACHED:
        for d in DTYPES:
            _positive(mem["cache_nbytes"][s][d], f"cache_nbytes.{s}.{d}")
    for s in STRATEGIES:
        proc = mem["processes"][s]
        assert len(proc["workers"]) == 2, s
        for key in ("worker_private", "worker_shared", "worker_pss", "worker_rss"):
            _positive(proc[key], f"processes.{s}.{key}")
        if s != "none" and "worker_cache_private_copy_max" in proc:  # needs /proc/<pid>/pagemap
            assert 0 <= proc["worker_cache_private_copy_max"] <= proc["cache_nbytes"]
            _positive(proc["worker_cache_shared_mean"], f"processes.{s}.worker_cache_shared_mean")
    for d in ("float16", "int8"):
        q = mem["quantization"][d]
        assert q["max_abs"] > 0 and q["mean_abs"] > 0 and isinstance(q["within_bound"], bool)

    enc = r["encoder"]
    assert set(enc["training"]["lengths"]) == set(LENGTHS)
    for length, row in enc["training"]["lengths"].items():
        for flag in ("plain", "checkpointed"):
            _positive_timing(row[flag]["step"], f"encoder.{length}.{flag}")
            _positive(row[flag]["bytes"], f"encoder.{length}.{flag}.bytes")
        _positive(row["memory_ratio"], "memory_ratio")
        _positive(row["time_ratio"], "time_ratio")
    assert set(enc["interpolation"]["modes"]) == set(MODES)
    for mode, t in enc["interpolation"]["modes"].items():
        _positive_timing(t, f"interpolation.{mode}")
    _positive_timing(enc["interpolation"]["conv_stack"], "conv_stack")

    rows = r["model"]["rows"]
    assert rows and all(row["status"] for row in rows)
    assert any(row["device"] == "cuda" for row in rows)  # labelled, measured or skipped

    sim = r["sim"]
    assert sim["episodes_per_minute"] > 0 and 0 <= sim["expert_success_rate"] <= 1
    assert sim["policy"]["episodes"] > 0 and sim["policy"]["ms_per_step"] > 0
    assert r["lerobot"]["trajectories"] > 0
    serving = r["serving"]["configs"]
    assert [len(c["views"]) for c in serving] == [1, 2]
    for c in serving:
        assert c["requests"] > 0 and c["parts_ms"]["overhead_ms"]["p99"] > 0
    sc = r["scale"]
    assert sc["limit"].startswith("none") and [s["ratio"] for s in sc["sizes"]] == [1.0]
    for mode, m in sc["sizes"][0]["modes"].items():
        assert "error" not in m, (mode, m)
        _positive(m["batches_per_s"], f"scale.{mode}.batches_per_s")
        assert m["disk_per_window_byte"] >= 0 and m["window_bytes"] > 0
    assert [f["threads"] for f in sc["floor"]] == [1, 4] and all(f["windows_per_s"] > 0 for f in sc["floor"])
    v = r["data"]["verification"]
    for key in ("warm_init", "warm_init_verify_full", "first_read", "verified"):
        _positive_timing(v[key], f"verification.{key}")
    targets = r["targets"]
    assert len(targets) >= 10
    for t in targets:
        assert t["target"] and t["measured"] and t["passed"] in (True, False, None)


@pytest.mark.slow
def test_markdown_tables(quick_run: tuple[Path, str]) -> None:
    out, _ = quick_run
    md = (out / "benchmark.md").read_text()
    for heading in (
        "### Data Loading Speed",
        "### Benchmarking Results",
        "### Memory Usage",
        "### Quantization error of the cache",
        "### Sensor encoder (training step)",
        "### The floor: a plain memory copy of the same bytes",
        "### Model training step",
        "### Targets",
        "### Simulator",
        "### LeRobot datasets",
        "### Policy server",
        "### Cache verification cost",
        "### Past RAM (scale)",
    ):
        assert heading in md, heading
    assert "| Metric | No cache | Per-window cache (`windows`) | `stream` | `mmap` | Improvement (×) |" in md
    assert md.count("*Device: CPU: ") >= 4
    assert "nan" not in md.lower().replace("nanosec", "")
