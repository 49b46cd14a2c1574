"""Sensor windows: which stream samples belong to an action step, and extracting them.

Three modes, all ending at the action's timestamp (no sample after it is ever used):

- ``fixed``: the last ``window_size`` samples at or before ``t``; left-padded with zeros at a
  trajectory's start (the valid length is reported, never faked).
- ``seconds``: the samples in ``(t - window_seconds, t]`` — the row count follows the stream's rate,
  so 325/650/1300 Hz streams give different T and the encoder resamples them.
- ``adaptive``: exactly the samples in ``[start_time, end_time]``, no pad and no cut.

Caches use :func:`window_bounds` (vectorised ``np.searchsorted``) to turn every sample's window
into ``(start, end)`` row indices of one contiguous stream once, so ``__getitem__`` only slices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vla_sensor.data.errors import DataFormatError

SENSOR_CHANNELS = 1026


@dataclass(frozen=True)
class WindowSpec:
    """How each action step's sensor window is chosen."""

    window_size: int = 650
    window_seconds: float | None = None
    adaptive: bool = False

    def __post_init__(self) -> None:
        if not self.adaptive and self.window_seconds is None and self.window_size < 1:
            raise DataFormatError(f"sensor_window_size: expected a positive integer, got {self.window_size}")
        if self.window_seconds is not None and not self.window_seconds > 0:
            raise DataFormatError(
                f"sensor_window_seconds: expected a positive number of seconds, got {self.window_seconds}"
            )

    @classmethod
    def of(cls, data: Any) -> WindowSpec:
        """The window settings of a ``data`` config (``sensor_window_size``, ``sensor_window_seconds``,
        ``adaptive_window``): the dataset and a deployed policy cut the same windows from one config."""
        return cls(int(data.sensor_window_size), data.sensor_window_seconds, bool(data.adaptive_window))

    @property
    def mode(self) -> str:
        if self.adaptive:
            return "adaptive"
        return "fixed" if self.window_seconds is None else "seconds"

    @property
    def fixed_length(self) -> int | None:
        """T of every window in fixed mode; None when T varies per sample."""
        return self.window_size if self.mode == "fixed" else None


def adaptive_start_times(action_timestamps: np.ndarray, window_seconds: float | None = None) -> np.ndarray:
    """Start times for adaptive windows: the previous action step (or ``t - window_seconds``).

    The first step looks back by the first action interval, so it gets a window of the same span.
    """
    ts = np.asarray(action_timestamps, dtype=np.float64)
    if window_seconds is not None:
        return ts - window_seconds
    starts = np.empty_like(ts)
    starts[1:] = ts[:-1]
    if ts.size:
        starts[0] = ts[0] - (ts[1] - ts[0] if ts.size > 1 else 0.0)
    return starts


def window_bounds(
    timestamps: np.ndarray,
    end_times: np.ndarray,
    spec: WindowSpec,
    start_times: np.ndarray | None = None,
    source: str = "sensor stream",
) -> tuple[np.ndarray, np.ndarray]:
    """Row bounds ``[start, end)`` of every window in one stream, computed with ``searchsorted``.

    ``end_times`` are the action timestamps. In adaptive mode ``start_times`` defaults to
    :func:`adaptive_start_times`. Raises :class:`DataFormatError` naming ``source`` and the time when
    a window holds no sample.
    """
    ts = np.asarray(timestamps, dtype=np.float64)
    t_end = np.asarray(end_times, dtype=np.float64)
    end = np.searchsorted(ts, t_end, side="right").astype(np.int64)
    if spec.mode == "fixed":
        start = np.maximum(end - spec.window_size, 0)
    elif spec.mode == "seconds":
        start = np.searchsorted(ts, t_end - spec.window_seconds, side="right").astype(np.int64)
    else:
        if start_times is None:
            start_times = adaptive_start_times(t_end, spec.window_seconds)
        start = np.searchsorted(ts, np.asarray(start_times, np.float64), side="left").astype(np.int64)
    empty = np.flatnonzero(end <= start)
    if empty.size:
        i = int(empty[0])
        first = f"{ts[0]:.6f}" if ts.size else "none"
        raise DataFormatError(
            f"{source}: the {spec.mode} sensor window ending at t={t_end[i]:.6f} s (action step {i}) "
            f"holds no sensor sample; expected at least one sample at or before that time "
            f"(stream starts at {first} s, {ts.size} samples)"
        )
    return start, end


def stack_channels(forces: np.ndarray | None, alines: np.ndarray | None) -> np.ndarray:
    """``concat(forces, alines)`` along channels as float32 (forces may be (N,) or (N, F))."""
    parts = []
    for part in (forces, alines):
        if part is None:
            continue
        a = np.asarray(part, dtype=np.float32)
        parts.append(a[:, None] if a.ndim == 1 else a)
    if not parts:
        raise DataFormatError("extract_sensor_window: expected forces and/or alines, got neither")
    return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]


def extract_sensor_window(
    timestamps: np.ndarray,
    forces: np.ndarray | None,
    alines: np.ndarray | None,
    start_time: float | None = None,
    end_time: float | None = None,
    adaptive_window: bool = False,
    window_size: int = 650,
    *,
    window_seconds: float | None = None,
    return_length: bool = False,
    source: str = "sensor stream",
) -> np.ndarray | tuple[np.ndarray, int]:
    """Cut one sensor window out of a stream (the original API: same signature and defaults).

    Returns a float32 ``(T, C)`` array with ``C = F + alines.shape[1]`` (1026 for 1 force + 1025
    OCT samples); with ``return_length=True`` returns ``(window, valid_length)``. The valid rows are
    always the last ``valid_length`` rows.

    - fixed (default): the last ``window_size`` samples in ``[start_time, end_time]``
      (``start_time`` None = from the stream's start), zero-padded on the left to ``window_size``.
    - ``window_seconds``: the samples in ``(end_time - window_seconds, end_time]``, unpadded.
    - ``adaptive_window=True``: exactly the samples in ``[start_time, end_time]``, unpadded.

    ``end_time`` None means the stream's last sample. An empty window raises DataFormatError.
    """
    ts = np.asarray(timestamps, dtype=np.float64)
    if end_time is None:
        if ts.size == 0:
            raise DataFormatError(f"{source}: empty stream, expected at least one sample")
        end_time = float(ts[-1])
    end = int(np.searchsorted(ts, end_time, side="right"))
    if adaptive_window:
        start = 0 if start_time is None else int(np.searchsorted(ts, start_time, side="left"))
    elif window_seconds is not None:
        start = int(np.searchsorted(ts, end_time - window_seconds, side="right"))
    else:
        lo = 0 if start_time is None else int(np.searchsorted(ts, start_time, side="left"))
        start = max(end - int(window_size), lo)
    if end <= start:
        raise DataFormatError(
            f"{source}: no sensor sample in the window [{'-inf' if start_time is None else start_time}, "
            f"{end_time}] s; expected at least one (stream covers "
            f"{(f'{ts[0]:.6f}..{ts[-1]:.6f}' if ts.size else 'nothing')} s)"
        )
    f = None if forces is None else np.asarray(forces)[start:end]
    a = None if alines is None else np.asarray(alines)[start:end]
    rows = stack_channels(f, a)
    length = end - start
    if not adaptive_window and window_seconds is None and length < window_size:
        out = np.zeros((int(window_size), rows.shape[1]), dtype=np.float32)
        out[window_size - length :] = rows
        rows = out
    return (rows, length) if return_length else rows
