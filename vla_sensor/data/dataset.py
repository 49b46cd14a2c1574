"""``InsertionDataset``: one sample per action step of one or more trajectory directories.

Also exported as the seed's ``insertionMeca500DatasetWithSensor`` with its keyword arguments and
defaults. Sample keys follow docs/ARCHITECTURE.md exactly.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from vla_sensor.data.cache import (
    DEFAULT_STRATEGY,
    CacheStrategy,
    SensorCache,
    default_cache_dir,
    make_sensor_cache,
)
from vla_sensor.data.errors import DataFormatError
from vla_sensor.data.format import Trajectory, TrajectoryReader, TrajectoryReaderProtocol
from vla_sensor.data.image_cache import ImageCache
from vla_sensor.data.images import decode_views
from vla_sensor.data.loader import make_dataloader
from vla_sensor.data.storage import StorageDtype
from vla_sensor.data.windows import WindowSpec

DEFAULT_INSTRUCTION = "Insert the needle into the target."
PathLike = str | os.PathLike[str]


def resolve_strategy(cache_sensor_windows: bool, cache_strategy: CacheStrategy | str | None) -> CacheStrategy:
    """The seed's flag maps to the memory-lean default; an explicit strategy wins."""
    if cache_strategy is not None:
        try:
            return CacheStrategy(getattr(cache_strategy, "value", cache_strategy))
        except ValueError as exc:
            raise DataFormatError(
                f"cache_strategy: {cache_strategy!r} is not one of {[s.value for s in CacheStrategy]}"
            ) from exc
    return DEFAULT_STRATEGY if cache_sensor_windows else CacheStrategy.none


