"""The root config schema, registered in Hydra's ConfigStore as the base of ``conf/config.yaml``.

Every group is typed by its own schema, so an unknown key or a wrong enum value fails when Hydra
composes the config, before anything is built, with the allowed values in the message.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from vla_sensor.data.config import DataConfig
from vla_sensor.models.encoder_config import EncoderConfig
from vla_sensor.models.model_config import ModelConfig
from vla_sensor.training.config import LoggerConfig, TrainerConfig
from vla_sensor.training.run_dir import hydra_dir_for_rank


@dataclass
class Config:
    """``python train.py`` composes this from ``conf/``; see docs/training.md for every group."""

    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = 0
    cpu: bool = False  # force CPU (multi-process CPU DDP uses gloo); otherwise a GPU when there is one
    output_dir: str | None = None  # None: Hydra's outputs/<date>/<time> (or the multirun job dir)


def register_configs() -> None:
    """Register the schemas and the ``rank0_dir`` resolver (idempotent; call before composing)."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    if not OmegaConf.has_resolver("rank0_dir"):
        OmegaConf.register_new_resolver("rank0_dir", hydra_dir_for_rank)


register_configs()
