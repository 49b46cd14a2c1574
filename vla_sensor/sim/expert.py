"""A force-guided scripted expert, as a :class:`~vla_sensor.data.observation.Policy` predicting chunks.

Depth comes from the force stream only: the expert descends until the zeroed force rises above
``contact_force_n``, fits force against its commanded tip height over every in-contact sample
(``F = k * (surface - z)``, a line), and drives the tip to ``target_depth_mm`` below the fitted
surface, refitting as samples arrive. Lateral alignment uses the target's xy (visible in the images)
and the robot's own commanded pose, both read from the environment, as a real robot knows its pose.
With ``use_force=False`` it inserts to the same depth below the *average* surface height of the
scene's range instead — the baseline that shows how much the force signal is worth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vla_sensor.data.observation import Observation
from vla_sensor.sim.env import ACTION_DIM, InsertionEnv
from vla_sensor.sim.scene import MAX_STEP_MM

MIN_FIT_SAMPLES = 8
MIN_FIT_SPAN_MM = 0.02


@dataclass(frozen=True)
class ExpertConfig:
    """Gains and speeds of the scripted expert (mm per 0.1 s control step)."""

    use_force: bool = True
    horizon: int = 8
    approach_mm: float = 0.4  # per step, until contact
    insert_mm: float = 0.2  # per step, once the surface is estimated
    xy_gain: float = 0.5  # fraction of the lateral error removed per step
    # Lateral speed limit per axis (mm per step): spreads the correction of a 3 mm offset over ~15
    # steps of the descent instead of 4, so that a learned policy sees the lateral motion in many
    # samples rather than in the first few only (docs/sim.md measures both).
    lateral_mm: float = 0.2
    contact_force_n: float = 0.03


class ScriptedExpert:
    """Scripted demonstrator bound to one :class:`InsertionEnv`; see the module docstring."""

    def __init__(self, env: InsertionEnv, config: ExpertConfig | None = None) -> None:
        config = config or ExpertConfig()
        if config.horizon < 1:
            raise ValueError(f"horizon: expected at least 1 action per chunk, got {config.horizon}")
        self.env, self.config = env, config
        self.reset()

    def reset(self) -> None:
        self._z: list[np.ndarray] = []
        self._f: list[np.ndarray] = []
        self.surface_estimate_mm: float | None = None

    def predict(self, obs: Observation) -> np.ndarray:
        """The next ``horizon`` actions (dx, dy, dz) in mm, planned from the current surface estimate."""
        sp = self.env.tip_setpoint_mm
        self._observe(obs["sensor"]["timestamps"], obs["sensor"]["values"][:, 0])
        goal_z = self._goal_z()
        target = self.env.target_xy_mm
        c = self.config
        lateral = min(c.lateral_mm, MAX_STEP_MM)
        chunk = np.zeros((c.horizon, ACTION_DIM), np.float32)
        pos = sp.copy()
        for j in range(c.horizon):
            step = np.empty(3)
            step[:2] = np.clip(c.xy_gain * (target - pos[:2]), -lateral, lateral)
            if goal_z is None:  # no contact yet, or in contact with too few samples to fit
                step[2] = -(c.insert_mm if self._z else c.approach_mm)
            else:
                speed = c.approach_mm if pos[2] - goal_z > 1.0 + c.approach_mm else c.insert_mm
                step[2] = np.clip(goal_z - pos[2], -speed, speed)
            chunk[j] = step
            pos += step
        return chunk

    def _observe(self, times: np.ndarray, forces: np.ndarray) -> None:
        """Collect (commanded z, force) of the in-contact samples."""
        contact = forces > self.config.contact_force_n
        if contact.any():
            self._z.append(self.env.setpoint_at(times[contact])[:, 2])
            self._f.append(forces[contact])
            self.surface_estimate_mm = self._fit_surface()

    def _fit_surface(self) -> float | None:
        z, f = np.concatenate(self._z), np.concatenate(self._f)
        if z.shape[0] < MIN_FIT_SAMPLES or np.ptp(z) < MIN_FIT_SPAN_MM:
            return self.surface_estimate_mm
        slope, intercept = np.polyfit(z, f, 1)  # f = slope * z + intercept, slope = -k < 0
        if slope >= 0:
            return self.surface_estimate_mm
        return float(-intercept / slope)

    def _goal_z(self) -> float | None:
        depth = self.env.criterion.target_depth_mm
        if not self.config.use_force:
            return float(np.mean(self.env.ranges.surface_mm)) - depth
        return None if self.surface_estimate_mm is None else self.surface_estimate_mm - depth
