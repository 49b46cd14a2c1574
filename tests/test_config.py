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
    assert (cfg.model.sensor_hidden_dim, cfg.model.sensor_output_dim) == (64, 128)  # the tiny model's choice
    assert cfg.trainer.max_steps is not None and cfg.logger.jsonl and cfg.logger.wandb.enabled


def test_experiment_overrides_groups():
    cfg = compose_cfg(["experiment=qwen2_5_vl_3b"])
    assert cfg.model.name != "tiny" and cfg.trainer.mixed_precision.value == "bf16"
    assert cfg.encoder.gradient_checkpointing is True and cfg.trainer.expected_world_size == 4


def _package(path: Path) -> list[str]:
    """Where a group file's keys land: its ``# @package`` header, else its group directory."""
    first = path.read_text().splitlines()[0] if path.read_text() else ""
    if first.startswith("# @package"):
        package = first.split()[-1]
        return [] if package == "_global_" else package.split(".")
    return list(path.parent.relative_to(CONF).parts)


def _leaves(node, prefix: tuple[str, ...] = ()):
    if isinstance(node, dict):
        for key, value in node.items():
            if key != "defaults":
                yield from _leaves(value, (*prefix, key))
    else:
        yield prefix, node


@pytest.mark.parametrize("group", [g for g in GROUPS if g != "experiment"])
def test_group_files_hold_only_choices(group):
    """Every default is written once, in the schema: a group file that repeats one is a second copy."""
    from vla_sensor.config import Config

    schema = OmegaConf.to_container(OmegaConf.structured(Config), enum_to_str=True)
    for path in sorted((CONF / group).glob("*.yaml")):
        raw = OmegaConf.to_container(OmegaConf.load(path)) or {}
        for keys, value in _leaves(raw, tuple(_package(path))):
            node = schema
            for key in keys:
                node = node.get(key) if isinstance(node, dict) else None
            if value == path.stem:  # an option naming its own choice (cache_strategy/mmap.yaml: name=mmap)
                continue
            assert node != value, f"{path.relative_to(CONF)}: {'.'.join(keys)}={value!r} repeats the schema's default"


@pytest.mark.parametrize(("overrides", "sensor", "backbone"), [
    ([], False, False),
    (["encoder.gradient_checkpointing=true"], True, False),
    (["trainer/checkpointing=sensor"], True, False),
    (["trainer/checkpointing=all"], True, True),
    (["trainer/checkpointing=all", "encoder.gradient_checkpointing=false"], False, True),
])
def test_sensor_checkpointing_has_one_owner(overrides, sensor, backbone):
    """``encoder.gradient_checkpointing`` is the sensor encoder's switch; the group only sets it."""
    from types import SimpleNamespace

    from vla_sensor.training.components import build_policy

    cfg = compose_cfg(overrides)
    data = SimpleNamespace(action_dim=3, horizon=4, num_channels=8, view_selection=["left"], image_size=(56, 56))
    model = build_policy(cfg, data, None)
    assert model.sensor_encoder.gradient_checkpointing is sensor
    assert model.backbone_checkpointing is backbone


def test_sensor_token_count_has_one_owner():
    from types import SimpleNamespace

    from vla_sensor.training.components import build_policy

    cfg = compose_cfg(["model.fusion=tokens", "model.num_sensor_tokens=16"])
    data = SimpleNamespace(action_dim=3, horizon=4, num_channels=8, view_selection=["left"], image_size=(56, 56))
    model = build_policy(cfg, data, None)
    assert model.sensor_encoder.num_tokens == 16 and model.prompt_spec().num_sensor_tokens == 16
    assert model.sensor_encoder.input_channels == 8  # the data's channel count, not a second literal
    with pytest.raises((ConfigCompositionException, ConfigKeyError)):
        compose_cfg(["encoder.num_tokens=16"])  # no second key for the same number


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
