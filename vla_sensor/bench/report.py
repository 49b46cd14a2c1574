"""Markdown tables, the JSON file and the bar chart, all from one results dict.

Each table has one column per sensor-cache strategy, compared side by side: "No cache" is the
no-cache path (``data.cache=false``: every sample re-reads its sensor file), "Per-window cache" is
strategy ``windows`` (every window pre-extracted into its own array), then ``stream`` and ``mmap``,
and a last column with the ratios. Every table is headed with the device it ran on.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from vla_sensor.bench import fmt
from vla_sensor.bench.targets import TargetResult

STRATEGY_COLUMNS = {
    "none": "No cache",
    "windows": "Per-window cache (`windows`)",
    "stream": "`stream`",
    "mmap": "`mmap`",
}
STRATEGIES = tuple(STRATEGY_COLUMNS)
FAST = ("stream", "mmap")


def _g(d: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _med(t: dict[str, Any] | None) -> float | None:
    return None if not t else float(t["median"])


def _improvement(no_cache: float | None, per: dict[str, float | None]) -> str:
    """No-cache time ÷ the best of ``stream``/``mmap`` (bold), then ÷ the per-window cache for reference."""
    ours = {s: v for s, v in per.items() if s in FAST and v}
    parts = []
    if ours:
        best = min(ours, key=lambda s: ours[s])  # type: ignore[arg-type,return-value]
        parts.append(f"**{fmt.ratio(fmt.safe_div(no_cache, ours[best]))}** ({best})")
    if per.get("windows"):
        parts.append(f"windows {fmt.ratio(fmt.safe_div(no_cache, per['windows']))}")
    return "; ".join(parts) or fmt.NA


def _strategy_row(label: str, timings: dict[str, dict[str, Any] | None]) -> list[str]:
    cells = [fmt.timing(timings.get(s)) for s in STRATEGIES]
    meds = {s: _med(timings.get(s)) for s in STRATEGIES}
    return [label, *cells, _improvement(meds["none"], meds)]


def device_heading(results: dict[str, Any], gpu: bool = False, threads: int | None = None) -> str:
    dev = results["meta"]["device"]
    label = dev.get("gpu") if gpu and dev.get("gpu") else dev["cpu"]
    n = threads if threads is not None else dev["torch_threads"]
    return f"*Device: {label}; torch {dev['torch']}, {n} intra-op thread(s).*"


def dataset_line(results: dict[str, Any]) -> str:
    d = _g(results, "data", "dataset")
    if not d:
        return ""
    return (
        f"Data: {d['trajectories']} generated recordings × {d['seconds']:g} s at {d['sensor_rate']:g} Hz "
        f"({d['channels']} channels), {d['samples']} samples, window {d['window']} rows "
        f"({fmt.nbytes(d['window_nbytes'])} float32), raw sensor stream {fmt.nbytes(d['raw_sensor_nbytes'])}, "
        f"images {d['views']} at {d['image_size']}×{d['image_size']}."
    )


def loading_table(results: dict[str, Any]) -> str:
    data = results.get("data") or {}
    if "per_sample" not in data:
        return f"### Data Loading Speed\n\nNot measured: {data.get('skipped', 'section disabled')}."
    rows: list[list[str]] = []
    per_sample = data["per_sample"]
    none = _g(per_sample, "none", "float32")
    for dtype in data.get("dtypes", ["float32"]):
        timings = {s: (none if s == "none" else _g(per_sample, s, dtype)) for s in STRATEGIES}
        how = "a view, no copy" if dtype == "float32" else "decoded to float32"
        rows.append(_strategy_row(f"Sensor window per sample, {dtype} cache, as returned ({how})", timings))
    mat = data.get("per_sample_materialized", {})
    timings = {s: _g(mat, s, "float32") for s in STRATEGIES}
    rows.append(_strategy_row("Sensor window per sample, float32, materialized (copied into a batch buffer)", timings))
    floor = _med(_g(results, "floor", "window", "timing"))
    if floor:
        cells = [fmt.ratio(fmt.safe_div(_med(_g(mat, s, "float32")), floor)) for s in STRATEGIES]
        rows.append([f"  … materialized, as a multiple of the memcpy floor ({fmt.seconds(floor)})", *cells, fmt.NA])
    bs = data.get("batch_size", 16)
    for workers, per in sorted(data.get("batch", {}).items()):
        how = "" if str(workers) == "0" else "; stream/mmap: workers send window refs, main process copies the windows"
        rows.append(_strategy_row(f"Full batch loading (B={bs}, images + sensor), num_workers={workers}{how}", per))
    bfloor = _med(_g(results, "floor", "batch", "timing"))
    if bfloor and "0" in data.get("batch", {}):
        cells = [fmt.ratio(fmt.safe_div(_med(_g(data, "batch", "0", s)), bfloor)) for s in STRATEGIES]
        rows.append([f"  … as a multiple of the memcpy floor ({fmt.seconds(bfloor)})", *cells, fmt.NA])
    epoch = data.get("epoch") or {}
    if epoch:
        rows.append(
            _strategy_row(
                f"Epoch time ({epoch['samples']} samples, B={bs}, num_workers={epoch['num_workers']})",
                epoch.get("subsequent", {}),
            )
        )
    header = ["Metric", *STRATEGY_COLUMNS.values(), "Improvement (×)"]
    note = (
        "The loading process runs with the thread count above, as DataLoader workers do. \"As returned\" is what `dataset.sensor_window(i)` costs (float32 "
        "`stream`/`mmap`/`windows` return a view of the cache); \"materialized\" adds the copy into a batch "
        "buffer that collation makes, and is the figure compared with the memcpy floor. Improvement: "
        "no cache ÷ the best of `stream`/`mmap` (bold), and no cache ÷ the per-window cache (`windows`)."
    )
    return "\n\n".join(["### Data Loading Speed", device_heading(results, threads=data.get("torch_threads")), fmt.table(header, rows), note])


def results_table(results: dict[str, Any]) -> str:
    """Dataset init, first and later epochs and per-sample loading, one column per strategy."""
    data = results.get("data") or {}
    if "init" not in data:
        return f"### Benchmarking Results\n\nNot measured: {data.get('skipped', 'section disabled')}."
    init = data["init"]
    rows = []
    init_cells = {s: init.get(s) for s in ("none", "windows", "stream")}
    init_cells["mmap"] = init.get("mmap_cold")
    row = [fmt.timing(init_cells.get(s)) for s in STRATEGIES]
    row[3] = f"cold {fmt.timing(init.get('mmap_cold'))}; warm {fmt.timing(init.get('mmap_warm'))}"
    warm = fmt.safe_div(_med(init.get("mmap_cold")), _med(init.get("mmap_warm")))
    rows.append(["Dataset initialization", *row, f"mmap warm vs cold: **{fmt.ratio(warm)}**"])
    epoch = data.get("epoch") or {}
    if epoch:
        rows.append(_strategy_row(f"First epoch ({epoch['samples']} samples)", epoch.get("first", {})))
        rows.append(_strategy_row(f"Subsequent epochs ({epoch['samples']} samples)", epoch.get("subsequent", {})))
    per_sample = data.get("per_sample", {})
    rows.append(_strategy_row("Sample loading (sensor window, float32, as returned)", {s: _g(per_sample, s, "float32") for s in STRATEGIES}))
    header = ["Operation", *STRATEGY_COLUMNS.values(), "Speedup"]
    return "\n\n".join(["### Benchmarking Results", device_heading(results, threads=data.get("torch_threads")), fmt.table(header, rows)])


def memory_table(results: dict[str, Any]) -> str:
    mem = results.get("memory") or {}
    if "cache_nbytes" not in mem:
        return f"### Memory Usage\n\nNot measured: {mem.get('skipped', 'section disabled')}."
    raw = mem["raw_sensor_nbytes"]
    rows = []
    for dtype in sorted({d for per in mem["cache_nbytes"].values() for d in per}, key=["float32", "float16", "int8"].index):
        cells = []
        for s in STRATEGIES:
            n = _g(mem, "cache_nbytes", s, dtype)
            cells.append(fmt.NA if n is None else f"{fmt.nbytes(n)} ({fmt.ratio(fmt.safe_div(n, raw))} raw)")
        win = _g(mem, "cache_nbytes", "windows", "float32")
        ours = _g(mem, "cache_nbytes", "stream", dtype)
        saving = fmt.NA if not (win and ours) else f"{fmt.ratio(win / ours)} smaller than windows"
        rows.append([f"Sensor cache, {dtype} (raw stream {fmt.nbytes(raw)})", *cells, saving])
    procs = mem.get("processes") or {}
    if procs:
        def cell(s: str, key: str) -> str:
            return fmt.nbytes(_g(procs, s, key))

        rows.append(["Main process: resident growth from init + reading every window", *[cell(s, "main_rss") for s in STRATEGIES], fmt.NA])
        rows.append(["  … of which private dirty (heap written by this process)", *[cell(s, "main_private_dirty") for s in STRATEGIES], fmt.NA])
        rows.append(["Per DataLoader worker: private (dirty + clean)", *[cell(s, "worker_private") for s in STRATEGIES], fmt.NA])
        rows.append(["Per worker: private dirty (heap the worker wrote)", *[cell(s, "worker_private_dirty") for s in STRATEGIES], fmt.NA])
        rows.append(["Per worker: shared with the parent / page cache", *[cell(s, "worker_shared") for s in STRATEGIES], fmt.NA])
        rows.append(["Per worker: Pss", *[cell(s, "worker_pss") for s in STRATEGIES], fmt.NA])
        copies = []
        for s in STRATEGIES:
            c, n = _g(procs, s, "worker_cache_private_copy_max"), _g(procs, s, "cache_nbytes")
            sh = _g(procs, s, "worker_cache_shared_mean")
            copies.append(fmt.NA if c is None else f"{fmt.nbytes(c)} copied / {fmt.nbytes(sh)} shared")
        rows.append(["Per worker: pages of the cache privately copied / shared", *copies, "0 copied = no per-worker copy"])
    header = ["Component", *STRATEGY_COLUMNS.values(), "Savings"]
    note = (
        f"Worker figures: /proc/<pid>/smaps_rollup of each of the {procs.get('num_workers', 2) if procs else 2} "
        "workers (mean) after they loaded an epoch; the main process read every cached page first. Worker "
        "private memory includes heap from building batches; whether the cache itself is copied is read page by "
        "page from /proc/<pid>/pagemap over the cache's address range (max over workers)."
    )
    return "\n\n".join(["### Memory Usage", device_heading(results), fmt.table(header, rows), note])


def _pass(t: dict[str, Any]) -> str:
    """Total of a pass over samples, with the per-sample mean and median."""
    samples = t["samples"]
    total = sum(samples)
    return (f"{fmt.seconds(total)} in all ({fmt.seconds(total / len(samples))} mean, "
            f"{fmt.seconds(t['median'])} median per sample)")


def verification_table(results: dict[str, Any]) -> str:
    """What checking the mmap cache's per-block CRCs costs at start-up and per sample."""
    v = _g(results, "data", "verification")
    if not v:
        return ""
    gb = v["cache_nbytes"] / 1e9
    full_extra = _med(v["warm_init_verify_full"]) - _med(v["warm_init"])  # type: ignore[operator]
    rows = [
        ["Warm start (cache on disk): sidecar, header, first and last block checked (default)", fmt.timing(v["warm_init"]),
         fmt.NA],
        ["Warm start with `verify_full=true` (every block's CRC checked at open)", fmt.timing(v["warm_init_verify_full"]),
         f"+{fmt.seconds(full_extra)} ({full_extra / gb:.2f} s/GB)"],
        ["Every sample's window once, materialized, first pass in a process (each block's CRC checked once)",
         _pass(v["first_read"]), fmt.NA],
        ["The same pass again, blocks already checked (every later read: a bitmap lookup)", _pass(v["verified"]),
         f"verification: {fmt.seconds(sum(v['first_read']['samples']) - sum(v['verified']['samples']))} per pass "
         f"({(sum(v['first_read']['samples']) - sum(v['verified']['samples'])) / gb:.2f} s/GB, once per process)"],
    ]
    note = (f"{fmt.nbytes(v['cache_nbytes'])} float32 `mmap` cache in {v['blocks']} blocks of 64 KiB, each with a CRC32; "
            "the page cache holds the files (in-RAM figures). Every sample of the dataset is read once, then again.")
    return "\n\n".join(["### Cache verification cost", device_heading(results), fmt.table(["Step", "Time", "Per GB / ratio"], rows), note])


