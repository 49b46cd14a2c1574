"""Config schema vs YAML, dataset building, split by trajectory, train-only statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from vla_sensor.data.build import build_datasets, ensure_demo_data
from vla_sensor.data.config import CacheStrategyConfig, DataConfig
from vla_sensor.data.format import TrajectoryReader
from vla_sensor.data.loader import build_loader
from vla_sensor.data.normalization import ActionStats, compute_action_stats

CONF = Path(__file__).parents[2] / "conf"


def test_yaml_matches_the_schema() -> None:
    schema = OmegaConf.structured(DataConfig)
    raw = OmegaConf.load(CONF / "data" / "default.yaml")
    assert list(raw.pop("defaults")) == [{"cache_strategy": "mmap"}, "_self_"]
    assert not raw  # every default lives in the schema
    merged = OmegaConf.merge(schema, raw)
    assert merged.root == "data/demo" and merged.cache and list(merged.image_size) == [56, 56]
    for name in ["windows", "stream", "mmap"]:
        m = OmegaConf.merge(OmegaConf.structured(CacheStrategyConfig), OmegaConf.load(CONF / "data" / "cache_strategy" / f"{name}.yaml"))
        assert m.name.value == name
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=None, overrides=["+data=default", "data/cache_strategy=stream"])
    merged = OmegaConf.merge(schema, cfg.data)
    assert merged.cache_strategy.name.value == "stream"
    assert merged.cache_strategy.name.value != DataConfig().cache_strategy.name.value == "mmap"  # lean default
    with pytest.raises(ValidationError, match=r"windows, stream, mmap\]"):  # caching off is data.cache=false
        OmegaConf.merge(merged, {"cache_strategy": {"name": "disk"}})
    with pytest.raises(ValidationError, match=r"float32, float16, int8"):
        OmegaConf.merge(merged, {"cache_strategy": {"dtype": "bf16"}})


def _cfg(tmp_path: Path, **kw) -> DataConfig:
    cfg = OmegaConf.structured(DataConfig)
    base = {"root": str(tmp_path / "demo"), "image_size": [28, 28], "sensor_window_size": 64, "progress": False,
            "synthetic": {"trajectories": 5, "seconds": 1.0, "image_size": 32, "no_sensor_trajectories": 1,
                          "sensor_rate": [325.0]},
            "cache_strategy": {"cache_dir": str(tmp_path / "cache")}}
    return OmegaConf.merge(cfg, base, kw)


def test_build_generates_once_and_splits_by_trajectory(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, val_fraction=0.4)
    train, val, stats = build_datasets(cfg)
    root = tmp_path / "demo"
    assert sorted(p.name for p in root.iterdir()) == [f"traj_{i:03d}" for i in range(5)]
    assert not list(tmp_path.glob(".demo.tmp*"))  # generated into a temp dir, then renamed
    train_dirs = {t.path.resolve() for t in train.trajectories}
    val_dirs = {t.path.resolve() for t in val.trajectories}
    assert len(train_dirs) == 3 and len(val_dirs) == 2 and not train_dirs & val_dirs
    expected = compute_action_stats([TrajectoryReader().read(d).actions for d in sorted(train_dirs)])
    np.testing.assert_allclose(stats.mean, expected.mean)
    all_stats = compute_action_stats([TrajectoryReader().read(d).actions for d in root.iterdir()])
    assert not np.allclose(stats.mean, all_stats.mean)  # validation trajectories are left out
    again = ActionStats.from_dict(stats.to_dict())
    assert again.q01.dtype == np.float32 and np.array_equal(again.q99, stats.q99)
    mtime = (root / "traj_000" / "actions.npz").stat().st_mtime_ns
    ensure_demo_data(root, cfg.synthetic)  # existing data is reused, never regenerated
    assert (root / "traj_000" / "actions.npz").stat().st_mtime_ns == mtime
    batch = next(iter(build_loader(train, OmegaConf.merge(cfg, {"num_workers": 0, "batch_size": 4}), shuffle=True)))
    assert batch["sensor_data"].shape == (4, 64, 1026)


def test_explicit_val_dirs_and_cache_off(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, val_dirs=["traj_004"], cache=False, bucket_by_length=True, adaptive_window=True)
    train, val, _ = build_datasets(cfg)
    assert [t.path.name for t in val.trajectories] == ["traj_004"] and len(train.trajectories) == 4
    assert train.strategy.value == "none"
    loader = build_loader(train, OmegaConf.merge(cfg, {"num_workers": 0, "batch_size": 4}), shuffle=True)
    assert sum(b["images"].shape[0] for b in loader) == len(train)
    with pytest.raises(ValueError, match=r"traj_04.*did you mean: traj_004"):
        build_datasets(_cfg(tmp_path, val_dirs=["traj_04"]))


def test_every_cache_setting_reaches_the_cache(tmp_path: Path) -> None:
    """``data.cache_strategy.*`` are read where they act (verify_full once went nowhere)."""
    cfg = _cfg(tmp_path, val_fraction=0.0, cache_strategy={"name": "mmap", "dtype": "int8", "verify_full": True,
                                                          "decode_on_device": False, "cache_dir": str(tmp_path / "c2")})
    train, _, _ = build_datasets(cfg)
    assert train.cache.verify_full is True and train.cache.dtype.value == "int8"
    assert not train.decode_on_device and train.cache.cache_dir == tmp_path / "c2"
    assert train[0]["sensor_data"].dtype.is_floating_point  # decoded in the worker when decode_on_device is off
