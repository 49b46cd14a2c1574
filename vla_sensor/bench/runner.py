"""Runs the enabled sections, checks the targets and writes the markdown, JSON and chart.

Recordings and caches go to a temporary work directory (or ``benchmark.work_dir``), never into the
repository; only the results go to ``benchmark.output_dir``.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from vla_sensor.bench import report
from vla_sensor.bench.config import BenchmarkConfig, resolve_config
from vla_sensor.bench.device import device_info
from vla_sensor.bench.floor import memcpy_floor
from vla_sensor.bench.targets import evaluate

log = logging.getLogger(__name__)

FLOOR_POOL_BYTES = 256 * 10**6  # source buffers cycled by the floor, larger than any CPU cache
MARKDOWN_NAME, JSON_NAME, CHART_NAME = "benchmark.md", "benchmark.json", "benchmark.png"


def _floor(nbytes: int, repeats: int, fresh: bool = False) -> dict[str, Any]:
    pool = max(1, min(64, FLOOR_POOL_BYTES // max(nbytes, 1)))
    timing = memcpy_floor(nbytes, repeats=repeats, pool_factor=pool, fresh=fresh)
    return {"nbytes": int(nbytes), "pool_buffers": pool, "fresh_destination": fresh, "timing": timing.to_dict()}


def run_benchmark(cfg: BenchmarkConfig) -> dict[str, Any]:
    """Measure every enabled section; returns the results dict (also written to ``output_dir``)."""
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    output_dir = Path(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results: dict[str, Any] = {
        "meta": {
            "name": cfg.name,
            "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "device": device_info(),
            "config": asdict(cfg),
            "sections": list(cfg.sections),
        }
    }
    work_dir = Path(cfg.work_dir) if cfg.work_dir else Path(tempfile.mkdtemp(prefix="vla_sensor_bench_"))
    work_dir.mkdir(parents=True, exist_ok=True)
    try:
        floor: dict[str, Any] = {}
        results["floor"] = floor
        sections: dict[str, float] = {}
        results["meta"]["section_seconds"] = sections
        window_bytes = cfg.data.window * 1026 * 4
        if "floor" in cfg.sections:
            floor["window"] = _floor(window_bytes, cfg.floor_repeats)

        def on_batch_bytes(nbytes: int) -> None:
            if "floor" in cfg.sections:
                floor["batch"] = _floor(nbytes, max(cfg.floor_repeats // 5, 3))
                floor["batch_fresh"] = _floor(nbytes, max(cfg.floor_repeats // 5, 3), fresh=True)

        if "data" in cfg.sections or "memory" in cfg.sections:
            from vla_sensor.bench import data_bench

            t0 = time.perf_counter()
            results.update(data_bench.run(cfg.data, work_dir, on_floor=on_batch_bytes))
            sections["data"] = time.perf_counter() - t0
            channels = results["data"]["dataset"]["channels"]
            if channels != 1026 and "floor" in cfg.sections:
                floor["window"] = _floor(cfg.data.window * channels * 4, cfg.floor_repeats)
        else:
            results["data"] = {"skipped": "section disabled"}
            results["memory"] = {"skipped": "section disabled"}
        if "encoder" in cfg.sections:
            from vla_sensor.bench import encoder_bench

            device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
            t0 = time.perf_counter()
            results["encoder"] = encoder_bench.run(cfg.encoder, device)
            sections["encoder"] = time.perf_counter() - t0
        else:
            results["encoder"] = {"skipped": "section disabled"}
        if "model" in cfg.sections:
            from vla_sensor.bench import model_bench

            t0 = time.perf_counter()
            results["model"] = model_bench.run(cfg.model, model_recordings(cfg, work_dir), list(cfg.data.views),
                                               cfg.data.image_size)
            sections["model"] = time.perf_counter() - t0
        else:
            results["model"] = {"skipped": "section disabled"}
        if "feature_cache" in cfg.sections:
            from vla_sensor.bench import feature_cache_bench

            t0 = time.perf_counter()
            results["feature_cache"] = feature_cache_bench.run(cfg.feature_cache, model_recordings(cfg, work_dir),
                                                               list(cfg.data.views), cfg.data.image_size)
            sections["feature_cache"] = time.perf_counter() - t0
        results.update(_extra_sections(cfg, work_dir, sections))
    finally:
        if not cfg.keep_work_dir and not cfg.work_dir:
            shutil.rmtree(work_dir, ignore_errors=True)
    results["meta"]["duration_s"] = time.perf_counter() - started
    targets = evaluate(results)
    results["targets"] = [t.to_dict() for t in targets]
    text = report.markdown(results, targets) + _extra_markdown(results)
    (output_dir / MARKDOWN_NAME).write_text(text)
    report.write_json(results, output_dir / JSON_NAME)
    results["meta"]["chart"] = bool(cfg.chart and report.write_chart(results, output_dir / CHART_NAME))
    report.write_json(results, output_dir / JSON_NAME)
    print(text)
    log.info("wrote %s, %s%s in %s", MARKDOWN_NAME, JSON_NAME, f", {CHART_NAME}" if results["meta"]["chart"] else "", output_dir)
    return results


def model_recordings(cfg: BenchmarkConfig, work_dir: Path) -> list[Path]:
    """The data section's recordings, or one short generated recording when that section did not run."""
    recordings = sorted((work_dir / "recordings").glob("traj_*"))
    if not recordings:
        recordings = sorted((work_dir / "model_recordings").glob("traj_*"))
    if not recordings:
        from vla_sensor.data.synthetic import generate_dataset

        recordings = generate_dataset(work_dir / "model_recordings", trajectories=1, seconds=2.0,
                                      sensor_rate=cfg.data.sensor_rate, image_size=cfg.data.image_size,
                                      views=tuple(cfg.data.views), seed=cfg.data.seed)
    return [Path(p) for p in recordings]


