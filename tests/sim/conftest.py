"""Shared simulator fixtures: one recording per test session, reused by the format and dataset tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from vla_sensor.sim.gl import RenderingUnavailable

RECORD_EPISODES = 3  # the tests expect 3
RECORD_SEED = 7


@pytest.fixture(scope="session")
def gl_ok() -> None:
    """Skips a rendering test only where no OpenGL context can be created at all."""
    from vla_sensor.sim.env import InsertionEnv

    try:
        InsertionEnv(views=("left",), image_size=16).close()
    except RenderingUnavailable as exc:
        pytest.skip(f"no OpenGL context for offscreen rendering: {exc}")


@pytest.fixture(scope="session")
def recording_seed() -> int:
    return RECORD_SEED


@pytest.fixture(scope="session")
def recording(gl_ok, tmp_path_factory) -> Path:
    """Three recorded 6-second episodes (two 64x64 views), written by the CLI's code path."""
    from vla_sensor.sim.record import record

    out = tmp_path_factory.mktemp("sim_rec") / "a"
    record(out, RECORD_EPISODES, seed=RECORD_SEED, progress=False)
    return out
