"""Record scripted-expert demonstrations in the project's trajectory format.

``python -m vla_sensor.sim.record OUT --episodes 40 --seed 0`` writes ``OUT/episode_000000/`` ...
through :func:`vla_sensor.data.writer.write_trajectory` (atomic per episode): ``actions.npz``
(dx, dy, dz in mm per 0.1 s step), ``images/<view>/`` (png, lossless and byte-for-byte
reproducible), the needle tip position (x, y, z mm) at each step as ``states`` in ``actions.npz``,
``sensor.npz`` (650 Hz ``timestamps``, ``forces``, ``alines``) and ``meta.json`` with
the instruction, the episode's hidden parameters and ``"success"``. The same seed gives the same
episodes; ``python train.py data.root=OUT`` trains on them.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from vla_sensor.data.writer import write_trajectory
from vla_sensor.sim.env import STATE_NAMES, InsertionEnv
from vla_sensor.sim.expert import ExpertConfig, ScriptedExpert
from vla_sensor.sim.scene import CONTROL_HZ, EPISODE_SECONDS, IMAGE_SIZE, PHYSICS_HZ, VIEWS, SceneRanges

ACTION_NAMES = ("dx_mm", "dy_mm", "dz_mm")


def episode_seed(seed: int, index: int) -> int:
    """The env seed of episode ``index`` of a recording made with ``seed`` (independent streams)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, np.uint32)[0])


def record_episode(
    env: InsertionEnv, expert: ScriptedExpert, seed: int, out_dir: str | Path, image_format: str = "png",
    lateral_noise_mm: float = 0.0,
) -> dict[str, Any]:
    """Run the expert for the env's full episode length and write one trajectory; returns its meta.

    ``lateral_noise_mm`` > 0 executes each action with Gaussian noise of that standard deviation added
    to dx and dy, while ``actions.npz`` keeps the expert's own action (noise injection, as in DART): the
    recording then holds the expert correcting a lateral error at every stage of the insertion, not
    only in the first steps, which is what a learned policy needs to recover from its own errors.
    """
    if not lateral_noise_mm >= 0:
        raise ValueError(f"lateral noise: expected a non-negative standard deviation in mm, got {lateral_noise_mm}")
    obs, info = env.reset(seed=seed)
    expert.reset()
    noise = np.random.default_rng([int(seed), 1])
    frames: dict[str, list[np.ndarray]] = {v: [] for v in env.views}
    actions, states, sensors = [], [], [obs["sensor"]["values"]]
    times = [obs["sensor"]["timestamps"]]
    for _ in range(env.max_steps):
        for view in env.views:
            frames[view].append(obs["images"][view])
        states.append(obs["state"])  # where the tip is when the step's action is chosen, as the images
        action = expert.predict(obs)[0]
        actions.append(action)
        executed = action.astype(np.float64)
        if lateral_noise_mm > 0:
            executed[:2] += noise.normal(0.0, lateral_noise_mm, 2)
        obs, _, _, _, info = env.step(executed)
        sensors.append(obs["sensor"]["values"])
        times.append(obs["sensor"]["timestamps"])
    values = np.concatenate(sensors)
    meta = {
        "instruction": env.instruction,
        "action_rate_hz": CONTROL_HZ,
        "sensor_rate_hz": PHYSICS_HZ,
        "views": list(env.views),
        "action_names": list(ACTION_NAMES),
        "state_names": list(STATE_NAMES),
        "success": bool(info["success"]),
        "sim": {
            "seed": int(seed),
            "params": info["params"],
            "criterion": info["criterion"],
            "time_to_success_s": info["time_to_success_s"],
            "peak_force_n": info["peak_force_n"],
            "final_depth_mm": info["tip_depth_mm"],
            "expert": asdict(expert.config),
            "lateral_noise_mm": float(lateral_noise_mm),
        },
    }
    write_trajectory(
        out_dir,
        action_timestamps=np.arange(env.max_steps) / CONTROL_HZ,
        actions=np.asarray(actions, np.float32),
        images=frames,
        sensor={"timestamps": np.concatenate(times), "forces": values[:, 0], "alines": values[:, 1:]},
        meta=meta,
        states=np.asarray(states, np.float32),
        image_format=image_format,
    )
    return meta


