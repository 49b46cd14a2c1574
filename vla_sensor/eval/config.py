"""Typed Hydra schema of ``evaluate.py`` (``conf/evaluate.yaml`` holds only Hydra's own settings).

Torch-free so composing the config stays cheap; a wrong key or value fails at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from vla_sensor.execution import ExecutionConfig
from vla_sensor.sim.scene import EPISODE_SECONDS, IMAGE_SIZE


class ExecutionMode(str, Enum):
    """How predicted chunks become actions (see :mod:`vla_sensor.execution`)."""

    receding = "receding"  # execute the first sim.execute_steps actions of each chunk, then query again
    ensemble = "ensemble"  # temporal ensembling of overlapping chunks, as in ACT


@dataclass
class EvalDataConfig:
    val_dirs: list[str] = field(default_factory=list)  # empty: the run's own validation trajectories


@dataclass
class SimEvalConfig:
    """Closed-loop evaluation in the MuJoCo insertion simulator (``vla_sensor.sim``)."""

    episodes: int = 0  # > 0: run this many episodes in closed loop (instead of the offline evaluation)
    seed: int = 1000  # episode i uses env seed ``seed + i``: the same seeds for every run compared
    episode_seconds: float = EPISODE_SECONDS
    image_size: int = IMAGE_SIZE  # rendered camera size (the recorder's); the policy resizes as in training
    target_range_mm: Optional[float] = None  # noqa: UP045  (targets within ±mm; None: the scene's ±3; 0: depth only)
    mode: ExecutionMode = ExecutionMode.receding
    execute_steps: int = 4  # actions executed per query (receding) / steps between queries (ensemble)
    ensemble_decay: float = ExecutionConfig.ensemble_decay
    frames: int = 6  # frames kept per episode for the contact sheet
    progress: bool = True
    # ws://host:port of a running `python serve.py`: act through it (token: $VLA_SERVE_TOKEN) instead of
    # loading the run in this process; the same seeds give the same episodes
    policy_server: Optional[str] = None  # noqa: UP045


@dataclass
class EvalConfig:
    """``python evaluate.py run_dir=<run> [sim.episodes=50]``."""

    run_dir: str = MISSING  # a train.py output directory (or a multirun directory: every job)
    checkpoint: Optional[str] = None  # noqa: UP045  (a checkpoint or save_pretrained dir; None: <run>/final)
    data: EvalDataConfig = field(default_factory=EvalDataConfig)
    output_dir: Optional[str] = None  # noqa: UP045  (None: <run_dir>/eval)
    batch_size: Optional[int] = None  # noqa: UP045  (None: the run's data.batch_size)
    num_workers: int = 0
    num_trace_plots: int = 3
    cpu: bool = False
    sim: SimEvalConfig = field(default_factory=SimEvalConfig)


def register_eval_config() -> None:
    ConfigStore.instance().store(name="base_evaluate", node=EvalConfig)


register_eval_config()
