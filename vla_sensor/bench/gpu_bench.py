"""``python benchmark.py benchmark=gpu``: the real-size model on CUDA, one report.

Without CUDA it prints one line saying so and returns (exit status 0). With CUDA, in this order:

1. the 3B-size Qwen2.5-VL (``benchmark.gpu.model``) with random weights in bf16 (sdpa), one training
   step (forward + backward + AdamW) per row: stage 1 without the feature cache, stage 1 with it (the
   batch carries the backbone's stored features), stage 2 with LoRA; batch sizes 1/4/16, each mode
   stopping at its first out-of-memory (reported). Per row: step time, samples/s, peak CUDA memory;
2. the sensor encoder's activation memory (allocator peak) with and without checkpointing;
3. ``benchmark.gpu.train_steps`` steps of ``train.py`` (the default training loop and loader) on CUDA:
   median data-wait fraction and samples/s of its log steps.

Writes ``gpu_benchmark.md`` and ``gpu_benchmark.json`` into ``benchmark.output_dir``.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from vla_sensor.bench import fmt
from vla_sensor.bench.config import BenchmarkConfig, EncoderBenchConfig, GpuBenchConfig
from vla_sensor.bench.device import device_info

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
MARKDOWN_NAME, JSON_NAME = "gpu_benchmark.md", "gpu_benchmark.json"
MODES = ("stage 1", "stage 1, feature cache", "stage 2, LoRA")
MODEL_INPUTS = ("pixel_values", "image_grid_thw", "input_ids", "attention_mask")


def no_cuda_line() -> str:
    return f"benchmark=gpu: no CUDA device on this machine (torch {torch.__version__}); nothing measured."


def run_gpu_check(cfg: BenchmarkConfig) -> dict[str, Any]:
    """Measure as described in the module docstring; without CUDA, one line and an empty result."""
    if not torch.cuda.is_available():
        print(no_cuda_line())
        return {"skipped": "no CUDA device"}
    device = torch.device("cuda")
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result: dict[str, Any] = {"meta": {"started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                                       "device": device_info(), "config": asdict(cfg.gpu)}}
    with tempfile.TemporaryDirectory(prefix="vla_sensor_gpu_bench_") as tmp:
        work = Path(tmp)
        views = list(cfg.data.views)
        result["steps"] = _guarded(lambda: measure_steps(cfg.gpu, work, views, device))
        result["encoder"] = _guarded(lambda: measure_encoder(cfg.gpu, device))
        result["training"] = _guarded(lambda: measure_training(cfg.gpu, work))
    result["meta"]["duration_s"] = time.perf_counter() - started
    text = markdown(result)
    (out_dir / MARKDOWN_NAME).write_text(text)
    (out_dir / JSON_NAME).write_text(json.dumps(result, indent=2, default=str))
    print(text)
    return result


def _guarded(fn: Any) -> Any:
    """A part's result, or what failed: one part's failure never hides the others' figures."""
    try:
        return fn()
    except Exception as exc:
        log.exception("GPU check part failed")
        return {"status": f"failed: {type(exc).__name__}: {exc}"}
    finally:
        gc.collect()
        torch.cuda.empty_cache()


def _build_on(device: torch.device, gpu: GpuBenchConfig, views: list[str]) -> Any:
    """The model with random weights, created directly on the GPU (a 3B CPU init takes minutes)."""
    from vla_sensor.bench.model_bench import _build, _model_cfg

    model_cfg = _model_cfg(gpu.model, "bfloat16")
    try:
        with device:
            model = _build(model_cfg, views, gpu.image_size)
    except Exception:  # some initialiser that insists on the CPU: build there, then move
        log.warning("building on %s failed; building on the CPU", device, exc_info=True)
        model = _build(model_cfg, views, gpu.image_size)
    return model.to(device), model_cfg


