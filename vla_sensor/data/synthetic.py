"""Generated insertion recordings in the exact on-disk format (demo data and sensor ablations).

Physics of one trajectory (all lengths in mm, seeded per trajectory):

- the needle tip starts ``surface_mm`` ~ U(1, 4) above a tissue surface that the cameras cannot
  see, waits ``start_delay_s`` ~ U(0, 2.5) s, descends at ``speed`` ~ U(0.6, 1.4) mm/s, slows
  exponentially inside the last ``SLOW_ZONE_MM`` before a target penetration of
  ``TARGET_PENETRATION_MM`` below the surface and stops there. Meanwhile an xy servo pulls the tip over the target (offset decays at 0.8 /s).
- force: ``k * penetration**1.5`` after contact (k ~ U(1.5, 2.5) N/mm^1.5) plus noise, 0 before.
- OCT A-line (1025 samples over 6 mm ahead of the tip): a surface peak at the tip-to-surface
  distance before contact, a subsurface layer 1.5 mm under the surface (before and after contact),
  tissue scattering behind the surface, plus noise.
- images: a top view per camera (orthographic): the target ring and the needle tip, so the xy
  offset is visible but the depth is not.
- actions (7-D per step, robot units): dx, dy, dz in mm over the next step, drx, dry in degrees
  (tilt following the xy offset), drz (a slow known-phase wobble) and the insertion progress
  ``clip(penetration / target, 0, 1)``. ``dz`` and progress depend on the hidden surface height,
  so they are predictable from the sensor window but not from the images, instruction or step.

CLI: ``python -m vla_sensor.data.synthetic OUT_DIR --trajectories 8 --seconds 6 --sensor-rate 650``.
"""

from __future__ import annotations

import argparse
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vla_sensor.data.disk_cache import Chunks
from vla_sensor.data.writer import write_trajectory

OCT_SAMPLES = 1025
OCT_RANGE_MM = 6.0
TARGET_PENETRATION_MM = 1.0
SLOW_ZONE_MM = 0.8
LAYER_DEPTH_MM = 1.5
XY_GAIN = 0.8
ACTION_DIM = 7
OCT_PIECE_BYTES = 16 << 20  # A-lines generated and written per piece
TASK_INSTRUCTION = "Insert the needle into the target to 1 mm below the surface."  # written to meta.json


def _view_params(view: str) -> tuple[float, float, float, float]:
    """(px per mm, x offset px, y offset px, background level) — fixed per view name."""
    known = {"left": (8.0, 3.0, -2.0, 0.55), "oak": (10.0, -2.0, 3.0, 0.45)}
    if view in known:
        return known[view]
    h = zlib.crc32(view.encode())
    return 7.0 + (h % 5), float(h % 7) - 3.0, float((h >> 3) % 7) - 3.0, 0.4 + (h % 20) / 100


