"""The config tree composes with every group option; unknown keys and wrong values fail listing what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from tests.training.helpers import CONF, compose_cfg


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


GROUPS = ["encoder", "encoder/interpolation", "data", "data/cache_strategy", "model", "trainer",
          "trainer/checkpointing", "trainer/stage", "logger", "experiment"]


@pytest.mark.parametrize("group", GROUPS)
def test_every_group_option_composes(group):
    options = _options(group)
    assert options, f"conf/{group} has no options"
    for option in options:
        cfg = compose_cfg([f"{group}={option}"])
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # interpolations resolve, nothing missing


def test_defaults_are_the_demo():
    cfg = compose_cfg([])
    assert cfg.model.name == "tiny" and cfg.data.root == "data/demo" and cfg.cpu is False
    assert cfg.trainer.stage.name.value == "stage1" and cfg.trainer.components.endswith("build_components")
    assert cfg.encoder.hidden_dim == cfg.model.sensor_hidden_dim
    assert cfg.trainer.max_steps is not None and cfg.logger.jsonl and cfg.logger.wandb.enabled


def test_experiment_overrides_groups():
    cfg = compose_cfg(["experiment=qwen2_5_vl_3b"])
    assert cfg.model.name != "tiny" and cfg.trainer.mixed_precision.value == "bf16"
    assert cfg.trainer.checkpointing.sensor is True and cfg.trainer.expected_world_size == 4


@pytest.mark.parametrize(
    ("override", "allowed"),
    [
        ("trainer.mixed_precision=bf17", "[no, fp16, bf16]"),
        ("encoder.interpolation_mode=bicubic", "[linear, nearest, cubic]"),
        ("trainer.stage.name=stage3", "[stage1, stage2_lora, stage2_full]"),
        ("logger.wandb.mode=sometimes", "[online, offline, disabled]"),
    ],
)
def test_wrong_enum_value_lists_allowed(override, allowed):
    with pytest.raises((ConfigCompositionException, ValidationError)) as err:
        compose_cfg([override])
    assert allowed in str(err.value) + str(err.value.__cause__)


def test_wrong_type_fails():
    with pytest.raises((ConfigCompositionException, ValidationError)) as err:
        compose_cfg(["trainer.max_steps=many"])
    assert "max_steps" in str(err.value) + str(err.value.__cause__)


@pytest.mark.parametrize("override", ["trainer.learning_rate=1e-3", "lr=1e-3", "data.batchsize=4"])
def test_unknown_key_fails(override):
    with pytest.raises((ConfigCompositionException, ConfigKeyError)) as err:
        compose_cfg([override])
    assert override.split("=")[0].split(".")[-1] in str(err.value) + str(err.value.__cause__)


def test_unknown_group_option_lists_available():
    with pytest.raises(ConfigCompositionException) as err:
        compose_cfg(["logger=tensorboard"])
    assert "Available options" in str(err.value) and "jsonl" in str(err.value)


def test_conf_tree_matches_docs():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text()
    for group in GROUPS:
        assert f"`{group}/`" in doc, f"docs/training.md does not describe conf/{group}/"
