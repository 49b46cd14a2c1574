"""OpenGL set-up for offscreen rendering; imported before MuJoCo anywhere in this package.

MuJoCo picks its GL backend from ``MUJOCO_GL`` when it is first imported. EGL works headless (with
Mesa's CPU renderer when there is no GPU), so it is the default here unless the user chose another.
"""

from __future__ import annotations

import os
from types import ModuleType

os.environ.setdefault("MUJOCO_GL", "egl")

GL_PACKAGES = "libegl1 libegl-mesa0 libgl1-mesa-dri libopengl0"


class RenderingUnavailable(RuntimeError):
    """No OpenGL context could be created for offscreen rendering."""


def rendering_error(exc: BaseException) -> RenderingUnavailable:
    """The error a user sees when the renderer cannot start: what was tried and what to install."""
    backend = os.environ.get("MUJOCO_GL", "<unset>")
    return RenderingUnavailable(
        f"cannot create an OpenGL context for offscreen rendering with MUJOCO_GL={backend!r} "
        f"({type(exc).__name__}: {exc}). With MUJOCO_GL=egl (the default here) install the Debian "
        f"packages {GL_PACKAGES}; or set MUJOCO_GL=osmesa (libosmesa6) or MUJOCO_GL=glfw (with a display)."
    )


def import_mujoco() -> ModuleType:
    """``mujoco``, imported after ``MUJOCO_GL`` is set; a GL backend that fails to load is a clear error.

    MuJoCo loads the chosen backend's libraries at import (e.g. ``MUJOCO_GL=osmesa`` without
    libosmesa fails inside PyOpenGL with an unrelated-looking AttributeError).
    """
    try:
        import mujoco
    except ModuleNotFoundError as exc:
        if exc.name != "mujoco":
            raise rendering_error(exc) from exc
        raise ModuleNotFoundError(
            "the simulator needs MuJoCo: pip install -r requirements.txt (it pins mujoco)"
        ) from exc
    except Exception as exc:  # the GL bindings raise several unrelated types
        raise rendering_error(exc) from exc
    return mujoco
