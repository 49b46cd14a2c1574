"""A live sensor stream: the samples of one episode as they arrive, cut into windows as the dataset does.

A deployed policy receives the sensor samples since its previous query (the observation contract of
:mod:`vla_sensor.data.observation`). :class:`LiveSensorStream` keeps the recent ones in a ring
buffer and cuts the window that ends at the query's time with :func:`~vla_sensor.data.windows.window_bounds`
— the function every dataset cache uses — with the same left padding of fixed windows, so a policy
sees at run time exactly the windows it was trained on.
"""

from __future__ import annotations

import numpy as np

from vla_sensor.data.observation import ObservationError
from vla_sensor.data.windows import WindowSpec, adaptive_start_times, window_bounds


class LiveSensorStream:
    """The most recent ``capacity`` samples of one episode, and the time the policy was last queried at.

    The sample values live in a ring of ``capacity`` rows: an append writes only the new rows and
    nothing ever moves, so no request pays for copying the history (a window is copied out of the
    ring once, in at most two pieces). The timestamps, which ``window_bounds`` searches, stay
    contiguous in a buffer of twice the capacity whose kept part moves to its front when it is full
    (8 bytes a sample: microseconds, where moving the values was tens of milliseconds).

    ``mirror`` rows after the ring repeat its first ones (written twice by an append), so that any
    window of at most ``mirror`` rows lies in one piece: :meth:`window` can then hand it out as a view
    of the ring, with no copy at all.
    """

    def __init__(self, channels: int, capacity: int = 8192, mirror: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"capacity: expected a positive number of samples, got {capacity}")
        if not 0 <= mirror <= capacity:
            raise ValueError(f"mirror: expected 0 to capacity ({capacity}) rows, got {mirror}")
        self.channels = int(channels)
        self.capacity = int(capacity)
        self.mirror = int(mirror)
        self._ts = np.empty(2 * self.capacity, np.float64)
        # sample k at row k % capacity; rows capacity + r (r < mirror) repeat row r
        self._values = np.empty((self.capacity + self.mirror, self.channels), np.float32)
        self._values.fill(0)  # touch every page now, at connect, not inside a request
        self.reset()

    def reset(self) -> None:
        """Forget the episode (call before each episode)."""
        self._lo = self._hi = 0  # the kept timestamps are [_lo, _hi) of their buffer
        self._count = 0  # samples appended this episode; the kept ones are [_count - kept, _count)
        self.query_times: list[float] = []

    @property
    def timestamps(self) -> np.ndarray:
        """The kept samples' timestamps (a view: do not modify)."""
        return self._ts[self._lo : self._hi]

    @property
    def values(self) -> np.ndarray:
        """The kept samples, oldest first (a copy)."""
        kept = self._hi - self._lo
        return self._copy_rows(self._count - kept, kept, np.empty((kept, self.channels), np.float32))

    def _copy_rows(self, first: int, n: int, out: np.ndarray) -> np.ndarray:
        """Samples ``first .. first + n`` (episode counts) into ``out[-n:]``: at most two pieces of the ring."""
        if n:
            lo = first % self.capacity
            head = min(n, self.capacity - lo)
            dst = out[out.shape[0] - n :]
            dst[:head] = self._values[lo : lo + head]
            dst[head:] = self._values[: n - head]
        return out

    def append(self, timestamps: np.ndarray, values: np.ndarray) -> None:
        """Add the samples since the previous call (timestamps increasing, after the last one kept)."""
        if values.shape[1:] != (self.channels,):
            raise ObservationError(f"sensor.values: expected (n, {self.channels}), got {values.shape}")
        if timestamps.shape[0] and self.timestamps.shape[0] and timestamps[0] <= self.timestamps[-1]:
            raise ObservationError(
                f"sensor.timestamps: the new samples start at {timestamps[0]:.6f} s, not after the previous "
                f"observation's last sample at {self.timestamps[-1]:.6f} s; send only the samples since then"
            )
        timestamps, values = timestamps[-self.capacity :], values[-self.capacity :]
        n = timestamps.shape[0]
        if self._hi + n > self._ts.shape[0]:  # full: move the kept timestamps to the front
            kept = self._hi - self._lo
            self._ts[:kept] = self._ts[self._lo : self._hi]
            self._lo, self._hi = 0, kept
        self._ts[self._hi : self._hi + n] = timestamps
        lo = self._count % self.capacity
        head = min(n, self.capacity - lo)
        self._values[lo : lo + head] = values[:head]
        self._values[: n - head] = values[head:]
        for start, stop in ((lo, lo + head), (0, n - head)):  # the rows written that have a mirror
            stop = min(stop, self.mirror)
            if start < stop:
                self._values[self.capacity + start : self.capacity + stop] = self._values[start:stop]
        self._hi += n
        self._count += n
        self._lo = max(self._lo, self._hi - self.capacity)

    @staticmethod
    def _starts(spec: WindowSpec, ends: np.ndarray) -> np.ndarray | None:
        """The adaptive window's start: the previous query, as a recorded window starts at the previous
        action step (``t - window_seconds`` when that is set); at the first query, every sample received
        so far. None for the other modes."""
        if spec.mode != "adaptive":
            return None
        if ends.shape[0] < 2 and spec.window_seconds is None:
            return np.array([-np.inf])
        return adaptive_start_times(ends, spec.window_seconds)[-1:]

    def window(self, spec: WindowSpec, time: float | None = None, out: np.ndarray | None = None,
               share: bool = False) -> tuple[np.ndarray, int]:
        """The float32 (T, C) window ending at ``time`` (default: the latest sample) and its valid length.

        ``time`` joins :attr:`query_times`: an adaptive window starts at the previous query, as a
        recorded one starts at the previous action step. ``out``: a reused (rows, C) float32 buffer the
        window is written into (only its padding rows zeroed) and returned a view of, when it has the
        rows; otherwise the window is a new array. ``share``: a window that needs no padding and lies
        in one piece of the ring (always, within ``mirror`` rows) is returned as a view of the ring
        (do not modify: it is the history), valid until the next :meth:`append`.
        """
        if not self.timestamps.shape[0]:
            raise ObservationError("sensor: no sample received yet; the first observation must carry one")
        t = float(self.timestamps[-1] if time is None else time)
        # the previous query is all an adaptive window needs; older ones may precede the kept samples
        self.query_times = [*self.query_times[-1:], t]
        ends = np.asarray(self.query_times)
        start, end = window_bounds(self.timestamps, ends[-1:], spec, start_times=self._starts(spec, ends),
                                   source="live sensor stream")
        first, length = int(start[-1]), int(end[-1]) - int(start[-1])
        first += self._count - (self._hi - self._lo)  # in episode counts
        fixed = spec.fixed_length
        rows = length if fixed is None or length >= fixed else fixed
        lo = first % self.capacity
        if share and rows == length and (lo + length <= self.capacity or length <= self.mirror):
            return self._values[lo : lo + length], length
        if out is not None and out.dtype == np.float32 and out.shape[1:] == (self.channels,) and out.shape[0] >= rows:
            window = out[:rows]
            window[: rows - length] = 0
            return self._copy_rows(first, length, window), length
        if rows == length:
            return self._copy_rows(first, length, np.empty((length, self.channels), np.float32)), length
        return self._copy_rows(first, length, np.zeros((fixed, self.channels), np.float32)), length
