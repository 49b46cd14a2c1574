"""``InsertionDataset``: one sample per action step of one or more trajectories.

Sample keys follow docs/ARCHITECTURE.md exactly. Settings come from the ``data`` config schema
(:class:`~vla_sensor.data.config.DataConfig`), or from keyword arguments naming its fields.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import Dataset

from vla_sensor.data.cache import CacheStrategy, SensorCache, default_cache_dir, make_sensor_cache
from vla_sensor.data.config import data_config
from vla_sensor.data.errors import DataFormatError
from vla_sensor.data.format import (
    DEFAULT_INSTRUCTION,
    Trajectory,
    TrajectoryReader,
    TrajectoryReaderProtocol,
    check_states,
)
from vla_sensor.data.image_cache import ImageCache
from vla_sensor.data.images import decode_views
from vla_sensor.data.storage import StorageDtype
from vla_sensor.data.windows import WindowSpec

PathLike = str | os.PathLike[str]
# Per-sample pre-processing for the model, run in DataLoader workers: it receives the sample's
# ``images`` and ``instruction`` only (never the sensor window, which the main process may copy in)
# and returns the fields that replace ``images`` (e.g. Qwen-VL's pixel patches and prompt ids).
InputTransform = Callable[[dict[str, Any]], dict[str, Any]]


def model_inputs(images: torch.Tensor, instruction: str, transform: InputTransform | None) -> dict[str, Any]:
    """A sample's image fields: ``images`` (V, 3, H, W) uint8 as they are, or what ``transform`` makes of
    them and the instruction (a live policy builds its inputs through this too)."""
    if transform is None:
        return {"images": images}
    out = transform({"images": images, "instruction": instruction})
    return {key: value for key, value in out.items() if key != "instruction"}


class InsertionDataset(Dataset):
    """Images, an action chunk and the sensor window ending at each action step (and the robot's
    state there, ``state`` (S,) in robot units, when the recordings have one: ``state_dim`` > 0)."""

    def __init__(
        self,
        trajectory_dir: PathLike | Sequence[PathLike],
        config: Any = None,
        *,
        reader: TrajectoryReaderProtocol | None = None,
        input_transform: InputTransform | None = None,
        **settings: Any,
    ) -> None:
        """``config``: the ``data`` config (DataConfig / DictConfig / dict); ``settings``: its fields by name."""
        cfg = data_config(config, **settings)
        self.config: DictConfig = cfg
        if cfg.horizon < 1:
            raise DataFormatError(f"data.horizon: expected a positive integer, got {cfg.horizon}")
        if cfg.image_size is not None and (len(cfg.image_size) != 2 or min(cfg.image_size) < 1):
            raise DataFormatError(f"data.image_size: expected (H, W) positive integers, got {list(cfg.image_size)}")
        self.horizon = int(cfg.horizon)
        self.image_size = None if cfg.image_size is None else (int(cfg.image_size[0]), int(cfg.image_size[1]))
        self.input_transform = input_transform
        self.reader = reader if reader is not None else TrajectoryReader()
        self.spec = WindowSpec.of(cfg)
        self.trajectories, self.view_selection = self._read(trajectory_dir, cfg.view_selection)
        self.action_dim = self._action_dim()
        self.state_dim = self._state_dim()
        self.instructions = [cfg.instruction or t.instruction or DEFAULT_INSTRUCTION for t in self.trajectories]
        self.strategy = CacheStrategy(cfg.cache_strategy.name.value) if cfg.cache else CacheStrategy.none
        self.cache: SensorCache = self._sensor_cache(cfg)
        self.image_cache = self._image_cache(cfg)
        # float16/int8 windows leave the workers in their storage dtype; the model decodes them
        self.decode_on_device = bool(cfg.cache_strategy.decode_on_device) and self.cache.dtype is not StorageDtype.float32
        self.sample_traj = self.cache.sample_traj
        offsets = np.cumsum([0] + [t.num_steps for t in self.trajectories])
        self.sample_step = np.arange(len(self.sample_traj)) - offsets[self.sample_traj]

    # ------------------------------------------------------------ build steps
    def _read(self, trajectory_dir: PathLike | Sequence[PathLike], views: Sequence[str] | None
              ) -> tuple[list[Trajectory], list[str]]:
        """Read and validate every trajectory; ``views`` None: all views of the first one."""
        dirs = [trajectory_dir] if isinstance(trajectory_dir, str | os.PathLike) else list(trajectory_dir)
        if not dirs:
            raise DataFormatError("trajectory_dir: expected a trajectory directory or a non-empty list of them")
        wanted = None if views is None else list(views)
        trajectories = []
        for d in dirs:
            traj = self.reader.read(d, views=wanted)
            if wanted is None:  # the others must have the first one's views too
                wanted = traj.images.views
            trajectories.append(traj)
        return trajectories, wanted or []

    def _action_dim(self) -> int:
        dims = {t.actions.shape[1] for t in self.trajectories}
        if len(dims) > 1:
            raise DataFormatError(f"action dimension differs between trajectories: {sorted(dims)}")
        return dims.pop()

    def _state_dim(self) -> int:
        """S of the trajectories' states (M, S); 0 when none has one. All or none, one S: a model
        reads the same state at every step."""
        with_state = [t for t in self.trajectories if t.states is not None]
        if not with_state:
            return 0
        if len(with_state) != len(self.trajectories):
            without = next(t for t in self.trajectories if t.states is None)
            raise DataFormatError(
                f"{without.path}: no proprioceptive state, but {len(with_state)} of {len(self.trajectories)} "
                f"trajectories have one (e.g. {with_state[0].path}); expected states in all trajectories or none"
            )
        for t in with_state:  # a custom reader's states get the native reader's checks
            t.states = check_states(np.asarray(t.states), t.num_steps, f"{t.path}: states")
        dims = {t.state_dim: t.path for t in with_state}
        if len(dims) > 1:
            raise DataFormatError(
                "state dimension differs between trajectories: "
                + ", ".join(f"{s} ({path})" for s, path in sorted(dims.items()))
            )
        return next(iter(dims))

    def _sensor_cache(self, cfg: DictConfig) -> SensorCache:
        settings = getattr(self.reader, "settings", None)
        strategy = cfg.cache_strategy
        return make_sensor_cache(
            self.strategy,
            self.trajectories,
            self.spec,
            dtype=strategy.dtype.value,
            channels=getattr(self.reader, "expected_channels", None),
            cache_dir=strategy.cache_dir,
            verify_full=bool(strategy.verify_full),
            reader_settings=settings() if callable(settings) else {"reader": type(self.reader).__qualname__},
            progress=bool(cfg.progress),
        )

    def _image_cache(self, cfg: DictConfig) -> ImageCache | None:
        """Decoded images on disk next to the sensor cache (with ``cache`` and ``cache_images``)."""
        if not (cfg.cache and cfg.cache_images and self.view_selection):
            return None
        cache_dir = cfg.cache_strategy.cache_dir
        return ImageCache(self.trajectories, self.view_selection, self.image_size,
                          cache_dir if cache_dir is not None else default_cache_dir(), progress=bool(cfg.progress))

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
        return self.sample(idx)

    def sample(self, idx: int, window_ref: bool = False, images: bool = True) -> dict[str, Any]:
        """Sample ``idx``; with ``window_ref`` its sensor window is the cache's reference
        (``sensor_window_ref`` (4,) int64) instead of ``sensor_data``, for the main-process gather;
        ``images=False`` leaves out the images and the model inputs made from them (neither is read:
        the stage-1 feature cache supplies what the backbone would make of them)."""
        if not -len(self) <= idx < len(self):
            raise IndexError(f"sample index {idx} out of range for {len(self)} samples")
        idx = int(idx) % len(self)
        k, t = int(self.sample_traj[idx]), int(self.sample_step[idx])
        try:
            return self._sample(idx, k, t, window_ref, images)
        except (DataFormatError, OSError, ValueError) as exc:  # e.g. an image changed after init, in a worker
            raise DataFormatError(f"sample {idx} (trajectory {self.trajectories[k].path}, step {t}): {exc}") from exc

    def _sensor(self, idx: int, window_ref: bool) -> dict[str, Any]:
        if window_ref:
            return {"sensor_window_ref": torch.from_numpy(self.cache.window_ref(idx)),
                    "sensor_length": int(self.cache.lengths[idx])}
        if not self.decode_on_device:
            window, length = self.cache.window(idx)
            return {"sensor_data": torch.from_numpy(window), "sensor_length": int(length)}
        window, length, scale, offset = self.cache.window_stored(idx)
        out: dict[str, Any] = {"sensor_data": torch.from_numpy(window), "sensor_length": int(length)}
        if scale is not None:  # int8 kept encoded: decode_sensor_batch applies these (C,) per sample
            out["sensor_scale"] = torch.from_numpy(scale)
            out["sensor_offset"] = torch.from_numpy(offset)
        return out

    def _sample(self, idx: int, k: int, t: int, window_ref: bool, images: bool) -> dict[str, Any]:
        traj = self.trajectories[k]
        m = traj.num_steps
        steps = np.arange(t, t + self.horizon)
        sensor = self._sensor(idx, window_ref)
        scale = {key: sensor.pop(key) for key in ("sensor_scale", "sensor_offset") if key in sensor}
        return {
            **(model_inputs(self._images(k, t), self.instructions[k], self.input_transform) if images else {}),
            "actions": torch.from_numpy(traj.actions[np.minimum(steps, m - 1)]),
            "action_is_pad": torch.from_numpy(steps >= m),
            **sensor,
            "has_sensor": bool(traj.has_sensor),
            "instruction": self.instructions[k],
            "trajectory_index": k,
            "step_index": t,
            **scale,
            **({"state": torch.from_numpy(traj.states[t])} if traj.states is not None else {}),
        }
