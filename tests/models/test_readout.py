"""The spatial readouts (token layout, positions; attention and flatten), the action losses and the
proprioceptive state path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.models.conftest import ACTION_DIM, HORIZON, VIEWS
from vla_sensor.models.action_head import masked_action_loss
from vla_sensor.models.readout import PAD, TEXT, AttentionReadout, FlattenReadout
from vla_sensor.models.vla import LAYOUT_KEY, TOKENS_KEY, QwenVLAWithSensor

STATS = {"mean": [0.5, -1.0, 2.0, 0.0, 0.1, 0.2, 3.0], "std": [2.0, 0.5, 1.0, 3.0, 1.0, 1.0, 0.25]}
STATE_STATS = {**STATS, "state": {"mean": [1.0, -2.0, 5.0], "std": [2.0, 2.0, 4.0]}}


def test_token_layout_places_every_image_token_on_its_views_grid(tiny_model_factory, batch_for) -> None:
    model = tiny_model_factory(pooling="attention", action_stats=STATS)
    batch = batch_for(model, 3)
    layout = model.backbone_features(batch)[LAYOUT_KEY]
    merge = model.backbone_config.vision_config.spatial_merge_size
    _, h, w = batch["image_grid_thw"][0].tolist()
    rows, cols = h // merge, w // merge
    image = batch["input_ids"] == model.image_token_id
    for b in range(3):
        views = layout[b, image[b], 0]
        assert views.tolist() == [v for v in range(len(VIEWS)) for _ in range(rows * cols)]
        cells = layout[b, image[b], 1:].tolist()
        assert cells == [[r, c] for _ in VIEWS for r in range(rows) for c in range(cols)]
        text = ~image[b] & batch["attention_mask"][b].bool()
        assert (layout[b, text, 0] == TEXT).all() and (layout[b, ~batch["attention_mask"][b].bool(), 0] == PAD).all()
    assert (layout[..., 0] == PAD).any()  # the prompts differ in length: padding is marked, not read


def test_the_readout_knows_where_a_token_sits() -> None:
    """Same token contents at swapped grid cells give a different output; padding is never read."""
    torch.manual_seed(0)
    readout = AttentionReadout(16, num_queries=2, num_heads=2)
    tokens = torch.randn(1, 5, 16)
    layout = torch.tensor([[[TEXT, 0, 0], [0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 1]]])
    swapped = layout.clone()
    swapped[0, 1, 1:], swapped[0, 4, 1:] = layout[0, 4, 1:], layout[0, 1, 1:]
    out = readout(tokens, layout)
    assert out.shape == (1, 32)
    assert not torch.allclose(out, readout(tokens, swapped))
    padded = torch.cat([tokens, torch.randn(1, 3, 16) * 100], dim=1)
    pad_layout = torch.cat([layout, torch.tensor([[[PAD, 0, 0]] * 3])], dim=1)
    torch.testing.assert_close(readout(padded, pad_layout), out)


def test_readout_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="readout_heads=3 must divide"):
        AttentionReadout(16, num_queries=2, num_heads=3)
    with pytest.raises(ValueError, match="readout_queries"):
        AttentionReadout(16, num_queries=0)


def test_the_flatten_readout_reads_each_image_token_in_its_place() -> None:
    """Swapping two image tokens changes the output; text and padding tokens are never read."""
    torch.manual_seed(0)
    readout = FlattenReadout(16, num_tokens=4, out_dim=8)
    tokens = torch.randn(1, 6, 16)
    layout = torch.tensor([[[TEXT, 0, 0], [0, 0, 0], [0, 0, 1], [1, 0, 0], [1, 0, 1], [PAD, 0, 0]]])
    out = readout(tokens, layout)
    assert out.shape == (1, 8)
    swapped = tokens.clone()
    swapped[0, [1, 4]] = tokens[0, [4, 1]]
    assert not torch.allclose(out, readout(swapped, layout))
    other = tokens.clone()
    other[0, [0, 5]] = torch.randn(2, 16) * 100
    torch.testing.assert_close(readout(other, layout), out)


def test_the_flatten_readout_refuses_another_token_grid(tiny_model_factory, batch_for) -> None:
    model = tiny_model_factory(pooling="flatten", readout_dim=32, action_stats=STATS)
    merge = model.backbone_config.vision_config.spatial_merge_size
    _, h, w = batch_for(model, 1)["image_grid_thw"][0].tolist()
    assert model.readout.num_tokens == len(VIEWS) * (h // merge) * (w // merge) and model.readout.out_dim == 32
    features = model.backbone_features(batch_for(model, 2))
    layout = features[LAYOUT_KEY].clone()
    first_image = int((layout[0, :, 0] >= 0).nonzero()[0])
    layout[0, first_image, 0] = TEXT  # one image token fewer: another views/size grid
    with pytest.raises(ValueError, match=rf"built for {model.readout.num_tokens} image tokens per sample"):
        model.readout(features[TOKENS_KEY], layout)
    with pytest.raises(ValueError, match="pooling=flatten reads a fixed token grid"):
        tiny_model_factory(pooling="flatten", image_size=None)
    with pytest.raises(ValueError, match="readout_dim"):
        FlattenReadout(16, num_tokens=4, out_dim=0)


@pytest.mark.parametrize(("pooling", "fusion"), [("attention", "late"), ("attention", "tokens"),
                                                 ("flatten", "late"), ("flatten", "tokens")])
def test_spatial_readouts_train_in_both_fusions(tiny_model_factory, batch_for, pooling: str, fusion: str) -> None:
    model = tiny_model_factory(pooling=pooling, fusion=fusion, action_stats=STATS)
    model.configure_stage(1)
    batch = batch_for(model, 3)
    out = model(batch)
    assert out["pred_actions"].shape == (3, HORIZON, ACTION_DIM)
    out["loss"].backward()
    if pooling == "attention":
        assert model.readout.queries.grad is not None and model.readout.row_embed.weight.grad.abs().sum() > 0
    else:
        assert model.readout.proj.weight.grad.abs().sum() > 0
    assert model.readout in model.policy_modules()


@pytest.mark.parametrize("pooling", ["attention", "flatten"])
def test_stored_readout_inputs_give_the_same_loss(tiny_model_factory, batch_for, pooling: str) -> None:
    """What the feature cache stores (tokens and layout) stands in for the images exactly."""
    model = tiny_model_factory(pooling=pooling, action_stats=STATS).eval()
    batch = batch_for(model, 3)
    features = model.backbone_features(batch)
    if pooling == "attention":  # every token
        assert features[TOKENS_KEY].shape[:2] == batch["input_ids"].shape
    else:  # the image tokens only: what the flatten readout reads
        assert features[TOKENS_KEY].shape[:2] == (3, model.readout.num_tokens)
        assert (features[LAYOUT_KEY][..., 0] >= 0).all()
    stored = {k: v for k, v in batch.items() if k not in ("pixel_values", "image_grid_thw", "input_ids", "attention_mask")}
    with torch.no_grad():
        torch.testing.assert_close(model(stored | features)["loss"], model(batch)["loss"], rtol=0, atol=0)


@pytest.mark.parametrize("pooling", ["attention", "flatten"])
def test_spatial_readout_model_saves_and_reloads(tiny_model_factory, batch_for, tmp_path: Path, pooling: str) -> None:
    model = tiny_model_factory(pooling=pooling, readout_queries=2, readout_dim=24, action_stats=STATS).eval()
    batch = batch_for(model, 2)
    model.save_pretrained(tmp_path / "p")
    loaded = QwenVLAWithSensor.from_pretrained(tmp_path / "p").eval()
    torch.testing.assert_close(loaded.predict_action(batch), model.predict_action(batch), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------- losses
def _pred_target() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(4, 3, 2, generator=g) * 2, torch.randn(4, 3, 2, generator=g) * 2
    pad = torch.zeros(4, 3, dtype=torch.bool)
    pad[0, 2] = True
    return pred, target, pad


def test_huber_is_smooth_l1_on_valid_steps() -> None:
    pred, target, pad = _pred_target()
    valid = ~pad
    for delta in (0.5, 1.0):
        expected = torch.nn.functional.huber_loss(pred[valid], target[valid], delta=delta)
        got = masked_action_loss(pred, target, pad, "huber", huber_delta=delta)["loss"]
        torch.testing.assert_close(got, expected)
    small = target + 0.01  # quadratic below delta: half the MSE
    torch.testing.assert_close(masked_action_loss(small, target, None, "huber")["loss"],
                               0.5 * masked_action_loss(small, target, None, "mse")["loss"])


def test_per_dimension_weights() -> None:
    pred, target, pad = _pred_target()
    only_first = masked_action_loss(pred, target, pad, "mse", weights=torch.tensor([1.0, 0.0]))["loss"]
    torch.testing.assert_close(only_first, masked_action_loss(pred[..., :1], target[..., :1], pad, "mse")["loss"])
    ones = masked_action_loss(pred, target, pad, "l1", weights=torch.tensor([3.0, 3.0]))["loss"]
    torch.testing.assert_close(ones, masked_action_loss(pred, target, pad, "l1")["loss"])
    with pytest.raises(ValueError, match="l1/mse/huber"):
        masked_action_loss(pred, target, pad, "l2")


def test_model_loss_weights_are_used_and_checked(tiny_model_factory, batch_for) -> None:
    weights = [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    model = tiny_model_factory(loss="huber", loss_weights=weights, action_stats=STATS)
    out = model(batch_for(model, 3))
    pad = batch_for(model, 3)["action_is_pad"]
    expected = masked_action_loss(out["pred_actions"][..., :1], out["target_actions"][..., :1], pad, "huber")["loss"]
    torch.testing.assert_close(out["loss"], expected)
    with pytest.raises(ValueError, match=r"model.loss_weights=\[1.0, 2.0\]: expected 7"):
        tiny_model_factory(loss_weights=[1.0, 2.0])


# ---------------------------------------------------------------------------------------------- state
def _with_state(batch: dict, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {**batch, "state": torch.randn(batch["actions"].shape[0], 3, generator=g) * 3}


def test_state_enters_the_fusion_normalised(tiny_model_factory, batch_for) -> None:
    model = tiny_model_factory(state_dim=3, action_stats=STATE_STATS)
    model.configure_stage(1)
    batch = _with_state(batch_for(model, 3))
    out = model(batch)
    out["loss"].backward()
    assert model.state_projector.net[0].weight.grad.abs().sum() > 0
    torch.testing.assert_close(model.state_projector.normalizer.mean, torch.tensor([1.0, -2.0, 5.0]))
    with torch.no_grad():
        assert not torch.allclose(model(_with_state(batch, 1))["pred_actions"], model(batch)["pred_actions"])
    assert model.action_stats()["state"] == {"mean": [1.0, -2.0, 5.0], "std": [2.0, 2.0, 4.0]}


def test_state_errors_name_the_key(tiny_model_factory, batch_for) -> None:
    model = tiny_model_factory(state_dim=3, action_stats=STATE_STATS)
    batch = batch_for(model, 2)
    with pytest.raises(ValueError, match="needs 'state'"):
        model(batch)
    with pytest.raises(ValueError, match=r"'state' must be \(B, 3\)"):
        model({**batch, "state": torch.zeros(2, 4)})
    with pytest.raises(ValueError, match="need 'state' statistics"):
        tiny_model_factory(state_dim=3, action_stats=STATS)
    bad = {**STATS, "state": {"mean": [0.0, 0.0], "std": [1.0, 1.0]}}
    with pytest.raises(ValueError, match="state statistics"):
        tiny_model_factory(state_dim=3, action_stats=bad)


def test_a_state_model_saves_its_statistics(tiny_model_factory, batch_for, tmp_path: Path) -> None:
    model = tiny_model_factory(state_dim=3, pooling="attention", action_stats=STATE_STATS).eval()
    batch = _with_state(batch_for(model, 2))
    model.save_pretrained(tmp_path / "p")
    loaded = QwenVLAWithSensor.from_pretrained(tmp_path / "p").eval()
    assert loaded.state_dim == 3 and loaded.action_stats() == model.action_stats()
    torch.testing.assert_close(loaded.predict_action(batch), model.predict_action(batch), rtol=0, atol=0)


def test_use_state_follows_the_data() -> None:
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from vla_sensor.training.components import state_dim_of

    def cfg(use):
        return OmegaConf.create({"model": {"use_state": use}})

    with_state, without = SimpleNamespace(state_dim=3), SimpleNamespace(state_dim=0)
    assert state_dim_of(cfg(None), with_state) == 3 and state_dim_of(cfg(None), without) == 0
    assert state_dim_of(cfg(False), with_state) == 0 and state_dim_of(cfg(True), with_state) == 3
    with pytest.raises(ValueError, match=r"model.use_state=true but the training data has no proprioceptive state"):
        state_dim_of(cfg(True), without)