def quantization_table(results: dict[str, Any]) -> str:
    q = _g(results, "memory", "quantization")
    if not q:
        return ""
    rows = [
        [
            dtype,
            fmt.nbytes(v["nbytes"]),
            f"{v['max_abs']:.3g}",
            f"{v['mean_abs']:.3g}",
            f"{v['max_rel_range']:.3g}",
            "yes" if v.get("within_bound") else "no",
        ]
        for dtype, v in q.items()
    ]
    header = ["Storage dtype", "Cache bytes", "Max abs error", "Mean abs error", "Max error / channel range", "Within documented bound"]
    return "\n\n".join(["### Quantization error of the cache", fmt.table(header, rows)])


def encoder_table(results: dict[str, Any]) -> str:
    enc = results.get("encoder") or {}
    training = enc.get("training")
    if not training:
        return f"### Sensor encoder (training step)\n\nNot measured: {enc.get('skipped', 'section disabled')}."
    metric = "peak allocated" if training["memory_metric"] == "cuda_peak_allocated" else "bytes saved for backward"
    rows = []
    for length, row in training["lengths"].items():
        rows.append(
            [
                f"T={length}",
                fmt.timing(row["plain"]["step"]),
                fmt.timing(row["checkpointed"]["step"]),
                fmt.ratio(row["time_ratio"]),
                fmt.nbytes(row["plain"]["bytes"]),
                fmt.nbytes(row["checkpointed"]["bytes"]),
                f"**{fmt.percent(row['memory_ratio'] - 1)}**",
            ]
        )
    header = ["Input", "Step (no checkpointing)", "Step (checkpointing)", "Time ×", f"Activations, {metric} (no checkpointing)", "(checkpointing)", "Savings"]
    sizes = (
        f"B={training['batch_size']}, C={training['channels']}, hidden {training['hidden_dim']}, "
        f"output {training['output_dim']}, {training['parameters'] / 1e6:.1f} M parameters; one step = "
        "forward + backward + AdamW; activations exclude parameters and the input batch."
    )
    parts = ["### Sensor encoder (training step)", device_heading(results, gpu=enc.get("device") == "cuda", threads=enc.get("torch_threads")), sizes, fmt.table(header, rows)]
    interp = enc.get("interpolation")
    if interp:
        conv = _med(interp.get("conv_stack"))
        irows = [
            [mode, fmt.timing(t), fmt.timing(interp.get("conv_stack")), fmt.ratio(fmt.safe_div(_med(t), conv))]
            for mode, t in interp["modes"].items()
        ]
        shape = "×".join(str(s) for s in interp["input_shape"])
        parts += [
            f"Resampling ({shape}) → {interp['target_length']} steps vs the {interp['conv_stack_label']} on the result:",
            fmt.table(["Interpolation mode", "Resample", "Conv stack", "Resample / conv"], irows),
        ]
    return "\n\n".join(parts)


