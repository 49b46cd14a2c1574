"""Typed Hydra schema of the ``data`` group (``conf/data/``).

Enums make a wrong strategy or dtype fail at composition with the allowed values listed. Member
names equal their values, so ``data.cache_strategy.name=stream`` works from the command line.
Kept free of torch so composing a config stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from vla_sensor.data.cache import CacheStrategy
from vla_sensor.data.storage import StorageDtype


@dataclass
class ReaderConfig:
    """Constructor arguments of the trajectory reader; ``_target_`` swaps in a user's own class."""

    _target_: str = "vla_sensor.data.format.TrajectoryReader"
    actions_file: str = "actions.npz"
    action_timestamps_key: str = "timestamps"
    actions_key: str = "actions"
    sensor_glob: str = "sensor*.npz"
    sensor_timestamps_key: str = "timestamps"
    channel_keys: list[str] = field(default_factory=lambda: ["forces", "alines"])
    expected_channels: Optional[int] = 1026  # noqa: UP045 (OmegaConf needs Optional)
    images_dir: str = "images"
    meta_file: str = "meta.json"
    coverage_tolerance_s: Optional[float] = None  # noqa: UP045


@dataclass
class CacheStrategyConfig:
    """How sensor windows are cached when ``data.cache=true`` (group ``data/cache_strategy``)."""

    name: CacheStrategy = CacheStrategy.mmap
    dtype: StorageDtype = StorageDtype.float32
    cache_dir: Optional[str] = None  # noqa: UP045  (null: $VLA_SENSOR_CACHE_DIR or ~/.cache/vla_sensor)
    verify_full: bool = False  # mmap: re-hash the whole cache file at every start
    decode_on_device: bool = True  # float16/int8: batches keep the stored dtype; the model decodes


@dataclass
class SyntheticConfig:
    """Generated demo recordings written to ``data.root`` when it is missing."""

    trajectories: int = 12
    seconds: float = 6.0
    sensor_rate: list[float] = field(default_factory=lambda: [650.0])
    action_rate: float = 10.0
    image_size: int = 64
    views: list[str] = field(default_factory=lambda: ["left", "oak"])
    no_sensor_trajectories: int = 1
    seed: int = 0


@dataclass
class DataConfig:
    """Everything that builds the train/validation datasets and loaders."""

    root: str = "data/demo"
    trajectory_dirs: list[str] = field(default_factory=list)
    val_dirs: list[str] = field(default_factory=list)
    val_fraction: float = 0.25
    generate_if_missing: bool = True
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    reader: ReaderConfig = field(default_factory=ReaderConfig)
    horizon: int = 8
    instruction: Optional[str] = None  # noqa: UP045
    sensor_window_size: int = 650
    sensor_window_seconds: Optional[float] = None  # noqa: UP045
    adaptive_window: bool = False
    view_selection: list[str] = field(default_factory=lambda: ["left", "oak"])
    image_size: list[int] = field(default_factory=lambda: [56, 56])
    cache: bool = True
    cache_images: bool = True  # with cache=true: images decoded + resized once into an on-disk cache
    cache_strategy: CacheStrategyConfig = field(default_factory=CacheStrategyConfig)
    batch_size: int = 8
    num_workers: int = 2
    bucket_by_length: bool = False
    gather_sensor_in_main: bool = True  # workers send window refs; sensor_data is filled in the main process
    max_rows: Optional[int] = None  # noqa: UP045
    seed: int = 0
    progress: bool = True
