"""Do a recording's clocks agree? Rates against ``meta.json`` and the sensor's span against the actions'.

Timestamps in another unit (milliseconds, microseconds) pass every per-file check — they are finite and
increasing — yet a window of 650 rows then holds one sample, or a seconds window holds none. Two
comparisons catch it at dataset construction, before anything is cached or trained:

- a stream's measured rate (the median sample spacing, robust to dropped samples and jitter) against
  the rate ``meta.json`` gives (``sensor_rate_hz``, ``action_rate_hz``), when it gives one;
- the sensor stream's time span against the actions' span: the stream must cover the actions, and a
  span about 1000 times longer (or shorter) means the two files use different units.
"""

from __future__ import annotations

import math

import numpy as np

from vla_sensor.data.errors import DataFormatError

# A measured rate within this fraction of the stated one agrees with it (clock jitter, drift).
RATE_TOLERANCE = 0.1
# Sensor span / action span at or above this is not a longer recording but another unit (x1000 is ms).
SPAN_RATIO_LIMIT = 10.0 ** 2.5
_UNITS = {1: "milliseconds", 2: "microseconds", 3: "nanoseconds"}


def measured_rate(ts: np.ndarray) -> float | None:
    """Samples per timestamp unit from the median spacing; None for fewer than two samples."""
    if ts.shape[0] < 2:
        return None
    return 1.0 / float(np.median(np.diff(ts)))


def unit_name(factor: float) -> str | None:
    """"milliseconds" for a factor near 1000 (within ~3x), "microseconds" near 1e6, ...; else None."""
    if not factor > 0:
        return None
    k = round(math.log10(factor) / 3)
    return _UNITS.get(k) if abs(math.log10(factor) - 3 * k) < 0.5 else None


def check_rate(ts: np.ndarray, stated_hz: object, where: str, meta_where: str, key: str) -> None:
    """The stream's measured rate agrees with ``stated_hz`` (``meta.json``'s ``key``), or a DataFormatError."""
    rate = measured_rate(ts)
    if stated_hz is None or rate is None:
        return
    try:
        stated = float(stated_hz)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise DataFormatError(f"{meta_where}:{key}: expected a number of Hz, got {stated_hz!r}") from exc
    if not (stated > 0 and math.isfinite(stated)):
        raise DataFormatError(f"{meta_where}:{key}: expected a positive number of Hz, got {stated_hz!r}")
    if abs(rate - stated) <= RATE_TOLERANCE * stated:
        return
    factor = stated / rate
    unit = unit_name(factor)
    cause = (f"the timestamps look like {unit}; expected seconds" if unit
             else f"correct {key} in {meta_where}, or the timestamps")
    raise DataFormatError(
        f"{where}: the samples are {1.0 / rate:.4g} apart (median), a rate of {rate:.4g} Hz if they are seconds, "
        f"but {meta_where} gives {key}={stated:g} Hz ({factor:.4g} times that); {cause}"
    )


def check_spans(sensor_ts: np.ndarray, action_ts: np.ndarray, sensor_where: str, action_where: str) -> None:
    """The sensor stream and the actions are on one clock: their spans differ by less than ~300x."""
    sensor_span = float(sensor_ts[-1] - sensor_ts[0])
    action_span = float(action_ts[-1] - action_ts[0])
    if sensor_span <= 0 or action_span <= 0:
        return
    ratio = sensor_span / action_span
    if 1 / SPAN_RATIO_LIMIT < ratio < SPAN_RATIO_LIMIT:
        return
    longer, shorter = (sensor_where, action_where) if ratio > 1 else (action_where, sensor_where)
    unit = unit_name(max(ratio, 1 / ratio))
    cause = (f"the timestamps of {longer} look like {unit} while those of {shorter} are seconds" if unit
             else f"expected the timestamps of {longer} and {shorter} on one clock")
    raise DataFormatError(
        f"{sensor_where}: the sensor stream spans {sensor_span:.6g} ({sensor_ts[0]:.6g} to {sensor_ts[-1]:.6g}) "
        f"but {action_where} spans {action_span:.6g} ({action_ts[0]:.6g} to {action_ts[-1]:.6g}), "
        f"{ratio:.4g} times that; {cause}; write every timestamp in seconds"
    )


def check_time_base(sensor_ts: np.ndarray | None, action_ts: np.ndarray, *, sensor_where: str,
                    action_where: str, meta_where: str, sensor_rate_hz: float | None = None,
                    action_rate_hz: float | None = None) -> None:
    """Every check of this module for one trajectory (called by the readers before coverage is checked)."""
    if sensor_ts is not None:
        check_rate(sensor_ts, sensor_rate_hz, sensor_where, meta_where, "sensor_rate_hz")
    check_rate(action_ts, action_rate_hz, action_where, meta_where, "action_rate_hz")
    if sensor_ts is not None:
        check_spans(sensor_ts, action_ts, sensor_where, action_where)
