"""Helpers for the training tests: compose the real config tree, run train.py for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from vla_sensor.config import register_configs

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
TOY = "trainer.components=vla_sensor.training.toy.build_toy_components"
# Small, fast, deterministic toy runs: no workers, no W&B unless a test asks, no progress bar.
TOY_ARGS = [TOY, "data.num_workers=0", "data.batch_size=8", "logger=jsonl", "trainer.progress_bar=false",
            "trainer.warmup_steps=2", "trainer.log_every=2", "trainer.val_every=4", "trainer.val_batches=2"]


def compose_cfg(overrides: list[str]) -> DictConfig:
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def env(**extra: str) -> dict[str, str]:
    out = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
           "WANDB_SILENT": "true", **extra}
    out.pop("WORLD_SIZE", None)
    # An in-process W&B run earlier in the test session exports WANDB_SERVICE; a child inheriting it
    # would share that service, which keeps a SIGKILLed child's run registered ("run ID in use").
    out.pop("WANDB_SERVICE", None)
    return out


def run_cmd(args: list[str], cwd: Path, timeout: int = 240, **extra_env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=env(**extra_env), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def train_py(overrides: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    return run_cmd([sys.executable, str(REPO / "train.py"), *overrides], cwd, **kw)


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if line]
