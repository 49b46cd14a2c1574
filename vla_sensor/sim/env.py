"""``InsertionEnv``: the gymnasium environment of the needle-insertion scene (10 Hz control, 650 Hz physics).

Action (float, shape (3,)): the tip displacement ``(dx, dy, dz)`` in millimetres over the next 0.1 s
step (z up; a negative ``dz`` inserts), the same layout the recorder writes to ``actions.npz``. The
carriage setpoint moves linearly over the step's 65 physics steps. Each axis is clipped to
``MAX_STEP_MM`` and the setpoint to ``WORKSPACE_MM`` (``info["action_clipped"]`` says so).

Observation: the observation contract of :mod:`vla_sensor.data.observation` — the cameras' images
at the step's end, the sensor samples since the previous observation (65 per step, one at reset),
1026 channels each (axial force in N, compressive positive, zeroed at reset; then the A-line), the
instruction, and the robot's proprioceptive ``state``: the needle tip position (x, y, z) in mm at the
step's end, float32 (3,) (z up; the recorder writes it as ``states``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from vla_sensor.data.observation import Observation
from vla_sensor.sim import oct as oct_model
from vla_sensor.sim.gl import import_mujoco
from vla_sensor.sim.scene import (
    CONTROL_HZ,
    EPISODE_SECONDS,
    IMAGE_SIZE,
    MAX_STEP_MM,
    PHYSICS_HZ,
    SUBSTEPS,
    TIP_START_MM,
    VIEWS,
    WORKSPACE_MM,
    SceneParams,
    SceneRanges,
    SuccessCriterion,
    apply_params,
    scene_xml,
)
from vla_sensor.sim.timing import StageTimer

mujoco = import_mujoco()

DEFAULT_INSTRUCTION = "Insert the needle 2 mm below the tissue surface at the red target."
ACTION_DIM = 3
STATE_NAMES = ("tip_x_mm", "tip_y_mm", "tip_z_mm")  # obs["state"]: the needle tip position
SETTLE_STEPS = 20  # physics steps before the force sensor is zeroed at reset


class InsertionEnv(gym.Env):
    """Needle insertion with a hidden surface height and stiffness; see the module docstring."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": CONTROL_HZ}

    def __init__(
        self,
        views: Sequence[str] = VIEWS,
        image_size: int = IMAGE_SIZE,
        episode_seconds: float = EPISODE_SECONDS,
        criterion: SuccessCriterion | None = None,
        ranges: SceneRanges | None = None,
        terminate_on_success: bool = True,
        terminate_on_failure: bool = True,
        instruction: str = DEFAULT_INSTRUCTION,
        force_noise_n: float = 0.005,
        render_mode: str | None = None,
    ) -> None:
        if image_size < 8:
            raise ValueError(f"image_size: expected at least 8 pixels, got {image_size}")
        if not episode_seconds > 0:
            raise ValueError(f"episode_seconds: expected a positive duration, got {episode_seconds}")
        self.views = tuple(views)
        self.image_size = int(image_size)
        self.max_steps = round(episode_seconds * CONTROL_HZ)
        self.criterion = criterion or SuccessCriterion()
        self.ranges = ranges or SceneRanges()
        self.terminate_on_success, self.terminate_on_failure = terminate_on_success, terminate_on_failure
        self.instruction = instruction
        self.force_noise_n = float(force_noise_n)
        self.render_mode = render_mode
        self.action_space = gym.spaces.Box(-MAX_STEP_MM, MAX_STEP_MM, (ACTION_DIM,), np.float32)
        self.model = mujoco.MjModel.from_xml_string(scene_xml(self.image_size))
        self.data = mujoco.MjData(self.model)
        self._tip = self.model.site("tip").id
        self._force_adr = int(self.model.sensor("needle_force").adr[0])
        self._renderer = None
        if self.views:
            from vla_sensor.sim.render import ViewRenderer

            self._renderer = ViewRenderer(self.model, self.views, self.image_size)
        self.timer = StageTimer()
        self.params: SceneParams | None = None
        self._last_images: dict[str, np.ndarray] = {}

    # -- gymnasium API -------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Observation, dict]:
        """A new episode: hidden parameters drawn from ``seed`` (or ``options["params"]``), sensor zeroed."""
        super().reset(seed=seed)
        rng = self.np_random
        params = (options or {}).get("params") or SceneParams.sample(rng, self.ranges)
        self.params = params
        self._noise = np.random.default_rng(rng.integers(0, 2**63))
        with self.timer("physics"):
            apply_params(self.model, params, self.ranges)
            mujoco.mj_resetData(self.model, self.data)
            self.data.ctrl[:] = 0.0
            for _ in range(SETTLE_STEPS):
                mujoco.mj_step(self.model, self.data)
            self._zero = self._raw_force()
        self._setpoint = np.array(TIP_START_MM, np.float64)
        self._setpoint_log = [self._setpoint.copy()]
        self._step = 0
        self._sample = 0
        self._peak, self._violated = 0.0, False
        self._held: list[float] = []  # depths of the current run of in-target samples
        self._reached_at: float | None = None
        self._clipped = False
        force, tip = self._read()
        sensor = self._sensor_chunk(np.array([0.0]), np.array([force]), tip[None, :])
        return self._observation(sensor, tip), self._info(force, tip)

    def step(self, action: Any) -> tuple[Observation, float, bool, bool, dict]:
        if self.params is None:
            raise RuntimeError("InsertionEnv.step: call reset() before step()")
        delta = self._check_action(action)
        start = self._setpoint.copy()
        end = self._clip_setpoint(start + np.clip(delta, -MAX_STEP_MM, MAX_STEP_MM))
        self._clipped = bool(np.any(np.abs(delta) > MAX_STEP_MM) or np.any(end != start + delta))
        forces = np.empty(SUBSTEPS)
        tips = np.empty((SUBSTEPS, 3))
        with self.timer("physics"):
            for i in range(SUBSTEPS):
                sp = start + (end - start) * (i + 1) / SUBSTEPS
                self.data.ctrl[:] = (sp - np.asarray(TIP_START_MM)) * 1e-3
                mujoco.mj_step(self.model, self.data)
                forces[i], tips[i] = self._read()
        self._setpoint = end
        self._setpoint_log.append(end.copy())
        self._sample += SUBSTEPS
        self._step += 1
        times = (self._sample - SUBSTEPS + 1 + np.arange(SUBSTEPS)) / PHYSICS_HZ
        was_success = self.success
        sensor = self._sensor_chunk(times, forces, tips)
        obs = self._observation(sensor, tips[-1])
        reward = 1.0 if self.success and not was_success else 0.0
        terminated = (self.terminate_on_success and self.success) or (self.terminate_on_failure and self._violated)
        truncated = not terminated and self._step >= self.max_steps
        return obs, reward, bool(terminated), bool(truncated), self._info(forces[-1], tips[-1])

    def render(self) -> np.ndarray | None:
        """The first view's latest image (``render_mode="rgb_array"``)."""
        if self.render_mode != "rgb_array" or not self._last_images:
            return None
        return self._last_images[self.views[0]]

    def close(self) -> None:
        """Free the renderer's GL context (safe to call twice)."""
        renderer, self._renderer = self._renderer, None
        if renderer is not None:
            renderer.close()

    # -- state a real robot knows -------------------------------------------------------------
    @property
    def tip_setpoint_mm(self) -> np.ndarray:
        """The commanded tip position (x, y, z) in mm (the robot's own pose, not a hidden parameter)."""
        return self._setpoint.copy()

    def setpoint_at(self, times_s: np.ndarray) -> np.ndarray:
        """(n, 3) commanded tip positions (mm) at past sample times: the robot's own command log."""
        log = np.asarray(self._setpoint_log)
        knots = np.arange(log.shape[0]) / CONTROL_HZ
        t = np.asarray(times_s, np.float64)
        return np.stack([np.interp(t, knots, log[:, i]) for i in range(3)], axis=1)

    @property
    def target_xy_mm(self) -> np.ndarray:
        """The target marker's xy in mm (visible in the images)."""
        p = self._require_params()
        return np.array([p.target_x_mm, p.target_y_mm])

    @property
    def success(self) -> bool:
        """Target depth reached and held, and the force limit never exceeded in the episode."""
        return self._reached_at is not None and not self._violated

    # -- internals -----------------------------------------------------------------------------
    def _require_params(self) -> SceneParams:
        if self.params is None:
            raise RuntimeError("InsertionEnv: call reset() first")
        return self.params

    def _check_action(self, action: Any) -> np.ndarray:
        try:
            a = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"action: expected {ACTION_DIM} numbers (dx, dy, dz in mm), got {action!r}") from exc
        if a.shape != (ACTION_DIM,):
            raise ValueError(f"action: expected shape ({ACTION_DIM},) (dx, dy, dz in mm), got shape {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"action: expected finite values, got {a.tolist()}")
        return a

    @staticmethod
    def _clip_setpoint(sp: np.ndarray) -> np.ndarray:
        lo, hi = np.array(WORKSPACE_MM).T
        return np.clip(sp, lo, hi)

    def _raw_force(self) -> float:
        # The sensor reports the force the carriage exerts on the needle in the needle's frame
        # (z along the shaft, up): a push from the tissue reads negative, so flip it.
        return -float(self.data.sensordata[self._force_adr + 2])

    def _read(self) -> tuple[float, np.ndarray]:
        return self._raw_force() - self._zero, self.data.site_xpos[self._tip] * 1e3

    def _sensor_chunk(self, times: np.ndarray, forces: np.ndarray, tips: np.ndarray) -> dict[str, np.ndarray]:
        """Bookkeeping of success at every sample, then the (n, 1026) sensor values."""
        p, c = self._require_params(), self.criterion
        depth = p.surface_mm - tips[:, 2]
        lateral = np.hypot(tips[:, 0] - p.target_x_mm, tips[:, 1] - p.target_y_mm)
        ok = (np.abs(depth - c.target_depth_mm) <= c.depth_tolerance_mm) & (lateral <= c.lateral_tolerance_mm)
        window = max(1, round(c.hold_s * PHYSICS_HZ))
        for k in range(times.shape[0]):
            if ok[k]:
                self._held.append(float(depth[k]))
            else:
                self._held.clear()
            if self._reached_at is None and len(self._held) >= window and not self._violated:
                recent = self._held[-window:]
                if max(recent) - min(recent) <= c.hold_travel_mm + 1e-9:  # at rest, not passing through
                    self._reached_at = float(times[k])
        self._peak = max(self._peak, float(forces.max()))
        self._violated = self._violated or self._peak > c.force_limit_n
        self._last_depths = depth
        with self.timer("sensor"):
            noisy = forces + self.force_noise_n * self._noise.standard_normal(forces.shape[0])
            values = np.empty((times.shape[0], 1 + oct_model.SAMPLES), np.float32)
            values[:, 0] = noisy
            values[:, 1:] = oct_model.alines(-depth, self._noise)
        return {"timestamps": np.asarray(times, np.float64), "values": values}

    def _observation(self, sensor: dict[str, np.ndarray], tip: np.ndarray) -> Observation:
        images: dict[str, np.ndarray] = {}
        if self._renderer is not None:
            with self.timer("render"):
                images = self._renderer.render(self.data)
        self._last_images = images
        return {"images": images, "sensor": sensor, "instruction": self.instruction,  # type: ignore[typeddict-item]
                "state": np.asarray(tip, np.float32).copy()}

    def _info(self, force: float, tip: np.ndarray) -> dict[str, Any]:
        p, c = self._require_params(), self.criterion
        return {
            "params": p.to_dict(),
            "criterion": c.to_dict(),
            "time_s": self._sample / PHYSICS_HZ,
            "step": self._step,
            "tip_mm": tip.tolist(),
            "tip_depth_mm": float(p.surface_mm - tip[2]),
            "sample_depth_mm": self._last_depths.copy(),
            "lateral_error_mm": float(np.hypot(tip[0] - p.target_x_mm, tip[1] - p.target_y_mm)),
            "force_n": float(force),
            "peak_force_n": self._peak,
            "hold_s": len(self._held) / PHYSICS_HZ,
            "success": self.success,
            "time_to_success_s": self._reached_at if self.success else None,
            "force_limit_exceeded": self._violated,
            "action_clipped": self._clipped,
        }
