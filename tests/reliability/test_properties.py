"""Property-based tests (hypothesis) of window extraction and resampling over arbitrary timestamps,
rates, window sizes and lengths. Derandomized with modest example counts: the same cases on every CI run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vla_sensor.data.errors import DataFormatError
from vla_sensor.data.windows import WindowSpec, extract_sensor_window, window_bounds
from vla_sensor.models.resample import resample_sequence

SETTINGS = settings(max_examples=100, derandomize=True, deadline=None)


@st.composite
def streams(draw) -> np.ndarray:
    """Strictly increasing timestamps at arbitrary (and varying) rates, 1-300 samples."""
    n = draw(st.integers(1, 300))
    start = draw(st.floats(-100.0, 100.0))
    period = draw(st.floats(1e-4, 0.5))
    jitter = draw(st.floats(0.0, 0.9))
    seed = draw(st.integers(0, 2**16))
    steps = period * (1.0 + jitter * np.random.default_rng(seed).uniform(-1, 1, n))
    ts = start + np.cumsum(steps)
    assert np.all(np.diff(ts) > 0)
    return ts


def _check_window(ts: np.ndarray, window: np.ndarray, length: int, t_end: float, lo: float | None,
                  size: int | None) -> None:
    """Valid rows are the last ``length`` rows, samples at or before ``t_end`` (index + 1 as value)."""
    valid = window[window.shape[0] - length :, 0].astype(np.int64) - 1
    assert length >= 1 and (size is None or (window.shape[0] == size and length <= size))
    assert not window[: window.shape[0] - length].any(), "left-pad rows must be zero"
    assert np.array_equal(valid, np.arange(valid[0], valid[0] + length)), "valid rows are consecutive samples"
    assert ts[valid[-1]] <= t_end and (valid[-1] + 1 == len(ts) or ts[valid[-1] + 1] > t_end), "ends at t"
    if lo is not None:
        assert ts[valid[0]] >= lo


@SETTINGS
@given(ts=streams(), where=st.floats(-0.2, 1.2), size=st.integers(1, 64), seconds=st.floats(1e-3, 3.0),
       mode=st.sampled_from(["fixed", "seconds", "adaptive"]))
def test_windows_end_at_the_action_and_never_look_ahead(ts, where, size, seconds, mode) -> None:
    t_end = float(ts[0] + where * (ts[-1] - ts[0] + 1e-3))
    stream = np.arange(1, len(ts) + 1, dtype=np.float32)  # a sample's value is its index + 1
    kw: dict = {"window_size": size}
    lo = None
    if mode == "seconds":
        kw = {"window_seconds": seconds}
    elif mode == "adaptive":
        lo = t_end - seconds
        kw = {"adaptive_window": True, "start_time": lo}
    try:
        window, length = extract_sensor_window(ts, stream, None, end_time=t_end, return_length=True, **kw)
    except DataFormatError as exc:
        assert "no sensor sample" in str(exc)
        inside = ts <= t_end
        if mode == "seconds":
            inside &= ts > t_end - seconds
        elif mode == "adaptive":
            inside &= ts >= lo
        assert not inside.any(), "an empty-window error although samples were there"
        return
    _check_window(ts, window, length, t_end, lo, size if mode == "fixed" else None)
    if mode == "seconds":
        assert ts[int(window[-length, 0]) - 1] > t_end - seconds
    spec = WindowSpec(size, seconds if mode == "seconds" else None, mode == "adaptive")
    s, e = window_bounds(ts, np.array([t_end]), spec, start_times=None if lo is None else np.array([lo]))
    assert e[0] - s[0] == length and int(window[-1, 0]) == e[0]  # the vectorised bounds agree


@SETTINGS
@given(ts=streams(), size=st.integers(1, 32))
def test_window_bounds_over_every_action(ts, size) -> None:
    actions = np.linspace(ts[0], ts[-1], 7)
    for spec in (WindowSpec(size), WindowSpec(window_seconds=float(ts[-1] - ts[0]) / 3 + 1e-6),
                 WindowSpec(adaptive=True)):
        try:
            s, e = window_bounds(ts, actions, spec)
        except DataFormatError as exc:
            assert "holds no sensor sample" in str(exc)
            continue
        assert np.all(e > s) and np.all(e <= len(ts)) and np.all(s >= 0)
        assert np.all(ts[e - 1] <= actions)  # no sample after the action's time
        if spec.fixed_length:
            assert np.all(e - s <= size)


@st.composite
def batches(draw) -> tuple[torch.Tensor, torch.Tensor, int, str]:
    b, t, c = draw(st.integers(1, 3)), draw(st.integers(1, 40)), draw(st.integers(1, 3))
    mode = draw(st.sampled_from(["nearest", "linear", "cubic"]))
    lengths = torch.tensor(draw(st.lists(st.integers(0, t), min_size=b, max_size=b)))
    scale = draw(st.sampled_from([1e-3, 1.0, 1e4]))
    x = torch.randn(b, t, c, generator=torch.Generator().manual_seed(draw(st.integers(0, 2**16)))) * scale
    return x, lengths, draw(st.integers(1, 50)), mode


@SETTINGS
@given(batch=batches())
def test_resample_invariants(batch) -> None:
    x, lengths, target, mode = batch
    out = resample_sequence(x, target, mode, lengths)
    assert out.shape == (x.shape[0], target, x.shape[2]) and torch.isfinite(out).all()
    noisy_pad = x.clone()
    for b, n in enumerate(lengths.tolist()):
        noisy_pad[b, : x.shape[1] - n] = 1e9  # what lies in the padding never leaks into the output
        valid = x[b, x.shape[1] - n :]
        if n == 0:
            assert not out[b].any()
            continue
        if mode == "nearest":  # only input values
            assert all(any(torch.equal(row, v) for v in valid) for row in out[b])
        elif mode == "linear" or n < 4:  # convex combinations stay inside the input's range
            lo, hi = valid.min(0).values, valid.max(0).values
            tol = 1e-5 * valid.abs().max()
            assert (out[b] >= lo - tol).all() and (out[b] <= hi + tol).all()
    torch.testing.assert_close(resample_sequence(noisy_pad, target, mode, lengths), out)


@SETTINGS
@given(batch=batches(), value=st.floats(-1e4, 1e4))
def test_resampling_a_constant_gives_that_constant(batch, value) -> None:
    x, lengths, target, mode = batch
    const = torch.full_like(x, value)
    out = resample_sequence(const, target, mode, lengths)
    for b, n in enumerate(lengths.tolist()):
        expected = torch.full_like(out[b], value if n else 0.0)
        torch.testing.assert_close(out[b], expected, rtol=1e-5, atol=1e-5 * abs(value))


@SETTINGS
@given(t=st.integers(1, 3), target=st.integers(1, 10))
def test_cubic_without_lengths_needs_four_samples(t, target) -> None:
    with pytest.raises(ValueError, match="cubic interpolation needs at least 4 samples"):
        resample_sequence(torch.zeros(1, t, 2), target, "cubic")
