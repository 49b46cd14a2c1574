"""LeRobot section of the benchmark: the 650-row sensor window from a LeRobot dataset vs the native format.

The same generated recordings are written natively and exported to LeRobot v3.0 ((65, 1026) per 10 Hz
frame); both are read with the memory-mapped sensor cache in one process, one after the other, and
timed on the same sample indices. Reported: the per-sample window (as returned, and copied into a
buffer as collation does), the first-run cache build (reading the parquet once) and the warm start
(cache reused, sensor columns never read).
"""

from __future__ import annotations

import gc
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from vla_sensor.bench.fmt import ratio, safe_div, table, timing
from vla_sensor.bench.timing import measure_each, time_once

WINDOW = 650
TARGET_RATIO = 1.5  # LeRobot window time / native window time


def _settings(quick: bool) -> dict[str, Any]:
    return {"trajectories": 2 if quick else 6, "seconds": 3.0 if quick else 12.0, "samples": 200 if quick else 2000}


def _build(paths: list[Path], reader: Any, cache_dir: Path) -> Any:
    from vla_sensor.data.dataset import InsertionDataset

    return InsertionDataset([str(p) for p in paths], sensor_window_size=WINDOW, cache_strategy="mmap",
                            cache_dir=str(cache_dir), reader=reader, progress=False, cache_images=False,
                            view_selection=[])


def _window_timings(ds: Any, order: np.ndarray) -> dict[str, Any]:
    out = np.empty((WINDOW, ds.num_channels), np.float32)

    def copy(i: int) -> None:
        out[:] = ds.sensor_window(int(i))[0]

    warm = order[: min(20, len(order))]
    view = measure_each(lambda i: ds.sensor_window(int(i)), order, warmup_items=warm)
    copied = measure_each(copy, order, warmup_items=warm)
    return {"view": view.to_dict(), "copy": copied.to_dict()}


def measure_lerobot(quick: bool, work_dir: str | Path) -> dict[str, Any]:
    """Native vs LeRobot mmap windows, LeRobot cache build and warm start; JSON-able."""
    from vla_sensor.data.format import TrajectoryReader
    from vla_sensor.data.lerobot.export import ExportSettings, export_dataset
    from vla_sensor.data.lerobot.reader import LeRobotReader
    from vla_sensor.data.synthetic import generate_dataset

    cfg = _settings(quick)
    work = Path(work_dir) / "lerobot_bench"
    shutil.rmtree(work, ignore_errors=True)
    native = [Path(p) for p in generate_dataset(work / "native", trajectories=cfg["trajectories"],
                                                seconds=cfg["seconds"], sensor_rate=650.0, image_size=32,
                                                views=("left",), seed=0)]
    export_s, _ = time_once(lambda: export_dataset(work / "native", work / "lerobot", ExportSettings(fps=10.0),
                                                   TrajectoryReader(), progress=False))
    reader = LeRobotReader(sensor_features=["observation.sensor"], expected_channels=1026)
    episodes = reader.discover(work / "lerobot")

    build_s, lr = time_once(lambda: _build(episodes, reader, work / "cache_lerobot"))
    del lr
    gc.collect()
    warm_s, lr = time_once(lambda: _build(episodes, LeRobotReader(sensor_features=["observation.sensor"],
                                                                  expected_channels=1026), work / "cache_lerobot"))
    nat_build_s, nat = time_once(lambda: _build(native, TrajectoryReader(), work / "cache_native"))
    rng = np.random.default_rng(0)
    order = rng.integers(0, min(len(lr), len(nat)), cfg["samples"])
    result: dict[str, Any] = {
        "quick": quick, "trajectories": len(native), "seconds": cfg["seconds"], "samples": len(lr),
        "window": WINDOW, "channels": int(lr.num_channels), "export_s": export_s,
        "lerobot_build_s": build_s, "lerobot_warm_s": warm_s, "native_build_s": nat_build_s,
        "lerobot_bytes": sum(f.stat().st_size for f in (work / "lerobot").rglob("*") if f.is_file()),
    }
    t0 = time.perf_counter()
    result["native"] = _window_timings(nat, order)
    result["lerobot"] = _window_timings(lr, order)
    result["timed_s"] = time.perf_counter() - t0
    result["ratio_view"] = safe_div(result["lerobot"]["view"]["median"], result["native"]["view"]["median"])
    result["ratio_copy"] = safe_div(result["lerobot"]["copy"]["median"], result["native"]["copy"]["median"])
    result["target_ratio"] = TARGET_RATIO
    result["meets_target"] = bool(result["ratio_copy"] is not None and result["ratio_copy"] <= TARGET_RATIO)
    del lr, nat
    gc.collect()
    shutil.rmtree(work, ignore_errors=True)
    return result


def format_lerobot_section(result: dict[str, Any]) -> str:
    """Markdown: the window times side by side, and the one-time costs."""
    from vla_sensor.bench.fmt import seconds

    r = result
    head = (f"{r['trajectories']} recordings × {r['seconds']:g} s at 650 Hz, 1026 channels, exported to LeRobot "
            f"v3.0 as (65, 1026) per 10 Hz frame; {r['samples']} samples, {r['window']}-row windows, mmap cache.")
    rows = [
        ["native", timing(r["native"]["view"]), timing(r["native"]["copy"]), "1×"],
        ["LeRobot", timing(r["lerobot"]["view"]), timing(r["lerobot"]["copy"]), ratio(r["ratio_copy"])],
    ]
    windows = table(["format", "window (as returned)", "window (copied)", "vs native (copied)"], rows)
    verdict = "meets" if r["meets_target"] else "misses"
    once = table(["one-time cost", "time"], [
        ["export native → LeRobot", seconds(r["export_s"])],
        ["first run: LeRobot sensor cache build", seconds(r["lerobot_build_s"])],
        ["warm start on LeRobot (cache reused)", seconds(r["lerobot_warm_s"])],
        ["first run: native sensor cache build", seconds(r["native_build_s"])],
    ])
    return (f"### LeRobot datasets\n\n{head}\n\n{windows}\n\nThe LeRobot window {verdict} the target "
            f"(≤ {r['target_ratio']:g}× native).\n\n{once}\n")
