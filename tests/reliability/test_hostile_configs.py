"""Bad config values: an error naming the key (and what is allowed) at start-up, before anything trains."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra.errors import HydraException

from tests.training.helpers import TOY_ARGS, compose_cfg
from vla_sensor.data.build import build_datasets
from vla_sensor.training.loop import train

pytestmark = pytest.mark.timeout(60)


def _message(exc: BaseException) -> str:
    parts = []
    while exc is not None:
        parts.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


# (override, regex the composition error must match)
SCHEMA_CASES = [
    ("trainer.learning_rate=1e-3", r"Key 'learning_rate' not in 'TrainerConfig'"),
    ("trainer.mixed_precision=bf17", r"(?s)mixed_precision.*bf17.*(no|fp16|bf16)"),
    ("encoder.interpolation_mode=quadratic", r"(?s)interpolation_mode.*quadratic.*(linear|nearest|cubic)"),
    ("data.cache_strategy.dtype=int4", r"(?s)dtype.*int4.*(float32|float16|int8)"),
    ("data/cache_strategy=shared", r"(?s)data/cache_strategy.*shared.*(mmap|stream|windows)"),
    ("data.batch_size=eight", r"(?s)batch_size.*eight"),
    ("model=qwen9", r"(?s)model.*qwen9"),
]


@pytest.mark.parametrize("override,message", SCHEMA_CASES, ids=[c[0] for c in SCHEMA_CASES])
def test_schema_rejects(override: str, message: str) -> None:
    with pytest.raises(HydraException) as info:
        compose_cfg([override])
    assert re.search(message, _message(info.value)), _message(info.value)


# Values the schema accepts but training cannot use: refused by the loop before any step.
LOOP_CASES = [
    ("data.batch_size=0", r"data\.batch_size must be >= 1, got 0"),
    ("data.num_workers=-1", r"data\.num_workers must be >= 0, got -1"),
    ("trainer.max_steps=0", r"trainer\.max_steps must be >= 1, got 0"),
    ("trainer.lr=-0.1", r"trainer\.lr must be > 0, got -0\.1"),
    ("trainer.warmup_steps=-2", r"trainer\.warmup_steps must be >= 0, got -2"),
    ("trainer.grad_accum_steps=0", r"trainer\.grad_accum_steps must be >= 1, got 0"),
]


@pytest.mark.parametrize("override,message", LOOP_CASES, ids=[c[0] for c in LOOP_CASES])
def test_loop_rejects_before_training(tmp_path: Path, override: str, message: str) -> None:
    run = tmp_path / "run"
    with pytest.raises(ValueError, match=message):
        train(compose_cfg([*TOY_ARGS, f"output_dir={run}", "trainer.max_steps=2", override]))
    assert not (run / "metrics.jsonl").exists() and not (run / "checkpoints").exists()


# Data settings: the dataset build names the field.
DATA_CASES = [
    ("data.sensor_window_size=0", r"sensor_window_size: expected a positive integer, got 0"),
    ("data.sensor_window_seconds=-1", r"sensor_window_seconds: expected a positive number of seconds"),
    ("data.val_fraction=1.5", r"data\.val_fraction: expected 0 <= value < 1, got 1\.5"),
    ("data.horizon=0", r"horizon: expected a positive integer, got 0"),
    ("data.image_size=[0,56]", r"image_size: expected \(H, W\) positive integers"),
    ("data.view_selection=[left,top]", r"unknown view 'top'"),
    ("data.val_dirs=[traj_009]", r"data\.val_dirs: traj_009 is not one of the trajectories"),
    ("data.reader.expected_channels=1000", r"wrong channel count 1026 .* expected 1000"),
    ("data.root=nowhere", r"data\.root nowhere does not exist"),
]


@pytest.mark.parametrize("override,message", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_data_settings_rejected(tiny_root: Path, tmp_path: Path, override: str, message: str,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = compose_cfg([f"data.root={tiny_root}", "data.generate_if_missing=false", "data.progress=false",
                       f"data.cache_strategy.cache_dir={tmp_path / 'cache'}", "data.val_fraction=0.34", override])
    with pytest.raises(ValueError, match=message):
        build_datasets(cfg.data)