def _render(size: int, view: str, ex: float, ey: float, rng: np.random.Generator) -> np.ndarray:
    scale, ox, oy, bg = _view_params(view)
    c = (size - 1) / 2
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    img = np.full((size, size, 3), bg, np.float32)
    r_t = np.hypot(xx - (c + ox), yy - (c + oy))
    ring = np.abs(r_t - size * 0.12) < max(1.0, size / 40)
    img[ring] = (0.85, 0.15, 0.15)
    tx, ty = c + ox + ex * scale, c + oy + ey * scale
    shaft = (np.abs((xx - tx) - (yy - ty)) < max(1.0, size / 48)) & (xx > tx) & (yy > ty)
    img[shaft] = (0.7, 0.7, 0.75)
    img[np.hypot(xx - tx, yy - ty) < size * 0.05] = (0.1, 0.15, 0.6)
    img += rng.normal(0.0, 0.03, img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def _depth(t: np.ndarray, surface: float, speed: float, delay: float) -> np.ndarray:
    """Tip depth below its start: still until ``delay``, constant speed, then exponential approach."""
    t = np.maximum(np.asarray(t, np.float64) - delay, 0.0)
    goal = surface + TARGET_PENETRATION_MM
    t1 = (goal - SLOW_ZONE_MM) / speed
    return np.where(t <= t1, speed * t, goal - SLOW_ZONE_MM * np.exp(-(speed / SLOW_ZONE_MM) * (t - t1)))


def _oct(z: np.ndarray, surface: float, rng: np.random.Generator) -> np.ndarray:
    res = OCT_RANGE_MM / (OCT_SAMPLES - 1)
    idx = np.arange(OCT_SAMPLES, dtype=np.float32)[None, :]
    ds = (surface - z).astype(np.float32)[:, None] / res  # surface distance, px (<0: inside)
    dl = ds + LAYER_DEPTH_MM / res
    sigma = 4.0
    out = 0.6 * np.exp(-0.5 * ((idx - dl) / sigma) ** 2)
    out += np.where(ds > 0, 1.0, 0.0) * np.exp(-0.5 * ((idx - ds) / sigma) ** 2)
    start = np.maximum(ds, 0.0)
    out += np.where(idx >= start, 0.25 * np.exp(-(idx - start) / 300.0), 0.0)
    out += rng.normal(0.0, 0.03, out.shape).astype(np.float32)
    return out.astype(np.float32)


def generate_trajectory(
    out_dir: str | Path,
    index: int,
    seconds: float = 6.0,
    sensor_rate: float | None = 650.0,
    action_rate: float = 10.0,
    image_size: int = 64,
    views: Sequence[str] = ("left", "oak"),
    seed: int = 0,
    instruction: str = TASK_INSTRUCTION,
) -> Path:
    """Write one trajectory directory; ``sensor_rate=None`` writes no sensor file."""
    rng = np.random.default_rng([seed, index])
    surface = float(rng.uniform(1.0, 4.0))
    speed = float(rng.uniform(0.6, 1.4))
    gain = float(rng.uniform(1.5, 2.5))
    e0 = rng.uniform(-1.5, 1.5, 2)
    phase = float(rng.uniform(0, 2 * np.pi))
    delay = float(rng.uniform(0.0, 2.5))
    root = Path(out_dir)

    m = round(seconds * action_rate)
    t = np.arange(m) / action_rate
    dt = 1.0 / action_rate
    z0, z1 = _depth(t, surface, speed, delay), _depth(t + dt, surface, speed, delay)
    e_t = e0[None, :] * np.exp(-XY_GAIN * t)[:, None]
    e_next = e0[None, :] * np.exp(-XY_GAIN * (t + dt))[:, None]
    actions = np.zeros((m, ACTION_DIM), np.float64)
    actions[:, 0:2] = e_next - e_t
    actions[:, 2] = z1 - z0
    actions[:, 0:3] += rng.normal(0.0, 0.002, (m, 3))
    actions[:, 3] = -2.0 * e_t[:, 1] * dt
    actions[:, 4] = 2.0 * e_t[:, 0] * dt
    actions[:, 5] = 0.05 * np.sin(phase + 2 * np.pi * t / 3.0)
    actions[:, 6] = np.clip((z0 - surface) / TARGET_PENETRATION_MM, 0.0, 1.0)
    frames = {
        view: [_render(image_size, view, float(e_t[k, 0]), float(e_t[k, 1]), rng) for k in range(m)] for view in views
    }
    meta: dict = {
        "instruction": instruction,
        "action_rate_hz": action_rate,
        "views": list(views),
        "synthetic": {
            "surface_mm": surface,
            "speed_mm_s": speed,
            "start_delay_s": delay,
            "force_gain": gain,
            "xy0_mm": e0.tolist(),
            "target_penetration_mm": TARGET_PENETRATION_MM,
            "seed": seed,
            "index": index,
        },
    }
    sensor = None
    if sensor_rate is not None:
        n = round(seconds * sensor_rate) + 1
        ts = np.arange(n) / sensor_rate + rng.uniform(0.0, 0.2 / sensor_rate, n)
        ts[0] = 0.0
        z = _depth(ts, surface, speed, delay)
        pen = np.maximum(z - surface, 0.0)
        forces = (gain * pen**1.5 + rng.normal(0.0, 0.01, n)).astype(np.float32)
        # the A-lines (4.1 kB a row) are computed while they are written, a piece at a time: memory does
        # not grow with the recording's length, and the values equal one call over the whole stream
        rows = max(1, OCT_PIECE_BYTES // (4 * OCT_SAMPLES))
        alines = (_oct(z[i : i + rows], surface, rng) for i in range(0, n, rows))
        sensor = {"timestamps": ts, "forces": forces, "alines": Chunks((n, OCT_SAMPLES), np.dtype(np.float32), alines)}
        meta["sensor_rate_hz"] = sensor_rate
    write_trajectory(root, action_timestamps=t, actions=actions, images=frames, sensor=sensor, meta=meta)
    return root


def generate_dataset(
    out_dir: str | Path,
    trajectories: int = 8,
    seconds: float = 6.0,
    sensor_rate: float | Sequence[float] = 650.0,
    action_rate: float = 10.0,
    image_size: int = 64,
    views: Sequence[str] = ("left", "oak"),
    no_sensor_trajectories: int = 0,
    seed: int = 0,
    instruction: str = TASK_INSTRUCTION,
) -> list[Path]:
    """Write ``trajectories`` directories ``traj_000...`` under ``out_dir`` (deterministic per seed).

    ``sensor_rate`` may be a list, cycled over trajectories (multi-rate data). The last
    ``no_sensor_trajectories`` directories get no sensor file.
    """
    rates = [float(sensor_rate)] if np.isscalar(sensor_rate) else [float(r) for r in sensor_rate]  # type: ignore[arg-type]
    if trajectories < 1 or not 0 <= no_sensor_trajectories <= trajectories:
        raise ValueError(
            f"expected trajectories >= 1 and 0 <= no_sensor_trajectories <= trajectories, got "
            f"{trajectories} and {no_sensor_trajectories}"
        )
    paths = []
    for i in range(trajectories):
        rate = None if i >= trajectories - no_sensor_trajectories else rates[i % len(rates)]
        paths.append(
            generate_trajectory(
                Path(out_dir) / f"traj_{i:03d}", i, seconds, rate, action_rate, image_size, views, seed, instruction
            )
        )
    return paths


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out_dir")
    p.add_argument("--trajectories", type=int, default=8)
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--sensor-rate", type=float, nargs="+", default=[650.0], help="Hz; several are cycled")
    p.add_argument("--action-rate", type=float, default=10.0)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--views", nargs="+", default=["left", "oak"])
    p.add_argument("--no-sensor-trajectories", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--instruction", default=TASK_INSTRUCTION)
    a = p.parse_args(argv)
    paths = generate_dataset(
        a.out_dir, a.trajectories, a.seconds, a.sensor_rate, a.action_rate, a.image_size, a.views,
        a.no_sensor_trajectories, a.seed, a.instruction,
    )
    print(f"wrote {len(paths)} trajectories to {a.out_dir}")


if __name__ == "__main__":
    main()
