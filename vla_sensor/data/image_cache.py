"""Decoded-image cache: every image decoded and resized once, stored as one uint8 array per
trajectory and view, memory-mapped by every process.

Decoding the JPEGs of a batch costs more than copying the whole batch, and the result never changes
while the files do not: so it belongs at init. Each (trajectory, view) becomes a ``(M, 3, H, W)``
uint8 ``.npy`` in ``<cache_dir>/images/``, built with the sensor cache's machinery
(:mod:`vla_sensor.data.disk_cache`: one builder under ``flock``, temp + ``fsync`` + rename, a JSON
sidecar written last, stale/truncated files rebuilt), keyed by every image file's path, size and
mtime, the target size, the resampling filter and the Pillow version. Workers map the files lazily
in their own process, so they share one page-cache copy.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL
from tqdm.auto import tqdm

from vla_sensor.data.disk_cache import build_or_reuse, key_of, open_cow
from vla_sensor.data.errors import DataFormatError
from vla_sensor.data.format import Trajectory
from vla_sensor.data.images import RESAMPLE

IMAGE_CACHE_VERSION = 1
HASH_BLOCK = 1 << 14  # bytes checked at each end of an image cache file at every start


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
        self.cache_dir = Path(cache_dir) / "images"
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.built_here: list[tuple[int, str]] = []
        self._files: dict[tuple[int, str], Path] = {}
        self._nbytes = 0
        self._arrays: dict[tuple[int, str], np.ndarray] = {}
        self._pid = os.getpid()
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

    def _prepare(self, k: int, traj: Trajectory, view: str) -> tuple[int, ...]:
        steps = traj.num_steps
        try:
            key = self._key(traj, view)
        except OSError as exc:
            raise DataFormatError(f"{traj.path}: image of view {view!r} missing ({exc})") from exc
        where = hashlib.sha1(str(traj.path.resolve()).encode()).hexdigest()[:8]
        prefix = f"{traj.path.name}-{where}-{view}-"
        npy = self.cache_dir / f"{prefix}{key[:24]}.npy"

        def produce() -> tuple[np.ndarray, dict[str, Any]]:
            return self._decode_all(traj, view), {"source": str(traj.path), "view": view}

        meta, built = build_or_reuse(
            npy, npy.with_suffix(".json"), self.cache_dir / f"{prefix}lock", key, produce, prefix, hash_block=HASH_BLOCK
        )
        if built:
            self.built_here.append((k, view))
        if meta["shape"][0] != steps:
            raise DataFormatError(f"{npy}: image cache has {meta['shape'][0]} images, expected {steps}")
        self._files[(k, view)] = npy
        self._nbytes += int(meta["data_bytes"])
        return tuple(meta["shape"][1:])

    def _decode_all(self, traj: Trajectory, view: str) -> np.ndarray:
        first = traj.images.decode(view, 0, self.image_size)
        out = np.empty((traj.num_steps, 3, *first.shape[:2]), np.uint8)
        for t in range(traj.num_steps):
            img = first if t == 0 else traj.images.decode(view, t, self.image_size)
            if img.shape != first.shape:
                raise DataFormatError(
                    f"{traj.path}: view {view!r} step {t}: image size {img.shape[1]}x{img.shape[0]} differs from "
                    f"the view's first ({first.shape[1]}x{first.shape[0]}); set data.image_size"
                )
            out[t] = img.transpose(2, 0, 1)
        return out

    @property
    def nbytes(self) -> int:
        """Bytes of the decoded images on disk (shared in the page cache by every process)."""
        return self._nbytes

    def _array(self, k: int, view: str) -> np.ndarray:
        if self._pid != os.getpid():  # forked worker: map again in this process
            self._arrays, self._pid = {}, os.getpid()
        arr = self._arrays.get((k, view))
        if arr is None:
            arr = self._arrays[(k, view)] = open_cow(self._files[(k, view)])
        return arr

    def images(self, k: int, t: int) -> np.ndarray:
        """(V, 3, H, W) uint8 of step ``t`` of trajectory ``k`` (a fresh array, views in order)."""
        return np.stack([self._array(k, v)[t] for v in self.views])

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_arrays"] = {}  # never pickle a mapping: each process opens its own, lazily
        return state
