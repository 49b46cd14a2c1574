"""Stage-1 feature cache on CPU: the step with and without it, next to the backbone's forward alone.

For the tiny model and for a larger random backbone where the backbone is most of the step (more
layers and width, 224×224 views), measured side by side in one run: the uncached stage-1 training
step (backbone forward without autograd + fusion, head, backward, AdamW), the cached step (the same
on stored features), and the backbone's forward alone; plus the cache's bytes per sample, its build
time over the generated recordings and the batch loading time with images vs with features.
The repeats of the three timings are interleaved so that drifting machine load hits them alike.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import torch

from vla_sensor.bench import fmt
from vla_sensor.bench.config import FeatureCacheBenchConfig
from vla_sensor.bench.timing import Timing, measure, time_once

log = logging.getLogger(__name__)

MODEL_INPUTS = ("pixel_values", "image_grid_thw", "input_ids", "attention_mask")
TARGET_REMOVED = 0.9  # the cache must remove at least this share of the backbone's time from the step


def large_arch(cfg: FeatureCacheBenchConfig) -> dict[str, Any]:
    """The tiny architecture widened and deepened until the backbone dominates a CPU step."""
    from vla_sensor.models.backbone import tiny_arch

    arch = tiny_arch()
    half = cfg.large_hidden // cfg.large_heads // 2
    hw = half * 3 // 8  # M-RoPE sections (t, h, w) summing to head_dim / 2, as Qwen's 16/24/24 of 64
    arch["text_config"].update(hidden_size=cfg.large_hidden, intermediate_size=4 * cfg.large_hidden,
                               num_hidden_layers=cfg.large_layers, num_attention_heads=cfg.large_heads,
                               num_key_value_heads=cfg.large_heads // 2,
                               rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                "mrope_section": [half - 2 * hw, hw, hw]})
    arch["vision_config"].update(depth=cfg.large_vision_depth, hidden_size=cfg.large_vision_hidden,
                                 intermediate_size=2 * cfg.large_vision_hidden, num_heads=4,
                                 out_hidden_size=cfg.large_hidden, window_size=112,
                                 fullatt_block_indexes=[cfg.large_vision_depth // 2 - 1, cfg.large_vision_depth - 1])
    return arch


def _model(arch: dict[str, Any] | None, views: list[str], image_size: int, pooling: str) -> Any:
    from vla_sensor.models.vla import QwenVLAWithSensor

    torch.manual_seed(0)
    backbone = {"random_init": True, "arch": arch} if arch else None
    model = QwenVLAWithSensor(backbone=backbone,
                              config={"sensor_hidden_dim": 64, "sensor_output_dim": 128, "pooling": pooling},
                              action_dim=7, horizon=8, view_selection=views, image_size=(image_size, image_size))
    model.configure_stage(1)
    return model.train()


def _dataset(model: Any, recordings: list[Path], views: list[str], image_size: int) -> Any:
    from vla_sensor.data.dataset import InsertionDataset

    ds = InsertionDataset([str(p) for p in recordings], horizon=8, view_selection=views, cache_strategy="stream",
                          cache_images=False, image_size=(image_size, image_size), progress=False, num_workers=0)
    ds.input_transform = model.build_sample_transform(views, (image_size, image_size))
    return ds


def _interleaved(fns: dict[str, Any], repeats: int, warmup: int) -> dict[str, Timing]:
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            samples[name].extend(measure(fn, repeats=1, warmup=0).samples)
    return {name: Timing.from_samples(values) for name, values in samples.items()}


def measure_config(label: str, arch: dict[str, Any] | None, image_size: int, cfg: FeatureCacheBenchConfig,
                   recordings: list[Path], views: list[str]) -> dict[str, Any]:
    """One model: step timings, cache size and build time, batch loading with images vs features."""
    from vla_sensor.data.loader import build_loader
    from vla_sensor.training.feature_cache import FeatureDataset, open_store

    model = _model(arch, views, image_size, cfg.pooling)
    ds = _dataset(model, recordings, views, image_size)
    batches = [list(range(i, i + cfg.batch_size)) for i in range(0, cfg.batch_size * 2, cfg.batch_size)]
    batch = next(iter(build_loader(ds, ds.config, shuffle=False, batches=batches[:1])))
    with torch.no_grad():
        cached = {k: v for k, v in batch.items() if k not in MODEL_INPUTS}
        cached.update(model.backbone_features(batch))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step(b: dict[str, Any]) -> None:
        optimizer.zero_grad(set_to_none=True)
        model(b)["loss"].backward()
        optimizer.step()

    def backbone() -> None:
        with torch.no_grad():
            model.backbone_features(batch)

    t = _interleaved({"uncached": lambda: step(batch), "cached": lambda: step(cached), "backbone": backbone},
                     cfg.repeats, cfg.warmup)
    with tempfile.TemporaryDirectory(prefix="feature_cache_bench_") as where:
        device = torch.device("cpu")
        build_s, store = time_once(lambda: open_store(model, ds, ds.config, where, "bench", device=device, progress=False))
        warm_s, _ = time_once(lambda: open_store(model, ds, ds.config, where, "bench", device=device, progress=False))
        fds = FeatureDataset(ds, store)
        loads = {}
        for name, source in (("images", ds), ("features", fds)):
            loader = build_loader(source, ds.config, shuffle=False, batches=batches * cfg.load_repeats)
            it = iter(loader)
            loads[name] = measure(lambda it=it: next(it), repeats=2 * cfg.load_repeats - 1, warmup=1).to_dict()
    # ratios of the fastest interleaved repeat: on a shared machine the least disturbed estimate of each cost
    uncached, cached_s, fwd = t["uncached"].min, t["cached"].min, t["backbone"].min
    removed = (uncached - cached_s) / fwd
    row = {
        "config": label, "pooling": cfg.pooling, "image_size": image_size, "views": len(views), "batch_size": cfg.batch_size,
        "hidden_size": model.hidden_size,
        "backbone_parameters": sum(p.numel() for p in model.backbone.parameters()),
        "uncached_step": t["uncached"].to_dict(), "cached_step": t["cached"].to_dict(),
        "backbone_forward": t["backbone"].to_dict(),
        "backbone_share": fwd / uncached, "speedup": uncached / cached_s, "backbone_time_removed": removed,
        "target_met": removed >= TARGET_REMOVED,
        "samples": len(ds), "bytes_per_sample": store.nbytes / len(ds), "cache_bytes": store.nbytes,
        "build_s": build_s, "build_s_per_sample": build_s / len(ds), "warm_open_s": warm_s,
        "batch_load": loads,
    }
    log.info("feature cache %s: step %.4f s -> %.4f s (backbone %.4f s, %.0f%% of it removed)", label, uncached,
             cached_s, fwd, 100 * removed)
    return row


def run(cfg: FeatureCacheBenchConfig, recordings: list[Path], views: list[str], image_size: int) -> dict[str, Any]:
    threads = torch.get_num_threads()
    rows = [measure_config("tiny (random weights, fp32)", None, image_size, cfg, recordings, views)]
    if cfg.large_layers > 0:
        label = (f"larger (text {cfg.large_layers}×{cfg.large_hidden}, vision {cfg.large_vision_depth}×"
                 f"{cfg.large_vision_hidden}, random weights, fp32)")
        rows.append(measure_config(label, large_arch(cfg), cfg.large_image_size, cfg, recordings, views))
    return {"device": "cpu", "torch_threads": threads, "target_removed": TARGET_REMOVED, "rows": rows}


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def format_section(result: dict[str, Any], heading: str) -> str:
    """The markdown of the section (one row per model)."""
    rows = []
    for r in result.get("rows", []):
        loads = r["batch_load"]
        rows.append([
            f"{r['config']}, {r['views']} views {r['image_size']}×{r['image_size']}, B={r['batch_size']}, "
            f"model.pooling={r.get('pooling', 'last')}",
            fmt.timing(r["uncached_step"]), fmt.timing(r["cached_step"]), fmt.timing(r["backbone_forward"]),
            _pct(r["backbone_share"]), f"**{_pct(r['backbone_time_removed'])}**"
            + (" (target met)" if r["target_met"] else " (target missed)"),
            fmt.ratio(r["speedup"]), fmt.nbytes(r["bytes_per_sample"]),
            f"{fmt.seconds(r['build_s'])} ({r['samples']} samples); warm {fmt.seconds(r['warm_open_s'])}",
            f"{fmt.timing(loads['images'])} → {fmt.timing(loads['features'])}",
        ])
    header = ["Model", "Stage-1 step, uncached", "Step, cached", "Backbone forward alone", "Backbone share of step",
              "Backbone time removed", "Step speed-up", "Cache bytes / sample", "Cache build", "Batch load: images → features"]
    note = (
        "One step = forward + backward + AdamW of the trainable parts (sensor encoder, fusion, head). "
        "Timings: median (min–max) of interleaved repeats; the share, removed time and speed-up are computed "
        "from the fastest repeat of each, the least disturbed by other load on the machine. "
        f"Backbone time removed = (uncached − cached) ÷ backbone forward; the target is ≥ {TARGET_REMOVED:.0%}. "
        "Batch load: one batch from the loader builder (no workers) with images decoded and pre-processed vs "
        "with stored features (images skipped). The build runs the backbone once per sample."
    )
    return "\n\n".join(["### Stage-1 feature cache", heading, fmt.table(header, rows), note])
