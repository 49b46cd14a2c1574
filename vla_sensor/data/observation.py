"""The observation contract: what a robot (or the simulator) hands a policy at each control step.

One schema everywhere — the simulator's env returns it, the in-process policy and the policy server
consume it::

    {"images": {view: uint8 (H, W, 3)},
     "sensor": {"timestamps": float64 (n,), "values": float32 (n, C)},
     "instruction": str,
     "state": float32 (S,)}          # optional: the robot's proprioceptive state, robot units

``sensor`` carries the samples recorded since the previous observation of the episode (n may be 0),
so a policy keeps the stream and cuts its windows exactly as the dataset does. ``state`` is what the
recordings hold as ``states`` at this step (the simulator: the tip position in mm); a policy trained
with a state needs it, one trained without ignores it. A :class:`Policy`
turns a stream of observations into action chunks (horizon, A) in robot units.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NotRequired, Protocol, TypedDict, runtime_checkable

import numpy as np


class SensorChunk(TypedDict):
    timestamps: np.ndarray  # (n,) float64 seconds, increasing, after the previous chunk's last
    values: np.ndarray  # (n, C) float32


class Observation(TypedDict):
    images: dict[str, np.ndarray]  # view -> (H, W, 3) uint8
    sensor: SensorChunk
    instruction: str
    state: NotRequired[np.ndarray]  # (S,) float32, robot units


class ObservationError(ValueError):
    """An observation that does not follow the contract; the message names the key and what was expected."""


@runtime_checkable
class Policy(Protocol):
    """Anything that acts: the in-process policy of a trained run, or a client of a policy server."""

    def reset(self) -> None:
        """Forget the episode's sensor stream (call before each episode)."""
        ...

    def predict(self, obs: Observation) -> np.ndarray:
        """The action chunk (horizon, A) float32 in robot units for this observation."""
        ...


def _array(value: Any, where: str, dtype: np.dtype, ndim: int) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise ObservationError(f"{where}: expected a numpy array, got {type(value).__name__}")
    if value.dtype != dtype:
        raise ObservationError(f"{where}: expected dtype {np.dtype(dtype)}, got {value.dtype}")
    if value.ndim != ndim:
        raise ObservationError(f"{where}: expected {ndim} dimensions, got shape {value.shape}")
    return value


def validate_state(state: Any, state_dim: int) -> np.ndarray:
    """A policy's ``state`` input: float32 (state_dim,), finite; ``state_dim`` is the size it was trained with."""
    if state is None:
        raise ObservationError(f"state: missing; the policy was trained with a proprioceptive state and needs "
                               f"'state' float32 ({state_dim},)")
    value = _array(state, "state", np.dtype(np.float32), 1)
    if value.shape[0] != state_dim:
        raise ObservationError(f"state: expected {state_dim} values (float32 ({state_dim},)), got shape {value.shape}")
    if not np.isfinite(value).all():
        raise ObservationError(f"state: NaN or inf in {value.tolist()}; expected finite values")
    return value


def validate_observation(
    obs: Mapping[str, Any], views: Sequence[str] | None = None, channels: int | None = None,
    state_dim: int | None = None,
) -> Observation:
    """``obs`` checked against the contract (and the policy's ``views`` / sensor ``channels`` / ``state_dim``:
    > 0 needs ``state`` of that size; 0 and None do not look at it); returned as is."""
    if not isinstance(obs, Mapping):
        raise ObservationError(f"observation: expected a mapping, got {type(obs).__name__}")
    for key in ("images", "sensor", "instruction"):
        if key not in obs:
            raise ObservationError(f"observation: missing key {key!r}; expected images, sensor, instruction")
    images = obs["images"]
    if not isinstance(images, Mapping):
        raise ObservationError(f"images: expected a mapping view -> (H, W, 3) uint8, got {type(images).__name__}")
    for view in views if views is not None else list(images):
        if view not in images:
            raise ObservationError(f"images: missing view {view!r}; the policy needs {list(views or [])}")
        img = _array(images[view], f"images[{view!r}]", np.dtype(np.uint8), 3)
        if img.shape[2] != 3:
            raise ObservationError(f"images[{view!r}]: expected (H, W, 3) RGB, got shape {img.shape}")
    sensor = obs["sensor"]
    if not isinstance(sensor, Mapping) or "timestamps" not in sensor or "values" not in sensor:
        raise ObservationError("sensor: expected a mapping with 'timestamps' (n,) float64 and 'values' (n, C) float32")
    ts = _array(sensor["timestamps"], "sensor.timestamps", np.dtype(np.float64), 1)
    values = _array(sensor["values"], "sensor.values", np.dtype(np.float32), 2)
    if values.shape[0] != ts.shape[0]:
        raise ObservationError(f"sensor.values: expected {ts.shape[0]} rows (one per timestamp), got {values.shape[0]}")
    if channels is not None and values.shape[1] != channels:
        raise ObservationError(f"sensor.values: expected {channels} channels, got {values.shape[1]}")
    if not (np.isfinite(ts).all() and np.isfinite(values).all()):
        raise ObservationError("sensor: NaN or inf in timestamps or values")
    if ts.shape[0] > 1 and not (np.diff(ts) > 0).all():
        raise ObservationError("sensor.timestamps: expected strictly increasing timestamps")
    if not isinstance(obs["instruction"], str):
        raise ObservationError(f"instruction: expected a string, got {type(obs['instruction']).__name__}")
    if state_dim:  # a policy trained without a state never reads it
        validate_state(obs.get("state"), state_dim)
    return obs  # type: ignore[return-value]
