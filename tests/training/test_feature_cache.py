"""The stage-1 feature cache: same model as without it, refused where it cannot apply, rebuilt when stale,
shared by several processes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.training.helpers import REPO, compose_cfg, read_metrics, run_cmd
from vla_sensor.data.build import build_datasets
from vla_sensor.data.dataset import InsertionDataset
from vla_sensor.training.feature_cache import (
    FEATURES_KEY,
    FeatureCacheRefused,
    FeatureDataset,
    check_config,
    check_model,
    config_refusal,
    open_store,
)

# Small real runs: 4 recordings of 2 s (60 samples), tiny model, no workers, a few steps.
SMALL = ["logger=jsonl", "trainer.progress_bar=false", "data.progress=false", "data.num_workers=0",
         "data.synthetic.trajectories=4", "data.synthetic.seconds=2", "data.batch_size=4",
         "trainer.max_steps=5", "trainer.warmup_steps=1", "trainer.log_every=1", "trainer.val_every=0",
         "trainer.save_every=0", "trainer.val_batches=2"]


def _train(tmp: Path, name: str, extra: list[str]) -> Path:
    from vla_sensor.training.loop import train

    cfg = compose_cfg([*SMALL, f"data.root={tmp / 'demo'}", f"data.cache_strategy.cache_dir={tmp / 'cache'}",
                       f"output_dir={tmp / name}", *extra])
    train(cfg)
    return tmp / name


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("feature_cache")
    plain = _train(tmp, "plain", [])
    cached = _train(tmp, "cached", ["trainer.feature_cache=true"])
    return tmp, plain, cached


def test_cached_run_matches_the_uncached_run(runs):
    """Same seed: the per-step losses, the validation loss and every final weight agree."""
    _, plain, cached = runs
    a, b = read_metrics(plain), read_metrics(cached)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3, 4, 5]
    np.testing.assert_allclose([r["loss"] for r in b], [r["loss"] for r in a], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b[-1]["val_loss"], a[-1]["val_loss"], rtol=1e-5)
    wa, wb = load_file(plain / "final" / "model.safetensors"), load_file(cached / "final" / "model.safetensors")
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=1e-5, atol=1e-6, msg=name)
    files = sorted(p.name for p in (runs[0] / "cache" / "features").glob("*.npy"))
    assert [f.split("-")[0] for f in files] == ["train", "val"]


@pytest.mark.parametrize("pooling", ["attention", "flatten"])
def test_spatial_readout_cached_run_matches_the_uncached_run(runs, pooling):
    """model.pooling=attention: the cache stores every token's final hidden state and its layout, in the
    backbone's dtype; model.pooling=flatten: the image tokens' only (8: 2 views of 2x2 merged tokens).
    Training on them gives the uncached run's losses and weights."""
    tmp = runs[0]
    extra = [f"model.pooling={pooling}", f"trainer.feature_cache_dir={tmp / (pooling + '_features')}"]
    plain = _train(tmp, f"{pooling}_plain", extra)
    cached = _train(tmp, f"{pooling}_cached", [*extra, "trainer.feature_cache=true"])
    a, b = read_metrics(plain), read_metrics(cached)
    np.testing.assert_allclose([r["loss"] for r in b], [r["loss"] for r in a], rtol=1e-5, atol=1e-6)
    wa, wb = load_file(plain / "final" / "model.safetensors"), load_file(cached / "final" / "model.safetensors")
    assert any(name.startswith("readout.") for name in wa)
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=1e-5, atol=1e-6, msg=name)
    npy = next((tmp / (pooling + "_features") / "features").glob("train-*.npy"))
    records = np.load(npy, mmap_mode="r")
    assert records.dtype.names == ("tokens", "layout") and records["tokens"].dtype == np.float32
    length, hidden = records["tokens"].shape[1:]
    assert hidden == 64 and records["layout"].shape[1:] == (length, 3)
    if pooling == "flatten":
        assert length == 8 and (records["layout"][..., 0] >= 0).all()
    else:
        assert length > 8 and (records["layout"][..., 0] < 0).any()  # text tokens too
    meta = json.loads(npy.with_suffix(".json").read_text())
    assert meta["data_bytes"] == records.shape[0] * length * (hidden * 4 + 3 * 2)


@pytest.fixture(scope="module")
def small(runs):
    """A tiny model and the training split of the runs' data, with the model's pre-processing."""
    from vla_sensor.training.components import build_policy

    tmp = runs[0]
    cfg = compose_cfg([*SMALL, f"data.root={tmp / 'demo'}", f"data.cache_strategy.cache_dir={tmp / 'cache'}"])
    full, _, stats = build_datasets(cfg.data)
    train_ds = InsertionDataset([full.trajectories[0].path], cfg.data)  # one recording: quick rebuilds
    torch.manual_seed(0)
    model = build_policy(cfg, train_ds, stats)
    train_ds.input_transform = model.build_sample_transform(train_ds.view_selection, train_ds.image_size)
    return cfg, model, train_ds


def _open(cfg, model, ds, where: Path):
    return open_store(model, ds, cfg.data, where, "train", device=torch.device("cpu"), progress=False)


