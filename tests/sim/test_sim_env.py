"""InsertionEnv: the observation contract, clear errors, hidden parameters and bookkeeping."""

from __future__ import annotations

import numpy as np
import pytest

from vla_sensor.data.observation import validate_observation
from vla_sensor.sim.env import InsertionEnv
from vla_sensor.sim.scene import MAX_STEP_MM, SUBSTEPS, WORKSPACE_MM, SceneParams


@pytest.fixture(scope="module")
def env(gl_ok):
    e = InsertionEnv(image_size=32)
    yield e
    e.close()


def test_observations_follow_the_contract(env):
    obs, info = env.reset(seed=1)
    validate_observation(obs, views=["left", "oak"], channels=1026)
    assert obs["sensor"]["timestamps"].tolist() == [0.0]
    assert obs["images"]["left"].shape == (32, 32, 3)
    last = 0.0
    for _ in range(3):
        obs, reward, terminated, truncated, info = env.step(np.array([0.1, 0.0, -0.2], np.float32))
        validate_observation(obs, views=["left", "oak"], channels=1026)
        ts = obs["sensor"]["timestamps"]
        assert ts.shape == (SUBSTEPS,) and ts[0] > last
        assert np.allclose(np.diff(ts), 1 / 650)
        last = ts[-1]
    assert last == pytest.approx(0.3)
    assert info["step"] == 3 and not terminated and not truncated and reward == 0.0
    assert set(info["params"]) == {"surface_mm", "stiffness_n_per_m", "target_x_mm", "target_y_mm"}


@pytest.mark.parametrize(
    ("action", "match"),
    [
        ([0.0, 0.0], r"shape \(3,\)"),
        (np.zeros((2, 3)), r"shape \(3,\)"),
        ([0.0, np.nan, 0.0], "finite"),
        ([0.0, np.inf, 0.0], "finite"),
        (["a", "b", "c"], "3 numbers"),
    ],
)
def test_invalid_actions_raise_clear_errors(action, match):
    e = InsertionEnv(views=())
    e.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        e.step(action)
    e.close()


def test_step_before_reset_is_an_error():
    e = InsertionEnv(views=())
    with pytest.raises(RuntimeError, match="reset"):
        e.step([0.0, 0.0, 0.0])
    e.close()
    e.close()  # closing twice is harmless


def test_large_commands_are_clipped_and_reported():
    e = InsertionEnv(views=())
    e.reset(seed=0)
    *_, info = e.step([5.0, 0.0, 0.0])
    assert info["action_clipped"]
    assert e.tip_setpoint_mm[0] == pytest.approx(MAX_STEP_MM)
    for _ in range(20):
        *_, info = e.step([0.0, 0.0, 1.0])
    assert e.tip_setpoint_mm[2] == pytest.approx(WORKSPACE_MM[2][1])
    e.close()


def test_images_do_not_show_the_hidden_surface_or_stiffness(env):
    """Same target, different surface height and stiffness: identical images."""
    images = []
    for surface, k in ((0.5, 300.0), (5.5, 1200.0)):
        params = SceneParams(surface_mm=surface, stiffness_n_per_m=k, target_x_mm=1.0, target_y_mm=-2.0)
        obs, _ = env.reset(seed=0, options={"params": params})
        images.append(obs["images"])
    for view in ("left", "oak"):
        assert np.array_equal(images[0][view], images[1][view])
    obs, _ = env.reset(seed=0, options={"params": SceneParams(0.5, 300.0, -2.0, 2.0)})
    assert not np.array_equal(obs["images"]["left"], images[0]["left"])  # the target itself is visible


def test_force_limit_terminates_as_a_failure():
    e = InsertionEnv(views=())
    e.reset(seed=0, options={"params": SceneParams(6.0, 1200.0, 0.0, 0.0)})
    terminated = False
    for _ in range(60):
        _, _, terminated, truncated, info = e.step([0.0, 0.0, -1.0])
        if terminated or truncated:
            break
    assert terminated and info["force_limit_exceeded"] and not info["success"]
    assert info["peak_force_n"] > info["criterion"]["force_limit_n"]
    e.close()


def test_oct_alines_show_the_surface_ahead_of_the_tip():
    from vla_sensor.sim import oct as oct_model

    rng = np.random.default_rng(0)
    lines = oct_model.alines(np.repeat([2.0, -1.0], 16), rng)  # 2 mm above, 1 mm deep
    assert lines.shape == (32, oct_model.SAMPLES) and lines.dtype == np.float32
    above, inside = lines[:16].mean(0), lines[16:].mean(0)
    depth_axis = np.linspace(0, oct_model.RANGE_MM, oct_model.SAMPLES)
    assert depth_axis[np.argmax(above)] == pytest.approx(2.0, abs=0.05)  # surface echo
    assert abs(above[depth_axis < 1.5]).max() < 0.05  # air before it: noise only
    assert depth_axis[np.argmax(inside)] == pytest.approx(2.0, abs=0.05)  # the layer 3 mm under the surface
    assert inside[depth_axis < 1.5].mean() > 5 * abs(above[depth_axis < 1.5].mean())  # tissue scatters


def test_observations_carry_the_tip_position_as_state(env):
    obs, info = env.reset(seed=2)
    validate_observation(obs, views=["left", "oak"], channels=1026, state_dim=3)
    assert obs["state"].dtype == np.float32 and obs["state"].shape == (3,)
    np.testing.assert_allclose(obs["state"], info["tip_mm"], atol=1e-4)
    start = obs["state"].copy()
    for _ in range(2):
        obs, *_, info = env.step(np.array([0.2, -0.1, 0.0], np.float32))
        np.testing.assert_allclose(obs["state"], info["tip_mm"], atol=1e-4)  # at the step's end
    np.testing.assert_allclose(obs["state"] - start, [0.4, -0.2, 0.0], atol=0.02)  # moves with the commands


def test_success_needs_the_tip_held_not_passing_slowly_through_the_band():
    """A blind descent at 0.1 mm per step stays in the ±0.3 mm band for 0.6 s but never holds still
    there: no success. Stopping in the band is one after 0.5 s."""
    params = SceneParams(surface_mm=3.0, stiffness_n_per_m=300.0, target_x_mm=0.0, target_y_mm=0.0)
    e = InsertionEnv(views=(), terminate_on_success=False)
    try:
        e.reset(seed=0, options={"params": params})
        for dz in [-1.0] * 8 + [-0.2] * 3:  # to 1.4 mm, just above the band (0.7-1.3 mm)
            e.step([0.0, 0.0, dz])
        depths, holds = [], []
        for _ in range(12):  # through the band and out of it, 0.1 mm per step
            _, _, _, _, info = e.step([0.0, 0.0, -0.1])
            depths.append(info["tip_depth_mm"])
            holds.append(info["hold_s"])
        assert max(holds) >= 0.5  # long enough in the band for the old, speed-blind criterion
        assert min(depths) < 1.7 and max(depths) > 2.3 and not info["success"]
        e.reset(seed=0, options={"params": params})
        for dz in [-1.0] * 8 + [-0.2] * 3 + [-0.4]:  # to 1.0 mm: 2.0 mm deep, then hold
            e.step([0.0, 0.0, dz])
        for _ in range(8):
            _, _, _, _, info = e.step([0.0, 0.0, 0.0])
        assert info["success"] and 1.55 <= info["time_to_success_s"] <= 1.75  # 0.5 s after it entered the band
    finally:
        e.close()
