"""Video frames of LeRobot episodes with PyAV: probing, sequential decoding, and encoding for export.

Episodes are concatenated in one MP4; episode frame i is the decoded frame closest to
``from_timestamp + timestamp_i``, within a tolerance (as LeRobot's own loader matches them). Decoding
is sequential: asking for steps 0, 1, 2, ... (as the decoded-image cache does) decodes each frame
once; a jump backwards seeks to the nearest keyframe first.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from vla_sensor.data.errors import DataFormatError


def video_end_time(path: Path, where: str) -> float:
    """End time (s) of the first video stream, from the container header (no decoding)."""
    if not path.is_file():
        raise DataFormatError(f"{path}: missing video file of {where}")
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if stream.duration is not None and stream.time_base is not None:
                start = float((stream.start_time or 0) * stream.time_base)
                return start + float(stream.duration * stream.time_base)
            if container.duration is not None:
                return float(container.duration) / av.time_base
    except (av.error.FFmpegError, IndexError, OSError) as exc:
        raise DataFormatError(f"{path}: unreadable video ({exc}) of {where}") from exc
    raise DataFormatError(f"{path}: video of {where} has no duration in its header")


class VideoCursor:
    """Frames of one episode of one video file, decoded forward from the last position."""

    def __init__(self, path: Path, times: np.ndarray, tolerance_s: float, where: str) -> None:
        self.path, self.times, self.tolerance_s, self.where = path, np.asarray(times, np.float64), tolerance_s, where
        self._container: Any = None
        self._frames: Iterator[Any] | None = None
        self._pending: tuple[float, np.ndarray] | None = None  # last decoded, not yet consumed frame
        self._step = -1

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container = self._frames = self._pending = None
        self._step = -1

    def _open_at(self, step: int) -> None:
        self.close()
        try:
            self._container = av.open(str(self.path))
            stream = self._container.streams.video[0]
            stream.thread_type = "AUTO"
            target = max(self.times[step] - self.tolerance_s, 0.0)
            self._container.seek(int(target / stream.time_base), stream=stream, backward=True, any_frame=False)
            self._frames = self._decoded(stream)
        except (av.error.FFmpegError, IndexError, OSError) as exc:
            raise DataFormatError(f"{self.path}: unreadable video ({exc}) of {self.where}") from exc

    def _decoded(self, stream: Any) -> Iterator[tuple[float, np.ndarray]]:
        for frame in self._container.decode(stream):
            if frame.pts is None:
                continue
            yield float(frame.pts * stream.time_base), frame

    def frame(self, step: int) -> Any:
        """The av.VideoFrame of ``step`` (the one closest to its time, within the tolerance)."""
        if self._frames is None or step <= self._step:
            self._open_at(step)
        self._step = step
        want = self.times[step]
        best: tuple[float, Any] | None = None
        try:
            while True:
                item = self._pending if self._pending is not None else next(self._frames, None)
                self._pending = None
                if item is None:
                    break
                if best is not None and abs(item[0] - want) > abs(best[0] - want):
                    self._pending = item  # past the closest one: keep it for the next step
                    break
                best = item
        except av.error.FFmpegError as exc:
            raise DataFormatError(f"{self.path}: video decoding failed ({exc}) in {self.where}") from exc
        if best is None or abs(best[0] - want) > self.tolerance_s:
            found = "no frame" if best is None else f"the closest frame is at {best[0]:.6f} s"
            raise DataFormatError(
                f"{self.path}: {self.where}, step {step}: no video frame at {want:.6f} s ({found}, tolerance "
                f"{self.tolerance_s} s); the video is shorter than its episode or out of sync"
            )
        return best[1]

    def __getstate__(self) -> dict[str, Any]:  # open decoders stay in their process
        return {**self.__dict__, "_container": None, "_frames": None, "_pending": None, "_step": -1}


def encode_video(path: Path, frames: Iterable[np.ndarray], fps: float, vcodec: str = "libsvtav1",
                 crf: int = 30, gop: int = 2) -> int:
    """Write (H, W, 3) uint8 frames as an MP4 (LeRobot's defaults: AV1, yuv420p, crf 30, GOP 2); returns the count.

    Frame n has pts n in a 1/fps time base, so it is shown at n / fps seconds.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its whole configuration at info level
    count = 0
    rate = Fraction(fps).limit_denominator(1000)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(vcodec, rate=rate)
        stream.pix_fmt = "yuv420p"
        stream.time_base = 1 / rate
        stream.options = {"crf": str(crf), "g": str(gop)}
        for img in frames:
            if count == 0:
                stream.height, stream.width = img.shape[:2]
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img, np.uint8), format="rgb24")
            frame.pts = count
            container.mux(stream.encode(frame))
            count += 1
        container.mux(stream.encode())
    return count
