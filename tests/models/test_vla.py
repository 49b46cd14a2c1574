"""QwenVLAWithSensor: fusion modes, sensor on/off, loss masking, normalisation, stages, LoRA, save/load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.models.conftest import (
    ACTION_DIM,
    CHANNELS,
    HORIZON,
    IMAGE_SIZE,
    VIEWS,
    collate,
    make_samples,
    small_encoder_kwargs,
)
from vla_sensor.models.action_head import masked_action_loss
from vla_sensor.models.model_config import ModelConfig
from vla_sensor.models.vla import QwenVLAWithSensor, build_model, stage_kwargs

STATS = {"mean": [0.5, -1.0, 2.0, 0.0, 0.1, 0.2, 3.0], "std": [2.0, 0.5, 1.0, 3.0, 1.0, 1.0, 0.25], "count": 10}


def _grads(model: torch.nn.Module) -> dict[str, bool]:
    return {n: p.grad is not None and bool(p.grad.abs().sum() > 0) for n, p in model.named_parameters()}


@pytest.mark.parametrize("fusion", ["late", "tokens"])
def test_forward_backward_both_fusions(tiny_model_factory, batch_for, fusion: str) -> None:
    model = tiny_model_factory(fusion=fusion, action_stats=STATS)
    batch = batch_for(model, 4)
    out = model(batch)
    assert out["pred_actions"].shape == (4, HORIZON, ACTION_DIM)
    assert torch.isfinite(out["loss"]) and out["loss"].ndim == 0
    model.configure_stage(1)
    model(batch)["loss"].backward()
    grads = _grads(model)
    assert any(v for n, v in grads.items() if n.startswith("sensor_encoder."))
    assert grads["head.out.weight"]
    # the sensor changes the prediction in both modes
    other = dict(batch, sensor_data=batch["sensor_data"] * 2 + 1)
    with torch.no_grad():
        assert not torch.allclose(model(batch)["pred_actions"], model(other)["pred_actions"])


def test_token_mode_routes_sensor_through_backbone(tiny_model_factory, batch_for) -> None:
    model = tiny_model_factory(fusion="tokens")
    batch = batch_for(model, 2)
    sensor_id = model.sensor_token_id
    assert int((batch["input_ids"] == sensor_id).sum()) == 2 * 4
    model.configure_stage(1)
    model(batch)["loss"].backward()
    assert model.sensor_token_proj[1].weight.grad.abs().sum() > 0  # gradient came back through the frozen LM
    assert all(p.grad is None for p in model.backbone.parameters())
    bad = dict(batch, input_ids=torch.where(batch["input_ids"] == sensor_id, 65, batch["input_ids"]))
    with pytest.raises(ValueError, match=r"needs 4 <\|sensor_pad\|> placeholders"):
        model(bad)


def test_sensor_disabled_is_a_plain_vla(tiny_model_factory, batch_for) -> None:
    model = tiny_model_factory(sensor_enabled=False)
    assert model.sensor_encoder is None
    assert not [n for n, _ in model.named_parameters() if "sensor" in n]
    batch = batch_for(model, 3)
    out = model(batch)
    other = dict(batch, sensor_data=torch.randn_like(batch["sensor_data"]))
    with torch.no_grad():
        torch.testing.assert_close(model(other)["pred_actions"], out["pred_actions"])
    nosensor = {k: v for k, v in batch.items() if k not in ("sensor_data", "sensor_lengths", "has_sensor_mask")}
    assert model(nosensor)["pred_actions"].shape == (3, HORIZON, ACTION_DIM)


@pytest.mark.parametrize("fusion", ["late", "tokens"])
def test_no_sensor_samples_use_learned_embedding(tiny_model_factory, batch_for, fusion: str) -> None:
    model = tiny_model_factory(fusion=fusion).eval()
    batch = batch_for(model, 4, no_sensor=(1, 3))
    assert batch["has_sensor_mask"].tolist() == [True, False, True, False]
    noisy = dict(batch, sensor_data=torch.randn_like(batch["sensor_data"]))
    with torch.no_grad():
        a, b = model(batch)["pred_actions"], model(noisy)["pred_actions"]
        # rows without a sensor ignore whatever is in sensor_data; rows with one do not
        torch.testing.assert_close(a[[1, 3]], b[[1, 3]])
        assert not torch.allclose(a[[0, 2]], b[[0, 2]])
        # a batch without sensor_data at all reads as "no sensor" everywhere
        bare = {k: v for k, v in batch.items() if k not in ("sensor_data", "sensor_lengths", "has_sensor_mask")}
        torch.testing.assert_close(model(bare)["pred_actions"][[1, 3]], a[[1, 3]])
    model.configure_stage(1)
    model.train()
    model(batch)["loss"].backward()
    assert model.sensor_encoder.no_sensor_embedding.grad.abs().sum() > 0


def test_loss_is_masked_by_action_is_pad(tiny_model_factory, batch_for) -> None:
    model = tiny_model_factory(action_stats=STATS).eval()
    batch = batch_for(model, 4)
    assert batch["action_is_pad"].any()
    changed = batch["actions"].clone()
    changed[batch["action_is_pad"]] += 100.0
    with torch.no_grad():
        a = model(batch)
        b = model(dict(batch, actions=changed))
    torch.testing.assert_close(a["loss"], b["loss"])
    valid = ~batch["action_is_pad"]
    diff = (a["pred_actions"] - a["target_actions"])[valid]
    torch.testing.assert_close(a["loss"], diff.abs().mean())
    torch.testing.assert_close(a["mse"], diff.square().mean())
    pred = torch.randn(2, HORIZON, ACTION_DIM, requires_grad=True)
    all_pad = masked_action_loss(pred, torch.zeros_like(pred), torch.ones(2, HORIZON, dtype=torch.bool))
    assert all_pad["loss"].item() == 0.0
    all_pad["loss"].backward()


def test_mse_loss_option(tiny_model_factory, batch_for) -> None:
    model = tiny_model_factory(loss="mse").eval()
    batch = batch_for(model, 2)
    with torch.no_grad():
        out = model(batch)
    torch.testing.assert_close(out["loss"], out["mse"])


def test_normalisation_round_trip(tiny_model_factory, batch_for) -> None:
    model = tiny_model_factory(action_stats=STATS).eval()
    mean, std = torch.tensor(STATS["mean"]), torch.tensor(STATS["std"])
    actions = torch.randn(3, HORIZON, ACTION_DIM)
    norm = model.normalizer.normalize(actions)
    torch.testing.assert_close(norm, (actions - mean) / std)
    torch.testing.assert_close(model.normalizer.denormalize(norm), actions)
    batch = batch_for(model, 2)
    with torch.no_grad():
        pred = model(batch)["pred_actions"]
    torch.testing.assert_close(model.predict_action(batch), pred * std + mean)
    assert model.action_stats()["count"] == 10
    assert {"normalizer.mean", "normalizer.std"} <= set(model.state_dict())

    class Stats:  # anything with to_dict(), like the data package's ActionStats
        def to_dict(self) -> dict[str, list[float]]:
            return {"mean": [0.0] * ACTION_DIM, "std": [1.0] * ACTION_DIM, "q01": [-1.0] * ACTION_DIM}

    model.set_action_stats(Stats())
    assert model.normalizer.mean.abs().sum() == 0 and model.action_stats()["q01"] == [-1.0] * ACTION_DIM
    with pytest.raises(ValueError, match="expected action_dim=7"):
        model.set_action_stats({"mean": [0.0], "std": [1.0]})


def test_stage_one_freezes_backbone(tiny_model_factory, batch_for) -> None:
    model = tiny_model_factory()
    counts = model.configure_stage(1)
    assert 0 < counts["trainable"] < counts["total"]
    model(batch_for(model, 2))["loss"].backward()
    for name, p in model.named_parameters():
        if name.startswith("backbone."):
            assert not p.requires_grad and p.grad is None, name
        else:
            assert p.requires_grad, name
    trained = _grads(model)
    assert trained["vl_norm.weight"] and trained["sensor_norm.weight"]


def test_stage_two_lora_trains_adapters_only(tiny_model_factory, batch_for) -> None:
    model = tiny_model_factory()
    model.configure_stage(1)
    frozen = model.configure_stage(2, llm="lora", lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]})
    assert model.lora_settings["target_modules"] == ["q_proj", "v_proj"]
    lora = [n for n, _ in model.named_parameters() if "lora_" in n]
    assert len(lora) == 2 * 2 * 2  # 2 layers x {q, v} x {A, B}
    model(batch_for(model, 2))["loss"].backward()
    g = _grads(model)
    assert all(g[n] for n in lora if "lora_B" in n)  # B starts at zero, so only B has a gradient at step 0
    assert all(model.get_parameter(n).requires_grad for n in lora)
    for name, p in model.named_parameters():
        if name.startswith("backbone.") and "lora_" not in name:
            assert not p.requires_grad and p.grad is None, name
    assert frozen["trainable"] > 0
    # calling stage 2 again keeps the same adapters
    model.configure_stage(2, llm="lora", lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]})
    assert len([n for n, _ in model.named_parameters() if "lora_" in n]) == len(lora)


def test_stage_two_full_and_vision(tiny_model_factory, batch_for) -> None:
    model = tiny_model_factory()
    model.configure_stage(2, llm="full", train_vision=True)
    model(batch_for(model, 2))["loss"].backward()
    g = _grads(model)
    assert any(v for n, v in g.items() if n.startswith("backbone.language_model.layers."))
    assert any(v for n, v in g.items() if n.startswith("backbone.visual.blocks."))
    model.configure_stage(2, llm="full", train_vision=False)
    assert not any(p.requires_grad for p in model.backbone.visual.parameters())


def test_bad_lora_target_and_stage(tiny_model_factory) -> None:
    model = tiny_model_factory()
    with pytest.raises(ValueError, match=r"\['qkv_proj'\] not found.*q_proj"):
        model.configure_stage(2, lora={"target_modules": ["q_proj", "qkv_proj"]})
    with pytest.raises(ValueError, match="stage must be 1 or 2"):
        model.configure_stage(3)


def test_gradient_checkpointing_same_loss_and_grads(tiny_model_factory, batch_for) -> None:
    results = []
    for ckpt in (False, True):
        model = tiny_model_factory(seed=3)
        model.configure_stage(2, llm="full")
        model.set_gradient_checkpointing(sensor=ckpt, backbone=ckpt)
        assert model.sensor_encoder.gradient_checkpointing is ckpt
        assert model.backbone_checkpointing is ckpt
        out = model(batch_for(model, 2))
        out["loss"].backward()
        results.append((out["loss"].detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    torch.testing.assert_close(results[0][0], results[1][0])
    assert results[0][1].keys() == results[1][1].keys()
    for n, g in results[0][1].items():
        torch.testing.assert_close(g, results[1][1][n], atol=1e-5, rtol=1e-4, msg=n)
    # the original API's spelling: switched on as an attribute of the built model
    model = tiny_model_factory()
    model.sensor_encoder.gradient_checkpointing = True
    model(batch_for(model, 2))["loss"].backward()


@pytest.mark.parametrize("fusion,stage", [("late", 1), ("tokens", 2)])
def test_save_and_reload_predict_the_same(tiny_model_factory, batch_for, tmp_path: Path, fusion: str, stage: int) -> None:
    model = tiny_model_factory(fusion=fusion, action_stats=STATS)
    model.configure_stage(stage, lora={"r": 4})
    if stage == 2:  # move the LoRA B matrices off zero so the adapters matter
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(std=0.5)
    model.eval()
    batch = batch_for(model, 3)
    before = model.predict_action(batch)
    out_dir = tmp_path / "policy"
    model.save_pretrained(out_dir)
    assert {"model.safetensors", "vla_config.json", "action_stats.json", "tokenizer"} <= {p.name for p in out_dir.iterdir()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy"]  # no temp dirs left
    model.save_pretrained(out_dir)  # overwriting an existing save is atomic too
    loaded = QwenVLAWithSensor.from_pretrained(out_dir).eval()
    assert loaded.fusion == fusion and loaded.lora_settings == model.lora_settings
    torch.testing.assert_close(loaded.predict_action(batch), before, rtol=0, atol=0)
    assert loaded.action_stats() == model.action_stats()
    # the reloaded tokenizer and transform build identical inputs
    again = collate([loaded.build_sample_transform()(s) for s in make_samples(3)])
    assert torch.equal(again["input_ids"], batch["input_ids"])


def test_stage_two_from_stage_one_checkpoint(tiny_model_factory, batch_for, tmp_path: Path) -> None:
    stage1 = tiny_model_factory(action_stats=STATS)
    stage1.configure_stage(1)
    stage1.save_pretrained(tmp_path / "s1")
    model = QwenVLAWithSensor.from_pretrained(tmp_path / "s1")
    model.configure_stage(2, llm="lora", lora={"r": 4})
    torch.testing.assert_close(model.head.out.weight, stage1.head.out.weight)
    model.eval()
    stage1.eval()
    batch = batch_for(model, 2)
    # fresh LoRA (B = 0) leaves the stage-1 function unchanged
    torch.testing.assert_close(model.predict_action(batch), stage1.predict_action(batch))


def test_from_pretrained_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a saved QwenVLAWithSensor"):
        QwenVLAWithSensor.from_pretrained(tmp_path)


def test_missing_view_in_batch(tiny_model_factory, batch_for) -> None:
    model = tiny_model_factory()
    raw = collate(make_samples(2))
    raw["images"] = raw["images"][:, :1]
    with pytest.raises(ValueError, match=r"1 image view.*expects 2.*'left', 'oak'"):
        model(raw)
    batch = batch_for(model, 2)
    half = dict(batch, image_grid_thw=batch["image_grid_thw"][:2])
    with pytest.raises(ValueError, match="2 views per sample"):
        model(half)
    with pytest.raises(KeyError, match="pixel_values"):
        model({"actions": batch["actions"]})


def test_raw_images_batch_equals_transformed_batch(tiny_model_factory, batch_for) -> None:
    model = tiny_model_factory().eval()
    samples = make_samples(2)
    with torch.no_grad():
        a = model(collate(samples))["pred_actions"]
        b = model(batch_for(model, 2))["pred_actions"]
    torch.testing.assert_close(a, b)


def test_a_size_given_twice_differently_is_named() -> None:
    with pytest.raises(ValueError, match=r"sensor_output_dim=99 given directly and sensor_output_dim=48 in config"):
        QwenVLAWithSensor(True, 32, 99, config={"sensor_output_dim": 48})


def test_original_positional_arguments_set_the_sensor_sizes() -> None:
    model = QwenVLAWithSensor(True, 32, 48, encoder=small_encoder_kwargs())
    assert (model.sensor_encoder.hidden_dim, model.sensor_encoder.output_dim) == (32, 48)
    assert model.sensor_encoder.input_channels == 1026 and model.sensor_encoder.temporal_length == 32


def test_qwen2_vl_family_forward(tiny_model_factory, batch_for) -> None:
    model = tiny_model_factory(backbone={"family": "qwen2_vl"}, fusion="tokens")
    assert type(model.backbone).__name__ == "Qwen2VLModel"
    out = model(batch_for(model, 2))
    out["loss"].backward()
    assert torch.isfinite(out["loss"])


def test_build_model_from_config_groups(batch_for) -> None:
    model_cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig),
                                OmegaConf.load(Path(__file__).resolve().parents[2] / "conf/model/tiny.yaml"))
    model_cfg.fusion = "tokens"
    model_cfg.num_sensor_tokens = 16
    model = build_model(model_cfg, small_encoder_kwargs(), action_dim=ACTION_DIM, horizon=HORIZON,
                        sensor_channels=CHANNELS, action_stats=STATS, view_selection=VIEWS, image_size=IMAGE_SIZE)
    assert model.fusion == "tokens" and model.sensor_encoder.output_dim == 128 and model.sensor_encoder.temporal_length == 32
    assert model.sensor_encoder.num_tokens == 16  # one owner: model.num_sensor_tokens
    counts = model.configure_stage(2, **stage_kwargs(model_cfg))
    assert counts["trainable"] < counts["total"] and model.lora_settings["r"] == 16
    out = model(batch_for(model, 2))
    assert out["pred_actions"].shape == (2, HORIZON, ACTION_DIM)


def test_a_dimension_constant_in_training_is_not_blown_up() -> None:
    from vla_sensor.models.action_head import ActionNormalizer

    norm = ActionNormalizer(2)
    norm.set_stats({"mean": [0.0, 1.0], "std": [2.0, 0.0]})
    actions = torch.tensor([[4.0, 1.5]])
    torch.testing.assert_close(norm.normalize(actions), torch.tensor([[2.0, 0.5]]))
    torch.testing.assert_close(norm.denormalize(norm.normalize(actions)), actions)
