"""Physics sanity: the zeroed force sensor reads zero in free air and the tissue's stiffness on contact."""

from __future__ import annotations

import numpy as np
import pytest

from vla_sensor.sim.env import InsertionEnv
from vla_sensor.sim.scene import NEEDLE_MASS_KG, SceneParams


@pytest.fixture(scope="module")
def env():
    e = InsertionEnv(views=(), force_noise_n=0.0, terminate_on_failure=False, episode_seconds=30.0)
    yield e
    e.close()


def _descend(env, params: SceneParams, dz: float, steps: int) -> tuple[np.ndarray, np.ndarray]:
    env.reset(seed=0, options={"params": params})
    forces, depths = [], []
    for _ in range(steps):
        obs, *_, info = env.step([0.0, 0.0, dz])
        forces.append(obs["sensor"]["values"][:, 0])
        depths.append(info["sample_depth_mm"])
    return np.concatenate(forces), np.concatenate(depths)


def test_force_is_zeroed_at_reset_and_zero_in_free_air(env):
    params = SceneParams(surface_mm=1.0, stiffness_n_per_m=600.0, target_x_mm=0.0, target_y_mm=0.0)
    obs, _ = env.reset(seed=0, options={"params": params})
    # The raw axial reading carries the needle's hanging weight (a pull: negative); the zeroed one does not.
    assert env._zero == pytest.approx(-NEEDLE_MASS_KG * 9.81, rel=0.05)
    assert abs(obs["sensor"]["values"][0, 0]) < 1e-6
    forces, depths = _descend(env, params, -0.3, 20)  # 6 mm down from 10 mm, surface at 1 mm
    assert depths.max() < 0  # never touched
    assert np.abs(forces).max() < 0.01
    assert abs(forces.mean()) < 0.002


@pytest.mark.parametrize("stiffness", [300.0, 750.0, 1200.0])
def test_force_slope_on_contact_is_the_tissue_stiffness(env, stiffness):
    params = SceneParams(surface_mm=5.0, stiffness_n_per_m=stiffness, target_x_mm=0.0, target_y_mm=0.0)
    forces, depths = _descend(env, params, -0.1, 80)  # slow: 1 mm/s, ends ~3 mm deep
    inside = (depths > 0.3) & (depths < 2.5)
    assert inside.sum() > 500
    slope_n_per_mm = np.polyfit(depths[inside], forces[inside], 1)[0]
    assert slope_n_per_mm * 1e3 == pytest.approx(stiffness, rel=0.10)


def test_force_noise_is_seeded(env):
    noisy = InsertionEnv(views=(), force_noise_n=0.01)
    try:
        a = noisy.reset(seed=3)[0]["sensor"]["values"]
        b = noisy.step([0, 0, -0.1])[0]["sensor"]["values"]
        noisy.reset(seed=3)
        assert np.array_equal(noisy.step([0, 0, -0.1])[0]["sensor"]["values"], b)
        assert a.shape == (1, 1026)
        assert b[:, 0].std() > 0.005
    finally:
        noisy.close()