class InsertionDataset(Dataset):
    """Images, an action chunk and the sensor window ending at each action step."""

    def __init__(
        self,
        trajectory_dir: PathLike | Sequence[PathLike],
        horizon: int = 8,
        instruction: str | None = None,
        sensor_window_size: int = 650,
        view_selection: Sequence[str] | None = None,
        cache_sensor_windows: bool = True,
        *,
        sensor_window_seconds: float | None = None,
        adaptive_window: bool = False,
        cache_strategy: CacheStrategy | str | None = None,
        cache_dtype: StorageDtype | str = StorageDtype.float32,
        cache_dir: PathLike | None = None,
        image_size: Sequence[int] | None = None,
        reader: TrajectoryReaderProtocol | None = None,
        sample_transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        progress: bool = True,
        cache_images: bool | None = None,
        decode_on_device: bool = False,
    ) -> None:
        dirs = [trajectory_dir] if isinstance(trajectory_dir, str | os.PathLike) else list(trajectory_dir)
        if not dirs:
            raise DataFormatError("trajectory_dir: expected a trajectory directory or a non-empty list of them")
        if horizon < 1:
            raise DataFormatError(f"horizon: expected a positive integer, got {horizon}")
        if image_size is not None and (len(image_size) != 2 or min(image_size) < 1):
            raise DataFormatError(f"image_size: expected (H, W) positive integers, got {list(image_size)}")
        self.horizon = int(horizon)
        self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        self.sample_transform = sample_transform
        self.reader = reader if reader is not None else TrajectoryReader()
        self.spec = WindowSpec(int(sensor_window_size), sensor_window_seconds, bool(adaptive_window))

        views = None if view_selection is None else list(view_selection)
        self.trajectories: list[Trajectory] = []
        for d in dirs:
            traj = self.reader.read(d, views=views)
            if views is None:  # all views of the first trajectory; the others must have them too
                views = traj.images.views
            self.trajectories.append(traj)
        self.view_selection: list[str] = views or []
        dims = {t.actions.shape[1] for t in self.trajectories}
        if len(dims) > 1:
            raise DataFormatError(f"action dimension differs between trajectories: {sorted(dims)}")
        self.action_dim = dims.pop()
        self.instructions = [instruction or t.instruction or DEFAULT_INSTRUCTION for t in self.trajectories]

        self.strategy = resolve_strategy(cache_sensor_windows, cache_strategy)
        settings = getattr(self.reader, "settings", None)
        self.cache: SensorCache = make_sensor_cache(
            self.strategy,
            self.trajectories,
            self.spec,
            dtype=cache_dtype,
            channels=getattr(self.reader, "expected_channels", None),
            cache_dir=cache_dir,
            reader_settings=settings() if callable(settings) else {"reader": type(self.reader).__qualname__},
            progress=progress,
        )
        # decoded images on disk, like the sensor cache; None (default) follows the sensor cache
        if cache_images is None:
            cache_images = self.strategy is not CacheStrategy.none
        self.image_cache: ImageCache | None = None
        if cache_images and self.view_selection:
            self.image_cache = ImageCache(
                self.trajectories,
                self.view_selection,
                self.image_size,
                cache_dir if cache_dir is not None else default_cache_dir(),
                progress=progress,
            )
        # float16/int8 windows leave the workers in their storage dtype; the model decodes them
        self.decode_on_device = bool(decode_on_device) and self.cache.dtype is not StorageDtype.float32
        self.sample_traj = self.cache.sample_traj
        offsets = np.cumsum([0] + [t.num_steps for t in self.trajectories])
        self.sample_step = np.arange(len(self.sample_traj)) - offsets[self.sample_traj]
        # set by the loader builder on the workers' copy (vla_sensor.data.sensor_gather), not by users:
        # in a DataLoader worker, samples carry a window reference instead of sensor_data
        self.defer_sensor_to_main = False

    # ------------------------------------------------------------------ sizes
    def __len__(self) -> int:
        return len(self.cache)

    @property
    def cache_nbytes(self) -> int:
        """Bytes held by the sensor cache (on disk and page-shared for ``mmap``)."""
        return self.cache.nbytes

    @property
    def raw_sensor_nbytes(self) -> int:
        """Bytes of the raw sensor streams as float32 (the baseline for cache memory)."""
        return self.cache.raw_nbytes

    @property
    def num_channels(self) -> int:
        return self.cache.channels

    def sensor_lengths(self) -> np.ndarray:
        """Valid sensor rows of every sample (int64), for :class:`LengthBucketBatchSampler`."""
        return self.cache.lengths.copy()

    # ---------------------------------------------------------------- samples
    def sensor_window(self, idx: int) -> tuple[np.ndarray, int]:
        """Sample ``idx``'s float32 (T, C) window (valid rows last) and valid length — the fast path."""
        return self.cache.window(idx)

    def gather_sensor(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Fill a collated batch's ``sensor_data`` from its ``sensor_window_refs`` (main-process gather)."""
        from vla_sensor.data.sensor_gather import gather_sensor

        return gather_sensor(self, batch)

    @property
    def image_cache_nbytes(self) -> int:
        """Bytes of the decoded-image cache (0 without it)."""
        return 0 if self.image_cache is None else self.image_cache.nbytes

    def _images(self, k: int, step: int) -> torch.Tensor:
        if self.image_cache is not None:
            return torch.from_numpy(self.image_cache.images(k, step))
        traj = self.trajectories[k]
        arrays = decode_views(traj.images, self.view_selection, step, self.image_size, traj.path)
        return torch.from_numpy(np.ascontiguousarray(arrays))

    def __getitem__(self, idx: int) -> dict[str, Any]:
        if not -len(self) <= idx < len(self):
            raise IndexError(f"sample index {idx} out of range for {len(self)} samples")
        idx = int(idx) % len(self)
        k, t = int(self.sample_traj[idx]), int(self.sample_step[idx])
        try:
            return self._sample(idx, k, t)
        except (DataFormatError, OSError, ValueError) as exc:  # e.g. an image changed after init, in a worker
            raise DataFormatError(f"sample {idx} (trajectory {self.trajectories[k].path}, step {t}): {exc}") from exc

    def _sample(self, idx: int, k: int, t: int) -> dict[str, Any]:
        traj = self.trajectories[k]
        m = traj.num_steps
        steps = np.arange(t, t + self.horizon)
        scale = offset = None
        if self.defer_sensor_to_main and get_worker_info() is not None:
            from vla_sensor.data.sensor_gather import REF_KEY, window_ref

            # the main process copies the window from the shared cache (vla_sensor.data.sensor_gather)
            sensor: dict[str, Any] = {REF_KEY: window_ref(self, idx), "sensor_length": int(self.cache.lengths[idx])}
        else:
            if self.decode_on_device:
                window, length, scale, offset = self.cache.window_stored(idx)
            else:
                window, length = self.cache.window(idx)
            sensor = {"sensor_data": torch.from_numpy(window), "sensor_length": int(length)}
        sample: dict[str, Any] = {
            "images": self._images(k, t),
            "actions": torch.from_numpy(traj.actions[np.minimum(steps, m - 1)]),
            "action_is_pad": torch.from_numpy(steps >= m),
            **sensor,
            "has_sensor": bool(traj.has_sensor),
            "instruction": self.instructions[k],
            "trajectory_index": k,
            "step_index": t,
        }
        if scale is not None:  # int8 kept encoded: decode_sensor_batch applies these (C,) per sample
            sample["sensor_scale"] = torch.from_numpy(scale)
            sample["sensor_offset"] = torch.from_numpy(offset)
        if self.sample_transform is not None:
            sample = self.sample_transform(sample)
        return sample


insertionMeca500DatasetWithSensor = InsertionDataset  # the seed's name


def create_integrated_dataloader(
    trajectory_dirs: Sequence[PathLike],
    batch_size: int = 16,
    num_workers: int = 4,
    shuffle: bool = True,
    horizon: int = 8,
    instruction: str | None = None,
    sensor_window_size: int = 650,
    view_selection: Sequence[str] | None = None,
    cache_sensor_windows: bool = True,
    *,
    bucket_by_length: bool = False,
    seed: int = 0,
    drop_last: bool = False,
    loader_kwargs: dict[str, Any] | None = None,
    **dataset_kwargs: Any,
) -> DataLoader:
    """The seed's helper: one dataset over all ``trajectory_dirs`` (with or without sensor files)."""
    dataset = InsertionDataset(
        list(trajectory_dirs),
        horizon=horizon,
        instruction=instruction,
        sensor_window_size=sensor_window_size,
        view_selection=view_selection,
        cache_sensor_windows=cache_sensor_windows,
        **dataset_kwargs,
    )
    return make_dataloader(
        dataset,
        batch_size,
        num_workers,
        shuffle,
        bucket_by_length=bucket_by_length,
        seed=seed,
        drop_last=drop_last,
        **(loader_kwargs or {}),
    )