def test_samples_carry_the_backbone_features_and_no_images(small, tmp_path):
    cfg, model, ds = small
    store = _open(cfg, model, ds, tmp_path)
    fds = FeatureDataset(ds, store)
    sample = fds[7]
    assert not {"images", "pixel_values", "input_ids"} & set(sample)
    ref = ds[7]
    torch.testing.assert_close(sample["sensor_data"], ref["sensor_data"], rtol=0, atol=0)
    from vla_sensor.data.collate import collate_samples

    with torch.no_grad():
        expected = model.backbone_features(collate_samples([ref]))[FEATURES_KEY][0]
    torch.testing.assert_close(sample[FEATURES_KEY], expected, rtol=1e-5, atol=1e-6)
    assert ds.input_transform is not None and ds.image_cache is not None  # the wrapped dataset is untouched


def test_a_stale_or_damaged_cache_is_rebuilt_never_read(small, tmp_path):
    cfg, model, ds = small
    first = _open(cfg, model, ds, tmp_path)
    assert first.built_here and not _open(cfg, model, ds, tmp_path).built_here
    before = first[3][FEATURES_KEY].clone()

    first.path.write_bytes(first.path.read_bytes()[:-64])  # truncated
    assert _open(cfg, model, ds, tmp_path).built_here

    param = next(model.backbone.parameters())
    saved = param.detach().clone()
    with torch.no_grad():
        param.add_(0.5)  # other weights
    try:
        changed = _open(cfg, model, ds, tmp_path)
        # another key, another file; the first key's file stays (cleanup: vla_sensor.data.cache_tool)
        assert changed.built_here and changed.path != first.path and first.path.exists()
        assert not torch.equal(changed[3][FEATURES_KEY], before)
    finally:
        with torch.no_grad():
            param.copy_(saved)

    old = list(ds.instructions)
    ds.instructions[0] = "another prompt"
    try:
        assert _open(cfg, model, ds, tmp_path).built_here
    finally:
        ds.instructions[:] = old
    again = _open(cfg, model, ds, tmp_path)
    assert not again.built_here  # back to the first key: its file is still there and valid
    torch.testing.assert_close(again[3][FEATURES_KEY], before, rtol=0, atol=0)
    meta = json.loads(again.path.with_suffix(".json").read_text())
    assert meta["shape"] == [len(ds), model.hidden_size] and meta["data_bytes"] == len(ds) * model.hidden_size * 4


@pytest.mark.parametrize("overrides, reason", [
    (["trainer/stage=stage2_lora", "trainer.stage.init_from=/nonexistent"], "trainer.stage=stage2_lora trains the backbone"),
    (["trainer/stage=stage2_full", "trainer.stage.init_from=/nonexistent"], "trainer.stage=stage2_full trains the backbone"),
    (["model.fusion=tokens"], "model.fusion=tokens"),
])
def test_refused_at_start_up_with_the_reason(overrides, reason):
    from vla_sensor.training.loop import validate_config

    cfg = compose_cfg(["trainer.feature_cache=true", *overrides])
    assert reason in config_refusal(cfg)
    with pytest.raises(FeatureCacheRefused, match=reason.replace(".", r"\.")):
        check_config(cfg)
    if "init_from" not in " ".join(overrides):
        with pytest.raises(FeatureCacheRefused, match=r"trainer\.feature_cache=true is refused"):
            validate_config(cfg)


def test_the_sensor_switch_makes_no_difference():
    """Late fusion with the sensor on or off, and token fusion with the sensor off (nothing enters the backbone)."""
    for overrides in ([], ["model.sensor_enabled=false"], ["model.sensor_enabled=false", "model.fusion=tokens"]):
        check_config(compose_cfg(["trainer.feature_cache=true", *overrides]))


def test_refused_for_a_trainable_backbone_augmentation_or_dropout(small):
    _, model, ds = small
    check_model(model, ds)
    saved = ds.input_transform
    ds.input_transform = lambda sample: saved(sample)  # e.g. a user's augmenting transform
    try:
        with pytest.raises(FeatureCacheRefused, match="image augmentation"):
            check_model(model, ds)
    finally:
        ds.input_transform = saved
    text = model.backbone_config.text_config
    text.attention_dropout = 0.1
    try:
        with pytest.raises(FeatureCacheRefused, match=r"attention_dropout=0\.1"):
            check_model(model, ds)
    finally:
        text.attention_dropout = 0.0
    param = next(model.backbone.parameters())
    param.requires_grad_(True)
    try:
        with pytest.raises(FeatureCacheRefused, match="the backbone trains"):
            check_model(model, ds)
    finally:
        param.requires_grad_(False)


@pytest.mark.slow
def test_two_processes_share_one_cache(runs, tmp_path):
    """2-process CPU DDP: rank 0 builds (the runs' cache was for other data), rank 1 reuses; training runs."""
    tmp = runs[0]
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    proc = run_cmd([*launcher, str(REPO / "train.py"), "cpu=true", *SMALL, "trainer.max_steps=2",
                    "data.num_workers=1", "trainer.feature_cache=true", f"data.root={tmp / 'demo'}",
                    f"trainer.feature_cache_dir={tmp_path / 'features'}", f"output_dir={tmp_path / 'run'}"], tmp_path)
    log = proc.stdout + proc.stderr
    assert log.count("feature cache (train): built") == 1 and log.count("feature cache (train): reused") == 1, log[-3000:]
    assert len(list((tmp_path / "features" / "features").glob("train-*.npy"))) == 1
    assert read_metrics(tmp_path / "run")[-1]["step"] == 2
