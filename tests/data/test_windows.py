"""Window extraction: fixed (left-padded), seconds (rate-dependent T), adaptive (exact samples)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vla_sensor import extract_sensor_window
from vla_sensor.data.errors import DataFormatError
from vla_sensor.data.windows import WindowSpec, window_bounds


def _stream(n: int, rate: float = 650.0, alines: int = 1025) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    ts = np.arange(n) / rate
    return ts, rng.normal(size=n).astype(np.float32), rng.normal(size=(n, alines)).astype(np.float32)


def test_fixed_window_is_the_last_samples_and_left_padded_at_start() -> None:
    ts, f, a = _stream(2000)
    w, length = extract_sensor_window(ts, f, a, end_time=ts[1500], return_length=True)
    assert w.shape == (650, 1026) and w.dtype == np.float32 and length == 650
    np.testing.assert_array_equal(w[:, 0], f[851:1501])
    np.testing.assert_array_equal(w[:, 1:], a[851:1501])
    w, length = extract_sensor_window(ts, f, a, end_time=ts[99], return_length=True)
    assert w.shape == (650, 1026) and length == 100
    assert not w[:550].any()
    np.testing.assert_array_equal(w[550:, 1:], a[:100])
    # the original API's default call: 2-D forces are concatenated too, window ends at the last sample
    w = extract_sensor_window(ts, np.stack([f, f], 1), a[:, :10], window_size=20)
    assert w.shape == (20, 12)


@pytest.mark.parametrize("rate", [325.0, 650.0, 1300.0])
def test_window_in_seconds_follows_the_rate(rate: float) -> None:
    ts, f, a = _stream(int(3 * rate), rate, alines=8)
    w, length = extract_sensor_window(ts, f, a, end_time=2.0, window_seconds=0.5, return_length=True)
    assert length == w.shape[0] == np.sum((ts > 1.5) & (ts <= 2.0))
    assert abs(length - 0.5 * rate) <= 1
    np.testing.assert_array_equal(w[-1, 1:], a[round(2.0 * rate)])


def test_adaptive_window_holds_exactly_the_samples_in_the_interval() -> None:
    ts, f, a = _stream(1000, alines=4)
    w, length = extract_sensor_window(ts, f, a, 0.1, 0.2, adaptive_window=True, return_length=True)
    inside = (ts >= 0.1) & (ts <= 0.2)
    assert length == w.shape[0] == inside.sum()
    np.testing.assert_array_equal(w[:, 0], f[inside])


def test_empty_window_names_the_source_and_time() -> None:
    ts, f, a = _stream(100, alines=4)
    with pytest.raises(DataFormatError, match=r"rec\.npz.*0\.5"):
        extract_sensor_window(ts + 1.0, f, a, end_time=0.5, source="rec.npz")
    with pytest.raises(DataFormatError, match="holds no sensor sample"):
        window_bounds(ts + 1.0, np.array([0.5]), WindowSpec(650), source="rec.npz")


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(5, 400),
    mode=st.sampled_from(["fixed", "seconds", "adaptive"]),
    size=st.integers(1, 64),
    seconds=st.floats(0.005, 0.2),
)
def test_vectorised_bounds_match_extract_sensor_window(n: int, mode: str, size: int, seconds: float) -> None:
    ts, f, a = _stream(n, alines=3)
    ends = np.linspace(ts[0], ts[-1], 7)
    spec = WindowSpec(size, seconds if mode != "fixed" else None, mode == "adaptive")
    starts_t = ends - seconds
    try:
        lo, hi = window_bounds(ts, ends, spec, start_times=starts_t if mode == "adaptive" else None)
    except DataFormatError:
        return  # an empty window somewhere: extract_sensor_window raises for it as well
    for j, t in enumerate(ends):
        w, length = extract_sensor_window(
            ts, f, a, start_time=starts_t[j] if mode == "adaptive" else None, end_time=t,
            adaptive_window=mode == "adaptive", window_size=size,
            window_seconds=seconds if mode == "seconds" else None, return_length=True,
        )
        assert length == hi[j] - lo[j]
        np.testing.assert_array_equal(w[w.shape[0] - length :, 0], f[lo[j] : hi[j]])
