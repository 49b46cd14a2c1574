"""Writing one trajectory directory in the on-disk format (the inverse of :mod:`vla_sensor.data.format`).

Every producer of recordings — the generated demo data, the simulator's recorder, the LeRobot
importer — writes through :func:`write_trajectory`, so they all produce exactly what the reader
accepts. The directory is written under a temporary name and renamed into place: a killed writer
never leaves a half-written trajectory that a later training run would pick up.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vla_sensor.data.npz_io import write_npz

IMAGE_FORMATS = ("jpg", "png")


def write_json_atomic(path: str | os.PathLike[str], payload: Mapping[str, Any]) -> None:
    """Write JSON through a temporary file and a rename, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f, indent=2)
    os.replace(tmp, path)


def write_trajectory(
    out_dir: str | os.PathLike[str],
    *,
    action_timestamps: np.ndarray,
    actions: np.ndarray,
    images: Mapping[str, Iterable[np.ndarray]],
    sensor: Mapping[str, Any] | None = None,
    meta: Mapping[str, Any] | None = None,
    states: np.ndarray | None = None,
    image_format: str = "jpg",
    jpeg_quality: int = 90,
) -> Path:
    """Write ``out_dir`` (replacing it) and return it.

    ``images[view]`` yields one (H, W, 3) uint8 image per action step (``png`` is lossless, ``jpg``
    smaller). ``sensor`` holds the arrays of ``sensor.npz`` (``timestamps`` (N,) float64 and the
    channel keys, e.g. ``forces`` (N,) and ``alines`` (N, 1025)), each an array or
    :class:`~vla_sensor.data.disk_cache.Chunks`; None writes no sensor file. ``states`` (M, S) is the
    robot's proprioceptive state at each action step, saved as ``states`` in ``actions.npz``.
    """
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format: expected one of {IMAGE_FORMATS}, got {image_format!r}")
    out = Path(out_dir)
    steps = int(np.shape(action_timestamps)[0])
    if np.shape(actions)[0] != steps:
        raise ValueError(f"actions: expected {steps} rows (one per action timestamp), got {np.shape(actions)}")
    arrays = {"timestamps": np.asarray(action_timestamps, np.float64), "actions": np.asarray(actions, np.float32)}
    if states is not None:
        arrays["states"] = np.asarray(states, np.float32)
        if arrays["states"].ndim != 2 or arrays["states"].shape[0] != steps:
            raise ValueError(f"states: expected ({steps}, S) (one state per action step), got {np.shape(states)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    np.savez(tmp / "actions.npz", **arrays)
    for view, frames in images.items():
        vdir = tmp / "images" / view
        vdir.mkdir(parents=True)
        count = 0
        for t, frame in enumerate(frames):
            path = vdir / f"{t:06d}.{image_format}"
            img = Image.fromarray(np.asarray(frame, np.uint8))
            img.save(path, quality=jpeg_quality) if image_format == "jpg" else img.save(path)
            count += 1
        if count != steps:
            raise ValueError(f"images[{view!r}]: expected {steps} images (one per action step), got {count}")
    if sensor is not None:  # arrays, or Chunks written piece by piece (bounded memory)
        write_npz(tmp / "sensor.npz", sensor)
    (tmp / "meta.json").write_text(json.dumps(dict(meta or {}), indent=2))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out