def record_into(
    env: InsertionEnv,
    out_dir: str | Path,
    episodes: int,
    seed: int = 0,
    expert: ExpertConfig | None = None,
    image_format: str = "png",
    progress: bool = True,
    lateral_noise_mm: float = 0.0,
) -> list[dict[str, Any]]:
    """Write ``episodes`` trajectories ``episode_000000`` ... under ``out_dir`` with ``env``; their metas.

    ``env`` must run full episodes (``terminate_on_success=False, terminate_on_failure=False``), so
    every trajectory has the same length.
    """
    if episodes < 1:
        raise ValueError(f"episodes: expected at least 1, got {episodes}")
    if env.terminate_on_success or env.terminate_on_failure:
        raise ValueError("env: recording needs full-length episodes; build it with terminate_on_success=False "
                         "and terminate_on_failure=False")
    demo = ScriptedExpert(env, expert or ExpertConfig())
    metas: list[dict[str, Any]] = []
    indices: Any = range(episodes)
    if progress:
        from tqdm.auto import tqdm

        indices = tqdm(indices, desc="recording", unit="ep")
    for i in indices:
        path = Path(out_dir) / f"episode_{i:06d}"
        metas.append(record_episode(env, demo, episode_seed(seed, i), path, image_format, lateral_noise_mm))
        if progress:
            indices.set_postfix(success=f"{np.mean([m['success'] for m in metas]):.0%}")
    return metas


def recording_env(views: Sequence[str] = VIEWS, image_size: int = IMAGE_SIZE, seconds: float = EPISODE_SECONDS,
                  ranges: SceneRanges | None = None) -> InsertionEnv:
    """An environment that runs full-length episodes, as recordings need."""
    return InsertionEnv(
        views=views, image_size=image_size, episode_seconds=seconds, ranges=ranges,
        terminate_on_success=False, terminate_on_failure=False,
    )


def target_ranges(target_range_mm: float | None) -> SceneRanges | None:
    """The scene's parameter ranges with the target drawn within ±``target_range_mm`` (None: the default ±3 mm).

    0 puts the target at the origin in every episode: a depth-only task, where success depends on
    stopping at the hidden depth alone.
    """
    if target_range_mm is None:
        return None
    if not target_range_mm >= 0:
        raise ValueError(f"target range: expected a non-negative number of mm, got {target_range_mm}")
    return replace(SceneRanges(), target_xy_mm=(-float(target_range_mm), float(target_range_mm)))


def record(
    out_dir: str | Path,
    episodes: int,
    seed: int = 0,
    views: Sequence[str] = VIEWS,
    image_size: int = IMAGE_SIZE,
    seconds: float = EPISODE_SECONDS,
    expert: ExpertConfig | None = None,
    image_format: str = "png",
    progress: bool = True,
    target_range_mm: float | None = None,
    lateral_noise_mm: float = 0.0,
) -> list[dict[str, Any]]:
    """Write ``episodes`` trajectories ``episode_000000`` ... under ``out_dir``; returns their metas."""
    env = recording_env(views, image_size, seconds, target_ranges(target_range_mm))
    try:
        return record_into(env, out_dir, episodes, seed, expert, image_format, progress, lateral_noise_mm)
    finally:
        env.close()


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Record scripted-expert insertions in the trajectory format.")
    p.add_argument("out_dir")
    p.add_argument("--episodes", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--views", nargs="+", default=list(VIEWS))
    p.add_argument("--image-size", type=int, default=IMAGE_SIZE)
    p.add_argument("--seconds", type=float, default=EPISODE_SECONDS, help="episode length (every episode runs it fully)")
    p.add_argument("--image-format", choices=("png", "jpg"), default="png")
    p.add_argument("--without-force", action="store_true", help="the expert ignores the force (a weaker demonstrator)")
    p.add_argument("--target-range", type=float, default=None, metavar="MM",
                   help="draw the target within ±MM (default 3; 0: always at the origin, a depth-only task)")
    p.add_argument("--lateral-noise", type=float, default=0.0, metavar="MM",
                   help="execute each action with Gaussian noise of this std on dx, dy; the expert's own "
                        "action is recorded (noise injection: demonstrations of recovering from lateral errors)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    metas = record(
        a.out_dir, a.episodes, a.seed, a.views, a.image_size, a.seconds,
        ExpertConfig(use_force=not a.without_force), a.image_format, progress=not a.no_progress,
        target_range_mm=a.target_range, lateral_noise_mm=a.lateral_noise,
    )
    ok = sum(m["success"] for m in metas)
    print(f"wrote {len(metas)} episodes to {a.out_dir} ({ok} successful)")


if __name__ == "__main__":
    main()
