"""``benchmark.py benchmark=gpu``: one line and exit 0 without CUDA; its report renders from a result."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vla_sensor.bench.config import DEFAULT_SECTIONS, resolve_config
from vla_sensor.bench.gpu_bench import markdown, no_cuda_line

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_without_cuda_it_says_so_in_one_line_and_exits_0(tmp_path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmark.py"), "benchmark=gpu",
                           f"benchmark.output_dir={tmp_path / 'out'}"], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines() == [no_cuda_line()]
    assert not list((tmp_path / "out").glob("gpu_benchmark.*"))


def test_the_gpu_check_is_not_part_of_a_default_run() -> None:
    assert "gpu" not in DEFAULT_SECTIONS and "feature_cache" in DEFAULT_SECTIONS
    assert resolve_config({}).sections == list(DEFAULT_SECTIONS)


def test_the_report_renders_every_part() -> None:
    rows = [{"mode": "stage 1", "batch_size": 4, "step_s": 0.4, "samples_per_s": 10.0, "peak_allocated_bytes": 8e9,
             "status": "measured"},
            {"mode": "stage 1, feature cache", "batch_size": 4, "step_s": 0.02, "samples_per_s": 200.0,
             "peak_allocated_bytes": 7e9, "status": "measured"},
            {"mode": "stage 2, LoRA", "batch_size": 16, "status": "out of memory at B=16: CUDA out of memory"}]
    result = {
        "meta": {"device": {"gpu": "NVIDIA H200", "torch": "2.x"}, "duration_s": 400.0},
        "steps": {"model": "qwen2_5_vl_3b (random weights, bf16, sdpa)", "build_s": 20.0, "image_size": 224,
                  "views": ["left", "oak"], "rows": rows},
        "encoder": {"batch_size": 16, "lengths": {"650": {"plain": {"bytes": 1e9}, "checkpointed": {"bytes": 3e8},
                                                          "memory_ratio": 0.3, "time_ratio": 1.2}}},
        "training": {"status": "measured", "overrides": ["model=qwen2_5_vl_3b"], "steps": 200, "wall_s": 90.0,
                     "data_wait_fraction": 0.03, "samples_per_s": 50.0, "step_time_s": 0.16},
    }
    text = markdown(result)
    assert "NVIDIA H200" in text and "B=4: 20.0×" in text and "out of memory at B=16" in text
    assert "3.0%" in text and "-70%" in text
    failed = markdown({**result, "training": {"status": "timed out after 300 s"}, "encoder": {"status": "failed: X"}})
    assert "timed out after 300 s" in failed and "failed: X" in failed