def floor_table(results: dict[str, Any]) -> str:
    floor = results.get("floor") or {}
    rows = []
    labels = (
        ("window", "One sensor window (the floor of per-sample loads)"),
        ("batch", "One batch: sensor + images + actions (the floor of batch loads)"),
        ("batch_fresh", "One batch into a newly allocated buffer (adds first-touch page faults; context only)"),
    )
    for key, label in labels:
        f = floor.get(key)
        if f:
            bw = fmt.safe_div(f["nbytes"], _med(f["timing"]))
            rows.append([label, fmt.nbytes(f["nbytes"]), fmt.timing(f["timing"]), f"{bw / 1e9:.2f} GB/s" if bw else fmt.NA])
    if not rows:
        return ""
    header = ["memcpy of", "Bytes", "Time", "Bandwidth"]
    return "\n\n".join(["### The floor: a plain memory copy of the same bytes", device_heading(results), fmt.table(header, rows)])


def model_table(results: dict[str, Any]) -> str:
    model = results.get("model") or {}
    rows = [
        [
            r["config"],
            r["device"],
            str(r.get("batch_size", fmt.NA)),
            fmt.timing(r.get("step")) if r.get("step") else fmt.NA,
            f"{r['samples_per_s']:.2f}" if r.get("samples_per_s") else fmt.NA,
            fmt.nbytes(r.get("peak_bytes")) if r.get("peak_bytes") is not None else fmt.NA,
            fmt.nbytes(r.get("saved_for_backward_bytes")) if r.get("saved_for_backward_bytes") is not None else fmt.NA,
            f"{r['trainable_parameters'] / 1e6:.2f} M / {r['total_parameters'] / 1e6:.2f} M" if r.get("total_parameters") else fmt.NA,
            r.get("status", ""),
        ]
        for r in model.get("rows", [])
    ]
    if not rows:
        rows = [["fusion model", *[fmt.NA] * 7, model.get("skipped", "not measured yet")]]
    header = ["Config", "Device", "B", "Step", "Samples/s", "Peak memory", "Saved for backward", "Trainable / total params", "Status"]
    note = (
        "One step = forward + backward + AdamW on a batch of generated samples passed through the model's "
        "input transform (Qwen-VL pre-processing) and the collate. Peak memory on CPU: resident-set growth during a step (sampled "
        "every ms, after a first step created the optimizer state, so mostly reused memory); on a GPU: the "
        "allocator's peak. Saved for backward: activation bytes autograd kept (unique storages, parameters "
        "excluded)."
    )
    return "\n\n".join(["### Model training step", device_heading(results), fmt.table(header, rows), note])


