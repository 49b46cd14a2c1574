"""An episode's camera images: PNG/JPEG bytes in the data parquet, or frames of the dataset's videos.

Implements :class:`vla_sensor.data.images.ImageSource`, so the decoded-image cache stores them once
like native image files. Parquet bytes of an episode and view are read on first use (one column, the
episode's rows); video frames are decoded sequentially by a :class:`VideoCursor` per view.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vla_sensor.data.errors import DataFormatError
from vla_sensor.data.images import resize_image
from vla_sensor.data.lerobot.parquet import DataFile
from vla_sensor.data.lerobot.video import VideoCursor


def _stat(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


class ParquetImages:
    """One view of an episode stored as ``struct<bytes, path>`` in the data file."""

    def __init__(self, data: DataFile, key: str, rows: tuple[int, int], root: Path, where: str) -> None:
        self.data, self.key, self.rows, self.root, self.where = data, key, rows, root, where
        self._blobs: list[Any] | None = None

    def _load(self) -> list[Any]:
        if self._blobs is None:
            col = self.data.read([self.key], *self.rows).column(self.key).to_pylist()
            self._blobs = [c if isinstance(c, dict) else {"bytes": c, "path": None} for c in col]
        return self._blobs

    def image(self, step: int) -> Image.Image:
        blob = self._load()[step]
        data = blob.get("bytes") if blob else None
        try:
            if data is not None:
                return Image.open(io.BytesIO(data))
            if blob and blob.get("path"):
                return Image.open(self.root / blob["path"])
        except OSError as exc:
            raise DataFormatError(f"{self.data.path}: {self.where}, step {step}: unreadable image ({exc})") from exc
        raise DataFormatError(f"{self.data.path}: {self.where}, step {step}: image has neither bytes nor a path")

    def fingerprint(self) -> Any:
        return [*_stat(self.data.path), list(self.rows), self.key]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_blobs": None}


class VideoImages:
    """One view of an episode as frames of a video file."""

    def __init__(self, cursor: VideoCursor) -> None:
        self.cursor = cursor

    def image(self, step: int) -> Image.Image:
        img = self.cursor.frame(step).to_image()
        if step == len(self.cursor.times) - 1:  # the episode's last frame: free the decoder and file
            self.cursor.close()
        return img

    def fingerprint(self) -> Any:
        return [*_stat(self.cursor.path), [float(self.cursor.times[0]), float(self.cursor.times[-1])],
                self.cursor.tolerance_s]


class LeRobotImages:
    """The ImageSource of one episode: view (feature key) -> parquet images or video frames."""

    def __init__(self, views: dict[str, ParquetImages | VideoImages]) -> None:
        self._views = views

    @property
    def views(self) -> list[str]:
        return list(self._views)

    def decode(self, view: str, step: int, size: tuple[int, int] | None) -> np.ndarray:
        source = self._views[view]
        img = source.image(step)
        try:
            return resize_image(img, size)
        finally:
            img.close()

    def fingerprint(self, view: str) -> Any:
        return self._views[view].fingerprint()

    def close(self) -> None:
        """Release open video decoders (they are reopened on demand)."""
        for source in self._views.values():
            if isinstance(source, VideoImages):
                source.cursor.close()
