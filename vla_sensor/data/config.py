"""Typed Hydra schema of the ``data`` group (``conf/data/``): the one place a data default is written.

Enums make a wrong strategy or dtype fail at composition with the allowed values listed. Member
names equal their values, so ``data.cache_strategy.name=stream`` works from the command line.
Kept free of torch so composing a config stays cheap. :func:`data_config` builds the same schema
from keyword arguments, for the Python API (``InsertionDataset(dirs, sensor_window_size=325)``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from vla_sensor.data.lerobot.config import LeRobotConfig
from vla_sensor.data.storage import StorageDtype


class DataFormat(str, Enum):
    """The on-disk layout under ``data.root``."""

    native = "native"  # one directory per trajectory: actions.npz, images/<view>/, sensor*.npz (data.reader)
    lerobot = "lerobot"  # a LeRobot v3.0 dataset, episodes as trajectories (data.lerobot)


class CachedStrategy(str, Enum):
    """How ``data.cache=true`` caches sensor windows (``data.cache=false``: re-read per sample)."""

    windows = "windows"  # every window pre-extracted into its own array (memory: samples x window)
    stream = "stream"  # each stream once in memory; samples slice it
    mmap = "mmap"  # each stream once on disk, memory-mapped and shared by every process of a node


class SamplingOrder(str, Enum):
    """The order of shuffled training batches."""

    shuffled = "shuffled"  # every sample in a random place each epoch
    chunks = "chunks"  # runs of data.chunk_size consecutive samples of one trajectory, runs shuffled


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
    # the proprioceptive state (M, S) in actions_file, read when present (null: never read)
    states_key: Optional[str] = "states"  # noqa: UP045


@dataclass
class CacheStrategyConfig:
    """How sensor windows are cached when ``data.cache=true`` (group ``data/cache_strategy``)."""

    name: CachedStrategy = CachedStrategy.mmap
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
    format: DataFormat = DataFormat.native
    trajectory_dirs: list[str] = field(default_factory=list)
    val_dirs: list[str] = field(default_factory=list)
    val_fraction: float = 0.25
    generate_if_missing: bool = True
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    reader: ReaderConfig = field(default_factory=ReaderConfig)  # data.format=native
    lerobot: LeRobotConfig = field(default_factory=LeRobotConfig)  # data.format=lerobot
    horizon: int = 8
    instruction: Optional[str] = None  # noqa: UP045
    sensor_window_size: int = 650
    sensor_window_seconds: Optional[float] = None  # noqa: UP045
    adaptive_window: bool = False
    view_selection: Optional[list[str]] = None  # noqa: UP045  (None: every view of the first trajectory)
    image_size: list[int] = field(default_factory=lambda: [56, 56])
    cache: bool = True  # the one switch: false re-reads every sensor file per sample (no cache)
    cache_images: bool = True  # with cache=true: images decoded + resized once into an on-disk cache
    cache_strategy: CacheStrategyConfig = field(default_factory=CacheStrategyConfig)
    batch_size: int = 8
    num_workers: int = 2
    bucket_by_length: bool = False
    # with workers and a stream/mmap cache: workers send window references, the main process copies
    gather_sensor_in_main: bool = True
    # threads copying a batch's windows (positional reads for mmap), issued one batch ahead; 0: inline
    gather_threads: int = 4
    sampling: SamplingOrder = SamplingOrder.shuffled
    chunk_size: Optional[int] = None  # noqa: UP045  (sampling=chunks: samples per run; null: batch_size)
    max_rows: Optional[int] = None  # noqa: UP045
    seed: int = 0
    progress: bool = True


# Python keyword arguments that name a field of data.cache_strategy, and the original API's alias
_CACHE_KWARGS = {"cache_dtype": "dtype", "cache_dir": "cache_dir", "verify_full": "verify_full",
                 "decode_on_device": "decode_on_device"}
_ALIASES = {"cache_sensor_windows": "cache"}


def strategy_settings(strategy: str) -> dict[str, Any]:
    """Dataset arguments for one of the four ways to produce windows: ``none`` (no cache, re-read the
    sensor files per sample), ``windows``, ``stream`` or ``mmap`` — for code that compares them."""
    if strategy == "none":
        return {"cache": False}
    return {"cache": True, "cache_strategy": CachedStrategy(strategy).value}


def data_config(config: Any = None, **kwargs: Any) -> DictConfig:
    """The ``data`` schema filled from ``config`` (a DataConfig, DictConfig or dict) and keyword arguments.

    Keyword arguments are ``DataConfig`` field names, plus ``cache_strategy="stream"`` (the strategy
    name), ``cache_dtype``/``cache_dir``/``verify_full``/``decode_on_device`` (fields of
    ``cache_strategy``) and ``cache_sensor_windows`` (= ``cache``). An unknown name is a TypeError.
    """
    base = OmegaConf.structured(DataConfig)
    if config is not None:
        base = OmegaConf.merge(base, config if not isinstance(config, DataConfig) else OmegaConf.structured(config))
    names = {f.name for f in fields(DataConfig)}
    strategy: dict[str, Any] = {}
    flat: dict[str, Any] = {}
    for key, value in kwargs.items():
        key = _ALIASES.get(key, key)
        value = os.fspath(value) if isinstance(value, os.PathLike) else value
        if key in _CACHE_KWARGS:
            strategy[_CACHE_KWARGS[key]] = value
        elif key == "cache_strategy" and isinstance(value, str | Enum):
            strategy["name"] = getattr(value, "value", value)
        elif key in names:
            flat[key] = list(value) if isinstance(value, tuple) else value
        else:
            allowed = sorted(names | set(_CACHE_KWARGS) | set(_ALIASES))
            raise TypeError(f"unknown dataset argument {key!r}; expected one of {allowed}")
    if strategy:
        flat["cache_strategy"] = strategy
    merged = OmegaConf.merge(base, flat)
    assert isinstance(merged, DictConfig)
    return merged
