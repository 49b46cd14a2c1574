"""A MuJoCo needle-insertion simulator: demonstrations with real contact forces and closed-loop success.

``MUJOCO_GL`` defaults to ``egl`` (headless rendering) before MuJoCo is imported; see docs/sim.md.
The public names are imported lazily, so ``import vla_sensor.sim`` alone loads neither MuJoCo nor
matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

from vla_sensor.sim import gl  # noqa: F401  (sets MUJOCO_GL before mujoco is imported)

_EXPORTS = {
    "InsertionEnv": "vla_sensor.sim.env",
    "ScriptedExpert": "vla_sensor.sim.expert",
    "EpisodeRecord": "vla_sensor.sim.rollout",
    "run_episode": "vla_sensor.sim.rollout",
    "run_episodes": "vla_sensor.sim.rollout",
    "summarize": "vla_sensor.sim.rollout",
    "write_sim_report": "vla_sensor.sim.report",
    "SceneParams": "vla_sensor.sim.scene",
    "SceneRanges": "vla_sensor.sim.scene",
    "SuccessCriterion": "vla_sensor.sim.scene",
    "RenderingUnavailable": "vla_sensor.sim.gl",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'vla_sensor.sim' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