def targets_table(targets: list[TargetResult]) -> str:
    mark = {True: "✅ pass", False: "❌ fail", None: "— not measured"}
    rows = [[t.target, t.measured, mark[t.passed] + (f" ({t.note})" if t.note and t.passed is None else "")] for t in targets]
    return "\n\n".join(["### Targets", fmt.table(["Target", "Measured", "Result"], rows)])


def markdown(results: dict[str, Any], targets: list[TargetResult]) -> str:
    meta = results["meta"]
    head = [
        f"## Benchmark ({meta['name']})",
        f"Devices: {meta['device']['cpu']}" + (f"; {meta['device']['gpu']}" if meta["device"].get("gpu") else "; no GPU"),
        "Times are medians over repeats with (min–max); ratios compare medians measured side by side in this run.",
        dataset_line(results),
    ]
    parts = [
        "\n\n".join(p for p in head if p),
        loading_table(results),
        results_table(results),
        memory_table(results),
        verification_table(results),
        quantization_table(results),
        encoder_table(results),
        floor_table(results),
        model_table(results),
        targets_table(targets),
    ]
    return "\n\n".join(p for p in parts if p) + "\n"


def _finite(obj: Any) -> Any:
    """JSON has no inf/NaN: write them as null so the file stays standard JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def write_json(results: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(_finite(results), indent=2, default=str))


def write_chart(results: dict[str, Any], path: Path) -> bool:
    """A bar chart of the headline figures (log scale where they span orders of magnitude)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: list[tuple[str, dict[str, float], bool]] = []
    data = results.get("data") or {}
    per = {s: _med(_g(data, "per_sample", s, "float32")) for s in STRATEGIES}
    per["memcpy floor"] = _med(_g(results, "floor", "window", "timing"))
    panels.append(("Sensor window per sample, as returned (ms)", {k: v * 1e3 for k, v in per.items() if v}, True))
    batch = {f"{s} w{w}": _med(_g(data, "batch", w, s)) for w in sorted(data.get("batch", {})) for s in STRATEGIES}
    batch["memcpy floor"] = _med(_g(results, "floor", "batch", "timing"))
    panels.append((f"Batch of {data.get('batch_size', 16)} (ms)", {k: v * 1e3 for k, v in batch.items() if v}, True))
    init = {k: _med(v) for k, v in (data.get("init") or {}).items()}
    panels.append(("Dataset init (s)", {k: v for k, v in init.items() if v}, True))
    cache = {s: _g(results, "memory", "cache_nbytes", s, "float32") for s in STRATEGIES if s != "none"}
    cache["raw stream"] = _g(results, "memory", "raw_sensor_nbytes")
    panels.append(("Sensor cache, float32 (MB)", {k: v / 1e6 for k, v in cache.items() if v}, False))
    enc = _g(results, "encoder", "training", "lengths") or {}
    act = {}
    for length, row in enc.items():
        act[f"T={length}"] = row["plain"]["bytes"] / 1e6
        act[f"T={length} ckpt"] = row["checkpointed"]["bytes"] / 1e6
    panels.append(("Encoder activations (MB)", act, False))
    steps = {}
    for length, row in enc.items():
        steps[f"T={length}"] = row["plain"]["step"]["median"]
        steps[f"T={length} ckpt"] = row["checkpointed"]["step"]["median"]
    panels.append(("Encoder training step (s)", steps, False))
    panels = [p for p in panels if p[1]]
    if not panels:
        return False
    cols = 3
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 4 * rows), squeeze=False)
    for ax, (title, values, log) in zip(axes.flat, panels):
        ax.bar(list(values), list(values.values()), color="tab:blue")
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)
        if log:
            ax.set_yscale("log")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"vla-sensor benchmark ({results['meta']['name']}) — {results['meta']['device']['cpu']}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