def _to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _time_steps(model: Any, batch: dict[str, Any], gpu: GpuBenchConfig, device: torch.device) -> dict[str, Any]:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        model(batch)["loss"].backward()
        optimizer.step()

    try:
        for _ in range(gpu.warmup):
            step()
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        times = []
        for _ in range(gpu.repeats):
            t0 = time.perf_counter()
            step()
            torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t0)
        return {"step_s": statistics.median(times), "step_samples_s": times,
                "peak_allocated_bytes": int(torch.cuda.max_memory_allocated(device)),
                "peak_reserved_bytes": int(torch.cuda.max_memory_reserved(device))}
    finally:
        optimizer.zero_grad(set_to_none=True)  # frees the gradients before the next row


def measure_steps(gpu: GpuBenchConfig, work: Path, views: list[str], device: torch.device) -> dict[str, Any]:
    """Step rows of the three modes at each batch size, each mode stopping at its first OOM."""
    from vla_sensor.bench.model_bench import _batch
    from vla_sensor.data.synthetic import generate_dataset
    from vla_sensor.models.vla import stage_kwargs

    seconds = max(2.0, max(gpu.batch_sizes) / 10.0 + 1.0)  # at least one batch of the largest size
    recordings = [Path(p) for p in generate_dataset(work / "recordings", trajectories=1, seconds=seconds,
                                                    image_size=gpu.image_size, views=tuple(views), seed=0)]
    t0 = time.perf_counter()
    model, model_cfg = _build_on(device, gpu, views)
    out: dict[str, Any] = {"model": f"{gpu.model} (random weights, bf16, sdpa)", "build_s": time.perf_counter() - t0,
                           "image_size": gpu.image_size, "views": views, "rows": []}
    batches = {bs: _to(_batch(model, recordings, views, gpu.image_size, bs), device) for bs in gpu.batch_sizes}
    for mode in MODES:
        if mode == "stage 2, LoRA":
            model.configure_stage(2, **{**stage_kwargs(model_cfg), "llm": "lora"})
        else:
            model.configure_stage(1)
        model.train()
        for bs in gpu.batch_sizes:
            batch = batches[bs]
            if mode == "stage 1, feature cache":
                with torch.no_grad():
                    features = model.backbone_features(batch)
                batch = {k: v for k, v in batch.items() if k not in MODEL_INPUTS} | features
            row: dict[str, Any] = {"mode": mode, "batch_size": bs}
            try:
                row.update(_time_steps(model, batch, gpu, device), status="measured")
                row["samples_per_s"] = bs / row["step_s"]
            except torch.cuda.OutOfMemoryError as exc:
                row["status"] = f"out of memory at B={bs}: {str(exc).splitlines()[0]}"
            out["rows"].append(row)
            log.info("gpu %s B=%d: %s", mode, bs, row.get("step_s", row["status"]))
            gc.collect()
            torch.cuda.empty_cache()
            if row["status"] != "measured":
                break
    return out


def measure_encoder(gpu: GpuBenchConfig, device: torch.device) -> dict[str, Any]:
    """The sensor encoder at its default sizes: allocator peak with and without checkpointing."""
    from vla_sensor.bench.encoder_bench import bench_training_steps

    cfg = EncoderBenchConfig(lengths=[gpu.encoder_length], batch_size=gpu.encoder_batch_size, repeats=gpu.repeats)
    return bench_training_steps(cfg, device)


def measure_training(gpu: GpuBenchConfig, work: Path) -> dict[str, Any]:
    """``train.py`` on CUDA for ``train_steps`` steps; the medians of its logged figures."""
    run_dir = work / "train_run"
    args = [sys.executable, str(REPO / "train.py"), *gpu.train_overrides, f"trainer.max_steps={gpu.train_steps}",
            f"output_dir={run_dir}", f"data.root={work / 'demo'}", f"data.cache_strategy.cache_dir={work / 'cache'}",
            "logger=jsonl", "trainer.progress_bar=false", "trainer.log_every=10", "trainer.val_every=0",
            "trainer.save_every=0", "trainer.export=false"]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(args, cwd=work, capture_output=True, text=True, timeout=gpu.train_timeout_s)
    except subprocess.TimeoutExpired:
        return {"status": f"timed out after {gpu.train_timeout_s} s", "command": args}
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"status": f"train.py failed ({proc.returncode}): {proc.stderr[-2000:]}", "command": args}
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    logged = [r for r in records if "data_wait_fraction" in r][1:]  # the first interval holds the start-up
    if not logged:
        return {"status": "no log steps after the first", "command": args}
    return {
        "status": "measured", "overrides": gpu.train_overrides, "steps": gpu.train_steps, "wall_s": wall,
        "data_wait_fraction": statistics.median(r["data_wait_fraction"] for r in logged),
        "samples_per_s": statistics.median(r["samples_per_s"] for r in logged),
        "step_time_s": statistics.median(r["step_time_s"] for r in logged),
        "gpu_peak_allocated_bytes": max((r.get("gpu_peak_allocated_bytes", 0) for r in logged), default=0),
    }


