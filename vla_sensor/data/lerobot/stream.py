"""The (k, C) convention: how per-frame chunks of a high-rate stream map to sample timestamps.

A feature of shape (k, C) at ``fps`` f holds, in the row of frame i (timestamp t_i), the k samples of
a k·f Hz stream that END at t_i: sample j is at ``t_i - (k - 1 - j) / (k·f)``. So the last sample of a
frame is at the frame's own timestamp, the chunk covers ``(t_i - 1/f, t_i]``, and a sensor window
ending at an action step's timestamp includes that frame's samples but nothing after it. A (C,)
feature is the k = 1 case: one sample at t_i.

Reader and exporter share these functions, so import -> export -> import reproduces the stream
exactly: the exporter picks, for every reconstructed sample time, the latest recorded sample at or
before it (:func:`hold_indices`), which for an imported stream is that very sample.
"""

from __future__ import annotations

import numpy as np

from vla_sensor.data.errors import DataFormatError

# recorded sample times and reconstructed grid times that differ by less than this are the same sample
TIME_TOLERANCE_S = 1e-6


def split_shape(shape: tuple[int, ...], where: str) -> tuple[int, int]:
    """(k samples per frame, C channels) of a sensor feature's shape (C,) or (k, C)."""
    if len(shape) == 1:
        return 1, int(shape[0])
    if len(shape) == 2:
        return int(shape[0]), int(shape[1])
    raise DataFormatError(f"{where}: shape {shape} is not a sensor feature; expected (C,) or (k, C) per frame")


def sample_offsets(k: int, fps: float) -> np.ndarray:
    """(k,) offsets of a frame's samples from its timestamp: ``-(k - 1 - j) / (k·fps)``, last one 0."""
    return -(k - 1 - np.arange(k, dtype=np.float64)) / (k * float(fps))


def stream_timestamps(frame_ts: np.ndarray, k: int, fps: float) -> np.ndarray:
    """(M·k,) float64 sample times of a (k, C) feature over frames at ``frame_ts``."""
    return (np.asarray(frame_ts, np.float64)[:, None] + sample_offsets(k, fps)[None, :]).reshape(-1)


def hold_indices(src_ts: np.ndarray, dst_ts: np.ndarray) -> np.ndarray:
    """Index of the latest ``src_ts`` sample at or before each ``dst_ts`` (the first one before the start).

    A zero-order hold: causal (never a sample from after the time asked for) and exact where the two
    grids coincide up to :data:`TIME_TOLERANCE_S`.
    """
    idx = np.searchsorted(src_ts, np.asarray(dst_ts) + TIME_TOLERANCE_S, side="right") - 1
    return np.clip(idx, 0, len(src_ts) - 1)