def _extra_sections(cfg: BenchmarkConfig, work_dir: Path, seconds: dict[str, float]) -> dict[str, Any]:
    """The simulator, LeRobot, serving and scale sections (each needs only its own packages)."""
    out: dict[str, Any] = {}
    if "sim" in cfg.sections:
        from vla_sensor.bench.sim_bench import measure_policy_rollouts, measure_sim

        t0 = time.perf_counter()
        out["sim"] = {**measure_sim(cfg.quick), "policy": measure_policy_rollouts(cfg.quick)}
        seconds["sim"] = time.perf_counter() - t0
    if "lerobot" in cfg.sections:
        from vla_sensor.bench.lerobot_bench import measure_lerobot

        t0 = time.perf_counter()
        out["lerobot"] = measure_lerobot(cfg.quick, work_dir)
        seconds["lerobot"] = time.perf_counter() - t0
    if "serving" in cfg.sections:
        from vla_sensor.bench.serving_bench import measure_serving

        t0 = time.perf_counter()
        out["serving"] = measure_serving(cfg.quick)
        seconds["serving"] = time.perf_counter() - t0
    if "scale" in cfg.sections:
        from vla_sensor.bench.scale_bench import measure_scale

        t0 = time.perf_counter()
        out["scale"] = measure_scale(cfg.scale, work_dir)
        seconds["scale"] = time.perf_counter() - t0
    return out


def _extra_markdown(results: dict[str, Any]) -> str:
    from vla_sensor.bench.lerobot_bench import format_lerobot_section
    from vla_sensor.bench.sim_bench import format_sim_section

    parts = []
    if "feature_cache" in results:
        from vla_sensor.bench.feature_cache_bench import format_section

        parts.append(format_section(results["feature_cache"], report.device_heading(
            results, threads=results["feature_cache"]["torch_threads"])))
    parts += [format_sim_section(results["sim"])] if "sim" in results else []
    parts += [format_lerobot_section(results["lerobot"])] if "lerobot" in results else []
    if "serving" in results:
        from vla_sensor.bench.serving_bench import format_serving_section

        parts.append(format_serving_section(results["serving"]))
    if "scale" in results:
        from vla_sensor.bench.scale_bench import format_scale_section

        parts.append(format_scale_section(results["scale"], report.device_heading(results)))
    return "".join("\n" + p for p in parts)


def run_from_hydra(node: DictConfig) -> dict[str, Any]:
    """The Hydra entry point's body: validate ``cfg.benchmark`` and run."""
    cfg = resolve_config(node.get("benchmark"))
    if "gpu" in cfg.sections:  # the real-size CUDA check: its own report (one line and nothing else without CUDA)
        from vla_sensor.bench.gpu_bench import run_gpu_check

        gpu = run_gpu_check(cfg)
        cfg.sections = [s for s in cfg.sections if s != "gpu"]
        if not cfg.sections:
            return gpu
    return run_benchmark(cfg)