def markdown(result: dict[str, Any]) -> str:
    """The report: the GPU, then one table per part."""
    dev = result["meta"]["device"]
    parts = ["## GPU check (`python benchmark.py benchmark=gpu`)",
             f"*Device: {dev.get('gpu')}; torch {dev['torch']}; {result['meta']['duration_s']:.0f} s in all.*"]
    steps = result.get("steps", {})
    if "rows" in steps:
        rows = [[r["mode"], str(r["batch_size"]),
                 fmt.seconds(r.get("step_s")) if "step_s" in r else fmt.NA,
                 f"{r['samples_per_s']:.1f}" if "samples_per_s" in r else fmt.NA,
                 fmt.nbytes(r.get("peak_allocated_bytes")) if "peak_allocated_bytes" in r else fmt.NA,
                 r["status"]] for r in steps["rows"]]
        parts += [f"### Training step: {steps['model']}, {len(steps['views'])} views {steps['image_size']}×"
                  f"{steps['image_size']} (built in {steps['build_s']:.0f} s)",
                  fmt.table(["Mode", "B", "Step (median)", "Samples/s", "Peak CUDA allocated", "Status"], rows),
                  _cache_ratio(steps["rows"])]
    else:
        parts += ["### Training step", steps.get("status", fmt.NA)]
    enc = result.get("encoder", {})
    parts.append("### Sensor encoder activation memory (CUDA allocator peak, default sizes)")
    if "lengths" in enc:
        erows = [[f"T={t}, B={enc['batch_size']}", fmt.nbytes(r["plain"]["bytes"]), fmt.nbytes(r["checkpointed"]["bytes"]),
                  fmt.percent(r["memory_ratio"] - 1), fmt.ratio(r["time_ratio"])] for t, r in enc["lengths"].items()]
        parts.append(fmt.table(["Input", "No checkpointing", "Checkpointing", "Memory", "Step time ×"], erows))
    else:
        parts.append(enc.get("status", fmt.NA))
    tr = result.get("training", {})
    parts.append("### Default training loop on CUDA")
    if tr.get("status") == "measured":
        parts.append(fmt.table(["Run", "Steps", "Data wait (median fraction)", "Samples/s", "Step", "Wall"], [[
            " ".join(tr["overrides"]) or "defaults", str(tr["steps"]), f"{100 * tr['data_wait_fraction']:.1f}%",
            f"{tr['samples_per_s']:.1f}", fmt.seconds(tr["step_time_s"]), fmt.seconds(tr["wall_s"])]]))
    else:
        parts.append(tr.get("status", fmt.NA))
    return "\n\n".join(parts) + "\n"


def _cache_ratio(rows: list[dict[str, Any]]) -> str:
    """Stage-1 samples/s with the cache ÷ without, per batch size (the target is ≥ 5×)."""
    by = {(r["mode"], r["batch_size"]): r.get("samples_per_s") for r in rows}
    cells = []
    for (mode, bs), value in by.items():
        base = by.get(("stage 1", bs))
        if mode == "stage 1, feature cache" and value and base:
            cells.append(f"B={bs}: {value / base:.1f}×")
    return "Stage-1 samples/s with the feature cache ÷ without: " + (", ".join(cells) or fmt.NA) + " (target ≥ 5×)."

