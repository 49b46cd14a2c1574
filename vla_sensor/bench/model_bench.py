"""Training step of the fused model: samples/s and peak memory.

Tiny config on CPU (always, when the fusion model is available); the 3B-size config with random
weights in bf16, stage 1 and 2, only where CUDA is available. Rows that cannot run say why instead
of carrying a number.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

import torch

from vla_sensor.bench.config import ModelBenchConfig

log = logging.getLogger(__name__)


def _fusion_model_available() -> str | None:
    """None when the fusion model can be imported, else the reason it cannot."""
    try:
        module = importlib.import_module("vla_sensor.models.vla")
    except ImportError as exc:
        return f"fusion model not available yet ({exc})"
    if not hasattr(module, "QwenVLAWithSensor"):
        return "fusion model not available yet (vla_sensor.models.vla has no QwenVLAWithSensor)"
    return None


def gpu_rows(cfg: ModelBenchConfig) -> list[dict[str, Any]]:
    if not torch.cuda.is_available():
        return [
            {
                "config": f"{cfg.gpu_config} (random weights, bf16), stage {stage}",
                "device": "cuda",
                "status": "skipped: no CUDA device on this machine",
            }
            for stage in (1, 2)
        ]
    return [
        {
            "config": f"{cfg.gpu_config} (random weights, bf16), stage {stage}",
            "device": torch.cuda.get_device_name(0),
            "status": "not measured yet: GPU model step not implemented in the benchmark",
        }
        for stage in (1, 2)
    ]


def run(cfg: ModelBenchConfig) -> dict[str, Any]:
    reason = _fusion_model_available()
    rows: list[dict[str, Any]] = []
    if reason is not None:
        rows.append({"config": "tiny (random weights, fp32)", "device": "cpu", "status": f"not measured yet: {reason}"})
    else:
        rows.append(
            {"config": "tiny (random weights, fp32)", "device": "cpu", "status": "not measured yet: model step pending"}
        )
    rows.extend(gpu_rows(cfg))
    return {"rows": rows, **({"skipped": reason} if reason else {})}
