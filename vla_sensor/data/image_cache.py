"""Decoded-image cache: every image decoded and resized once, stored as one uint8 array per
trajectory and view, memory-mapped by every process.

Decoding the JPEGs of a batch costs more than copying the whole batch, and the result never changes
while the files do not: so it belongs at init. Each (trajectory, view) becomes a ``(M, 3, H, W)``
uint8 ``.npy`` in ``<cache_dir>/images/``, built with the sensor cache's machinery
(:mod:`vla_sensor.data.disk_cache`: one builder under ``flock``, images decoded and written a few at
a time, temp + ``fsync`` + rename, a JSON sidecar with a CRC32 per block written last, stale/truncated
files rebuilt), keyed by every image file's path, size and mtime, the target size, the resampling
filter and the Pillow version. Workers map the files lazily in their own process, so they share one
page-cache copy; every block is checked the first time a process serves an image from it, and a
damaged file is rebuilt with a warning naming it.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL
from tqdm.auto import tqdm

from vla_sensor.data.disk_cache import CacheFile, Chunks, build_or_reuse, ensure_cache_dir, key_of
from vla_sensor.data.errors import DataFormatError
from vla_sensor.data.format import Trajectory
from vla_sensor.data.images import RESAMPLE

IMAGE_CACHE_VERSION = 2  # 2: per-block CRC32 in the sidecar
BUILD_IMAGES = 64  # images decoded and written per piece (a build's memory does not grow with M)


class ImageCache:
    """``images(k, t)`` -> (V, 3, H, W) uint8 from per-(trajectory, view) memory-mapped arrays."""

    def __init__(
        self,
        trajectories: Sequence[Trajectory],
        views: Sequence[str],
        image_size: tuple[int, int] | None,
        cache_dir: str | os.PathLike[str],
        progress: bool = True,
    ) -> None:
        self.views = list(views)
        self.image_size = image_size
        self.cache_dir = ensure_cache_dir(Path(cache_dir) / "images")
        self.built_here: list[tuple[int, str]] = []
        self._files: dict[tuple[int, str], CacheFile] = {}
        self._keys: dict[tuple[int, str], str] = {}
        self._trajectories = list(trajectories)
        self._nbytes = 0
        jobs = [(k, v) for k in range(len(trajectories)) for v in self.views]
        shapes: dict[int, set[tuple[int, ...]]] = {}
        for k, view in tqdm(jobs, desc="image cache", disable=not progress, leave=False):
            shapes.setdefault(k, set()).add(self._prepare(k, trajectories[k], view))
        for k, found in shapes.items():  # checked once here, not per sample
            if len(found) > 1:
                raise DataFormatError(f"{trajectories[k].path}: views have different image sizes {found}; set image_size")

    def _key(self, traj: Trajectory, view: str) -> str:
        return key_of(
            {
                "version": IMAGE_CACHE_VERSION,
                "size": self.image_size,
                "resample": RESAMPLE.name,
                "pillow": PIL.__version__,
                "source": type(traj.images).__qualname__,
                "files": traj.images.fingerprint(view),
            }
        )

    def _paths(self, traj: Trajectory, view: str, key: str) -> tuple[Path, str]:
        where = hashlib.sha1(str(traj.path.resolve()).encode()).hexdigest()[:8]
        prefix = f"{traj.path.name}-{where}-{view}-"
        return self.cache_dir / f"{prefix}{key[:24]}.npy", prefix

    def _build(self, k: int, view: str, damaged: str | None = None) -> dict[str, Any]:
        """The sidecar of (trajectory ``k``, ``view``): reused or built (``damaged``: rebuilt unless done already)."""
        traj = self._trajectories[k]
        npy, prefix = self._paths(traj, view, self._keys[(k, view)])

        def produce() -> tuple[Chunks, dict[str, Any]]:
            return self._decode_all(traj, view), {"source": str(traj.path), "view": view}

        meta, built = build_or_reuse(npy, npy.with_suffix(".json"), self.cache_dir / f"{prefix}lock",
                                     self._keys[(k, view)], produce, prefix, damaged_build=damaged)
        if built:
            self.built_here.append((k, view))
        return meta

    def _prepare(self, k: int, traj: Trajectory, view: str) -> tuple[int, ...]:
        steps = traj.num_steps
        try:
            self._keys[(k, view)] = self._key(traj, view)
        except OSError as exc:
            raise DataFormatError(f"{traj.path}: image of view {view!r} missing ({exc})") from exc
        meta = self._build(k, view)
        npy = self._paths(traj, view, self._keys[(k, view)])[0]
        if meta["shape"][0] != steps:
            raise DataFormatError(f"{npy}: image cache has {meta['shape'][0]} images, expected {steps}")
        self._files[(k, view)] = CacheFile(npy, meta, rebuild=functools.partial(self._build, k, view),
                                           source=f"{traj.path} view {view!r}")
        self._nbytes += int(meta["data_bytes"])
        return tuple(meta["shape"][1:])

    def _decode_all(self, traj: Trajectory, view: str) -> Chunks:
        """Every image of ``view`` as (M, 3, H, W) uint8, decoded a piece at a time while it is written."""
        first = traj.images.decode(view, 0, self.image_size)

        def pieces() -> Any:
            for t0 in range(0, traj.num_steps, BUILD_IMAGES):
                out = np.empty((min(BUILD_IMAGES, traj.num_steps - t0), 3, *first.shape[:2]), np.uint8)
                for j in range(out.shape[0]):
                    t = t0 + j
                    img = first if t == 0 else traj.images.decode(view, t, self.image_size)
                    if img.shape != first.shape:
                        raise DataFormatError(
                            f"{traj.path}: view {view!r} step {t}: image size {img.shape[1]}x{img.shape[0]} differs "
                            f"from the view's first ({first.shape[1]}x{first.shape[0]}); set data.image_size"
                        )
                    out[j] = img.transpose(2, 0, 1)
                yield out

        return Chunks((traj.num_steps, 3, *first.shape[:2]), np.dtype(np.uint8), pieces())

    @property
    def nbytes(self) -> int:
        """Bytes of the decoded images on disk (shared in the page cache by every process)."""
        return self._nbytes

    def images(self, k: int, t: int) -> np.ndarray:
        """(V, 3, H, W) uint8 of step ``t`` of trajectory ``k`` (a fresh array, views in order)."""
        return np.stack([self._files[(k, v)].view(t, t + 1)[0] for v in self.views])
