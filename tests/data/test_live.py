"""A live sensor stream cuts the windows the dataset cuts, also after its ring buffer wrapped."""

from __future__ import annotations

import numpy as np
import pytest

from vla_sensor.data.live import LiveSensorStream
from vla_sensor.data.observation import ObservationError
from vla_sensor.data.windows import WindowSpec, window_bounds


def _stream(n: int, channels: int = 3) -> tuple[np.ndarray, np.ndarray]:
    ts = np.arange(n) / 650.0
    values = np.random.default_rng(0).normal(size=(n, channels)).astype(np.float32)
    return ts, values


@pytest.mark.parametrize("spec", [WindowSpec(100), WindowSpec(window_seconds=0.2), WindowSpec(adaptive=True)],
                         ids=["fixed", "seconds", "adaptive"])
def test_windows_equal_the_datasets_past_the_ring_buffers_capacity(spec: WindowSpec) -> None:
    ts, values = _stream(650 * 3)  # 3 s at 650 Hz, through a buffer of 1 s
    live = LiveSensorStream(channels=3, capacity=650)
    steps = np.arange(1, 30) * 0.1  # a query every 0.1 s, the first after 65 samples
    starts, ends = window_bounds(ts, steps, spec)
    previous = -1.0
    for k, t in enumerate(steps):
        rows = (ts > previous) & (ts <= t + 1e-12)
        live.append(ts[rows], values[rows])
        previous = t
        window, length = live.window(spec, t)
        want = values[starts[k] : ends[k]]
        if k == 0 and spec.mode == "adaptive":  # the first query: every sample so far
            want = values[: ends[0]]
        assert length == want.shape[0]
        np.testing.assert_array_equal(window[window.shape[0] - length :], want)
        if spec.fixed_length:
            assert window.shape[0] == spec.fixed_length and not window[: window.shape[0] - length].any()
    assert live.timestamps.shape[0] == 650  # the buffer kept its capacity


def test_samples_out_of_order_or_of_the_wrong_width_are_refused() -> None:
    live = LiveSensorStream(channels=3)
    ts, values = _stream(10)
    live.append(ts[5:], values[5:])
    with pytest.raises(ObservationError, match="not after the previous observation"):
        live.append(ts[:5], values[:5])
    with pytest.raises(ObservationError, match=r"expected \(n, 3\)"):
        live.append(ts[:1] + 1.0, np.zeros((1, 4), np.float32))
    with pytest.raises(ObservationError, match="no sample"):
        LiveSensorStream(channels=3).window(WindowSpec(10))
