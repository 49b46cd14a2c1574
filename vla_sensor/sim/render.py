"""Offscreen rendering of the scene's cameras (shadows and reflections off: ~10x faster on a CPU)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vla_sensor.sim.gl import import_mujoco, rendering_error

mujoco = import_mujoco()


class ViewRenderer:
    """Renders named cameras to (H, W, 3) uint8; the tissue plate's geom group is never drawn."""

    def __init__(self, model: mujoco.MjModel, views: Sequence[str], size: int) -> None:
        for view in views:
            if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, view) < 0:
                cams = [model.camera(i).name for i in range(model.ncam)]
                raise ValueError(f"views: unknown camera {view!r}; the scene has {cams}")
        self.views = tuple(views)
        try:
            self._renderer = mujoco.Renderer(model, height=int(size), width=int(size))
        except Exception as exc:  # the GL backends raise several unrelated types
            raise rendering_error(exc) from exc
        self._option = mujoco.MjvOption()
        self._option.geomgroup[:] = (1, 1, 1, 0, 0, 0)
        self._option.sitegroup[:] = 0

    def render(self, data: mujoco.MjData) -> dict[str, np.ndarray]:
        out = {}
        scene = self._renderer.scene
        for view in self.views:
            self._renderer.update_scene(data, camera=view, scene_option=self._option)
            scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
            scene.flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = 0
            out[view] = self._renderer.render().copy()
        return out

    def close(self) -> None:
        renderer, self._renderer = getattr(self, "_renderer", None), None
        if renderer is not None:
            renderer.close()
