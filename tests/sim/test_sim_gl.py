"""Rendering set-up: MUJOCO_GL defaults to egl, and a missing GL stack is a clear error."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from vla_sensor.sim.gl import GL_PACKAGES, RenderingUnavailable


def _python(code: str, mujoco_gl: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "MUJOCO_GL"}
    if mujoco_gl:
        env["MUJOCO_GL"] = mujoco_gl
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize(("given", "expected"), [(None, "egl"), ("glfw", "glfw")])
def test_mujoco_gl_is_set_before_mujoco_is_imported(given, expected):
    code = "import os, sys, vla_sensor.sim.env; print(os.environ['MUJOCO_GL'], 'mujoco' in sys.modules)"
    assert _python(code, given).split() == [expected, "True"]


def test_a_backend_that_fails_to_load_is_a_clear_error():
    code = (
        "from vla_sensor.sim.gl import RenderingUnavailable\n"
        "try:\n    import vla_sensor.sim.env\n    print('loaded')\n"
        "except RenderingUnavailable as e:\n    print('clear' if 'MUJOCO_GL' in str(e) else 'unclear')\n"
    )
    # osmesa loads where libosmesa is installed; where it is not, the error must say what to do
    assert _python(code, "osmesa").strip() in ("loaded", "clear")


def test_no_gl_context_names_mujoco_gl_and_the_packages(monkeypatch):
    import mujoco

    from vla_sensor.sim.env import InsertionEnv

    def broken(*args, **kwargs):
        raise RuntimeError("eglInitialize failed")

    monkeypatch.setattr(mujoco, "Renderer", broken)
    with pytest.raises(RenderingUnavailable, match="MUJOCO_GL") as err:
        InsertionEnv(views=("left",))
    assert GL_PACKAGES in str(err.value) and "eglInitialize failed" in str(err.value)
    InsertionEnv(views=()).close()  # physics and sensor need no GL


def test_unknown_view_names_the_cameras():
    from vla_sensor.sim.env import InsertionEnv

    with pytest.raises(ValueError, match="'left', 'oak'"):
        InsertionEnv(views=("top",))


def test_rgb_array_render_mode(gl_ok):
    from vla_sensor.sim.env import InsertionEnv

    env = InsertionEnv(views=("oak",), image_size=16, render_mode="rgb_array")
    env.reset(seed=0)
    assert env.render().shape == (16, 16, 3)
    env.close()
