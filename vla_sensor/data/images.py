"""Where a trajectory's camera images come from, and how one is decoded.

The dataset and the decoded-image cache ask an :class:`ImageSource` for step ``t`` of a view; they
never open files themselves. The native format's source is :class:`ImageFiles` (one JPEG/PNG per
step and view); a container format (LeRobot parquet bytes or MP4 video) brings its own source, so
every cache and check works on it unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from vla_sensor.data.errors import DataFormatError

RESAMPLE = Image.Resampling.BILINEAR


def resize_image(image: Image.Image, size: tuple[int, int] | None) -> np.ndarray:
    """(H, W, 3) uint8 RGB of ``image``, resized (bilinear) to ``size`` = (H, W) when given and different."""
    image = image.convert("RGB")
    if size is not None and image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), RESAMPLE)
    return np.asarray(image)


def resize_array(image: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """:func:`resize_image` of a uint8 (H, W, 3) array; one already at ``size`` is returned as is (no PIL
    round trip: the pixels PIL would give back are these)."""
    if image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and (
            size is None or tuple(image.shape[:2]) == tuple(size)):
        return image
    return resize_image(Image.fromarray(image), size)


def decode_image(path: Path, size: tuple[int, int] | None) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file, resized to ``size`` = (H, W) when given."""
    try:
        with Image.open(path) as im:
            return resize_image(im, size)
    except OSError as exc:
        raise DataFormatError(f"{path}: unreadable image ({exc}); expected a JPEG or PNG") from exc


@runtime_checkable
class ImageSource(Protocol):
    """A trajectory's images: one per action step and view."""

    @property
    def views(self) -> list[str]:
        """View names, in the order the reader found or was asked for."""
        ...

    def decode(self, view: str, step: int, size: tuple[int, int] | None) -> np.ndarray:
        """(H, W, 3) uint8 RGB of ``step`` in ``view``, resized to ``size`` = (H, W) when given."""
        ...

    def fingerprint(self, view: str) -> Any:
        """JSON-able value that changes whenever the view's images change (the image cache's key)."""
        ...


class ImageFiles:
    """The native format's images: ``paths[view][t]`` is the file of step ``t``."""

    def __init__(self, paths: dict[str, list[Path]]) -> None:
        self.paths = paths

    @property
    def views(self) -> list[str]:
        return list(self.paths)

    def decode(self, view: str, step: int, size: tuple[int, int] | None) -> np.ndarray:
        return decode_image(self.paths[view][step], size)

    def fingerprint(self, view: str) -> list[tuple[str, str, int, int]]:
        # one stat per file, each directory resolved once: this runs at every start (warm init)
        names = [os.fspath(p) for p in self.paths[view]]
        dirs = {d: os.path.realpath(d) for d in {os.path.dirname(n) for n in names}}
        return [
            (dirs[os.path.dirname(n)], os.path.basename(n), st.st_size, st.st_mtime_ns)
            for n in names
            for st in [os.stat(n)]
        ]


def decode_views(source: ImageSource, views: Sequence[str], step: int, size: tuple[int, int] | None,
                 where: Any) -> np.ndarray:
    """(V, 3, H, W) uint8 of one step across ``views``; views of different sizes need ``size``."""
    arrays = [source.decode(view, step, size) for view in views]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise DataFormatError(f"{where}: views have different image sizes {shapes}; set data.image_size")
    return np.stack(arrays).transpose(0, 3, 1, 2)
