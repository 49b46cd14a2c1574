"""vla-sensor: a Qwen-VL action policy fused with a high-rate force + OCT sensor stream.

The public names (and those of the original sensor-dataset API) are importable from here. They are resolved lazily so that
``import vla_sensor`` stays cheap (no torch/transformers import until a name is used) and so that
the data, model and training sub-packages never import each other through this module.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> "module:attribute"
_EXPORTS: dict[str, str] = {
    # data
    "extract_sensor_window": "vla_sensor.data.compat:extract_sensor_window",
    "InsertionDataset": "vla_sensor.data.dataset:InsertionDataset",
    "insertionMeca500DatasetWithSensor": "vla_sensor.data.compat:insertionMeca500DatasetWithSensor",
    "create_integrated_dataloader": "vla_sensor.data.compat:create_integrated_dataloader",
    "build_loader": "vla_sensor.data.loader:build_loader",
    "TrajectoryReader": "vla_sensor.data.format:TrajectoryReader",
    "DataFormatError": "vla_sensor.data.errors:DataFormatError",
    # models
    "SensorEncoder": "vla_sensor.models.sensor_encoder:SensorEncoder",
    "QwenVLAWithSensor": "vla_sensor.models.vla:QwenVLAWithSensor",
}

__all__ = [*sorted(_EXPORTS), "__version__"]


def __getattr__(name: str) -> Any:
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'vla_sensor' has no attribute {name!r}")
    module_name, attr = target.split(":")
    value = getattr(importlib.import_module(module_name), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
