"""The names and keyword arguments of the original sensor-dataset API, kept importable.

``insertionMeca500DatasetWithSensor``, ``create_integrated_dataloader`` and ``extract_sensor_window``
take the same keyword arguments and defaults as that API; they are thin front-ends over
:class:`~vla_sensor.data.dataset.InsertionDataset` and :func:`~vla_sensor.data.loader.build_loader`,
so every default comes from the ``data`` config schema.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vla_sensor.data.config import DataConfig, data_config
from vla_sensor.data.dataset import InsertionDataset, PathLike
from vla_sensor.data.loader import BatchLoader, build_loader
from vla_sensor.data.windows import extract_sensor_window

insertionMeca500DatasetWithSensor = InsertionDataset  # the original API's name



def create_integrated_dataloader(
    trajectory_dirs: Sequence[PathLike],
    batch_size: int = 16,
    num_workers: int = 4,
    shuffle: bool = True,
    horizon: int = DataConfig.horizon,
    instruction: str | None = DataConfig.instruction,
    sensor_window_size: int = DataConfig.sensor_window_size,
    view_selection: Sequence[str] | None = None,
    cache_sensor_windows: bool = DataConfig.cache,
    *,
    drop_last: bool = False,
    **settings: Any,
) -> BatchLoader:
    """One dataset over all ``trajectory_dirs`` (with or without sensor files) and its loader.

    ``batch_size=16`` and ``num_workers=4`` are this helper's own defaults (the training config's are
    smaller, for the CPU demo). Other ``data`` config fields (``bucket_by_length``, ``seed``,
    ``cache_strategy``...) pass through ``settings``.
    """
    cfg = data_config(
        batch_size=batch_size, num_workers=num_workers, horizon=horizon, instruction=instruction,
        sensor_window_size=sensor_window_size, cache_sensor_windows=cache_sensor_windows,
        **({"view_selection": list(view_selection)} if view_selection is not None else {"view_selection": None}),
        **settings,
    )
    dataset = InsertionDataset(list(trajectory_dirs), cfg)
    return build_loader(dataset, shuffle=shuffle, drop_last=drop_last)


__all__ = [
    "create_integrated_dataloader",
    "extract_sensor_window",
    "insertionMeca500DatasetWithSensor",
]
