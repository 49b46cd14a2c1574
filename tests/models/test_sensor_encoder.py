"""SensorEncoder behaviour: shapes, lengths, no-sensor embedding, checkpointing, config, bad input."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf, ValidationError

import vla_sensor.models.sensor_encoder as sensor_encoder_module
from vla_sensor.models.encoder_config import EncoderConfig, InterpolationMode
from vla_sensor.models.sensor_encoder import SensorEncoder, saved_activation_bytes

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
SMALL = dict(input_channels=6, temporal_length=32, hidden_dim=16, output_dim=24, nhead=4, num_tokens=3)


def small(**overrides: Any) -> SensorEncoder:
    torch.manual_seed(0)
    return SensorEncoder(**{**SMALL, "dropout": 0.0, **overrides})


def test_seed_example_1_default_sizes() -> None:
    from vla_sensor import SensorEncoder as Exported

    sensor_encoder = Exported(
        input_channels=1026, temporal_length=650, gradient_checkpointing=True, interpolation_mode="linear"
    )
    short_input = torch.randn(4, 325, 1026)
    standard_input = torch.randn(4, 650, 1026)
    long_input = torch.randn(4, 1300, 1026)
    assert sensor_encoder(short_input).shape == (4, 3072)
    assert sensor_encoder(standard_input).shape == (4, 3072)
    assert sensor_encoder(long_input).shape == (4, 3072)


@pytest.mark.parametrize("mode", ["linear", "nearest", "cubic", InterpolationMode.cubic])
@pytest.mark.parametrize("length", [5, 32, 77])
def test_shapes_for_every_mode_and_length(mode: Any, length: int) -> None:
    enc = small(interpolation_mode=mode)
    x = torch.randn(3, length, 6)
    assert enc(x).shape == (3, 24)
    assert enc.encode_tokens(x).shape == (3, 3, 24)
    both = enc.encode_all(x)
    torch.testing.assert_close(both[:, 0], enc(x))
    torch.testing.assert_close(both[:, 1:], enc.encode_tokens(x))


def test_transformer_off_and_single_conv_layer() -> None:
    enc = small(use_transformer=False, num_conv_layers=1)
    assert not enc.transformer_layers
    assert enc(torch.randn(2, 10, 6)).shape == (2, 24)


@pytest.mark.parametrize("mode", ["linear", "nearest", "cubic"])
def test_padding_never_reaches_the_features(mode: str) -> None:
    enc = small(interpolation_mode=mode).eval()
    lengths = torch.tensor([50, 7, 23])
    x = torch.randn(3, 50, 6)
    out = enc(x, lengths)
    noisy = x.clone()
    for b, n in enumerate(lengths.tolist()):
        noisy[b, : 50 - n] = 100 * torch.randn(50 - n, 6)
    torch.testing.assert_close(enc(noisy, lengths), out)
    # Each sample equals encoding its valid part alone.
    for b, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(enc(x[b : b + 1, 50 - n :]), out[b : b + 1], atol=1e-5, rtol=1e-5)


def test_no_sensor_samples_get_the_learned_embedding() -> None:
    enc = small()
    x = torch.zeros(3, 20, 6)
    x[0] = torch.randn(20, 6)
    has = torch.tensor([True, False, False])
    out = enc.encode_all(x, has_sensor=has)
    for b in (1, 2):
        assert torch.equal(out[b], enc.no_sensor_embedding)
    # Not the encoding of zeros:
    zeros = enc.encode_all(torch.zeros(1, 20, 6))
    assert not torch.allclose(zeros[0], out[1])
    # Length 0 means no sensor when has_sensor is omitted (the collate contract).
    lengths = torch.tensor([20, 0, 0])
    torch.testing.assert_close(enc.encode_all(x, lengths), out)
    # The embedding is trained.
    enc(x, has_sensor=has).sum().backward()
    assert enc.no_sensor_embedding.grad is not None
    assert enc.no_sensor_embedding.grad[0].abs().sum() > 0


def test_short_windows_with_cubic() -> None:
    enc = small(interpolation_mode="cubic")
    out = enc(torch.randn(2, 10, 6), torch.tensor([10, 2]), torch.tensor([True, False]))
    assert out.shape == (2, 24)
    # a trajectory's first windows hold < 4 rows: they are encoded (linearly resampled), not an error
    out = enc(torch.randn(2, 10, 6), torch.tensor([10, 2]))
    assert out.shape == (2, 24) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="at least 4"):
        enc(torch.randn(2, 3, 6))


def _step(enc: SensorEncoder, x: torch.Tensor, lengths: torch.Tensor | None) -> tuple[torch.Tensor, dict]:
    torch.manual_seed(123)
    enc.zero_grad(set_to_none=True)
    out = enc.encode_all(x, lengths)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in enc.named_parameters()}


@pytest.mark.parametrize(("mode", "length", "use_lengths"), [("linear", 32, False), ("cubic", 45, True)])
def test_checkpointing_gives_identical_outputs_and_gradients(
    mode: str, length: int, use_lengths: bool
) -> None:
    enc = small(interpolation_mode=mode, dropout=0.1).train()
    x = torch.randn(4, length, 6)
    lengths = torch.tensor([length, 10, 30, 4]) if use_lengths else None
    out_off, grads_off = _step(enc, x, lengths)
    enc.gradient_checkpointing = True
    out_on, grads_on = _step(enc, x, lengths)
    torch.testing.assert_close(out_on, out_off)
    for name in grads_off:
        torch.testing.assert_close(grads_on[name], grads_off[name], msg=name)


def test_checkpointing_only_in_training_with_grad(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = sensor_encoder_module.checkpoint

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("use_reentrant"))
        return real(*args, **kwargs)

    monkeypatch.setattr(sensor_encoder_module, "checkpoint", counting)
    enc = small(gradient_checkpointing=True)
    x = torch.randn(2, 40, 6)
    enc.train()(x)
    assert calls == [False] * (1 + 3 + 2)  # stem + further conv blocks + transformer layers
    calls.clear()
    with torch.no_grad():
        enc(x)
    enc.eval()(x)
    enc.gradient_checkpointing = False
    enc.train()(x)
    assert calls == []


def test_checkpointing_cuts_saved_activations_by_60_percent() -> None:
    # Default sizes at a small batch: the saved-bytes ratio does not depend on the batch size.
    enc = SensorEncoder()
    x = torch.randn(2, 650, 1026)
    off = saved_activation_bytes(enc, x)["saved_bytes"]
    enc.gradient_checkpointing = True
    on = saved_activation_bytes(enc, x)["saved_bytes"]
    assert off > 0
    assert on <= 0.4 * off
    resampled = torch.randn(2, 1300, 1026)
    on_resampled = saved_activation_bytes(enc, resampled)["saved_bytes"]
    enc.gradient_checkpointing = False
    assert on_resampled <= 0.4 * saved_activation_bytes(enc, resampled)["saved_bytes"]


def test_bad_inputs_name_the_expected_shape() -> None:
    enc = small()
    with pytest.raises(ValueError, match=r"\(B, T, 6\)"):
        enc(torch.randn(20, 6))
    with pytest.raises(ValueError, match=r"\(B, T, 6\).*channel"):
        enc(torch.randn(2, 20, 5))
    with pytest.raises(ValueError, match="T >= 1"):
        enc(torch.randn(2, 0, 6))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        enc(torch.randn(2, 20, 6), torch.tensor([20, 20, 20]))
    with pytest.raises(ValueError, match=r"\[0, T=20\]"):
        enc(torch.randn(2, 20, 6), torch.tensor([21, 5]))
    with pytest.raises(ValueError, match=r"\[0, T=20\]"):
        enc(torch.randn(2, 20, 6), torch.tensor([-1, 5]))
    with pytest.raises(ValueError, match="has_sensor=True needs lengths >= 1"):
        enc(torch.randn(2, 20, 6), torch.tensor([0, 5]), torch.tensor([True, True]))
    with pytest.raises(ValueError, match="bool tensor"):
        enc(torch.randn(2, 20, 6), has_sensor=torch.tensor([1, 0]))
    for bad in (float("nan"), float("inf")):
        x = torch.randn(2, 20, 6)
        x[1, 3, 2] = bad
        with pytest.raises(ValueError, match=r"NaN or inf.*\[1, 3, 2\]"):
            enc(x)
    x = torch.randn(2, 20, 6)
    x[0, 0, 0] = float("nan")
    assert small(check_finite=False)(x).shape == (2, 24)  # the check is switchable
    huge = torch.full((2, 20, 6), 3e38)  # a sum that overflows is not a false alarm
    assert enc(huge).shape == (2, 24)


def test_constructor_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match=r"\[linear, nearest, cubic\]"):
        SensorEncoder(**SMALL, interpolation_mode="spline")
    with pytest.raises(ValueError, match="divisible by nhead"):
        SensorEncoder(**{**SMALL, "nhead": 5})
    with pytest.raises(ValueError, match="num_conv_layers"):
        SensorEncoder(**{**SMALL, "num_conv_layers": 0})


def test_config_enum_rejects_wrong_values() -> None:
    cfg = OmegaConf.structured(EncoderConfig)
    cfg.interpolation_mode = "cubic"
    assert cfg.interpolation_mode is InterpolationMode.cubic
    with pytest.raises(ValidationError, match=r"linear.*nearest.*cubic"):
        cfg.interpolation_mode = "bicubic"


@dataclass
class _Root:
    defaults: list[Any] = field(default_factory=lambda: ["_self_", {"encoder": "default"}])
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    model: dict[str, Any] = field(default_factory=lambda: {"sensor_hidden_dim": 16, "sensor_output_dim": 24})


def _compose(overrides: list[str]) -> Any:
    ConfigStore.instance().store(name="_encoder_test_root", node=_Root)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="_encoder_test_root", overrides=overrides)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([], "linear"),
        (["encoder.interpolation_mode=cubic"], "cubic"),
        (["encoder/interpolation=nearest"], "nearest"),
        (["encoder/interpolation=nearest", "encoder.interpolation_mode=cubic"], "cubic"),
    ],
)
def test_hydra_group_and_field_select_the_mode(overrides: list[str], expected: str) -> None:
    cfg = _compose(overrides)
    assert cfg.encoder.interpolation_mode is InterpolationMode(expected)
    assert "hidden_dim" not in cfg.encoder  # the encoder's sizes have one owner: the model (and the data)


def test_hydra_rejects_unknown_mode_listing_the_allowed_ones() -> None:
    with pytest.raises(ConfigCompositionException) as info:
        _compose(["encoder.interpolation_mode=bicubic"])
    text = f"{info.value} {info.value.__cause__}"
    assert "linear" in text and "nearest" in text and "cubic" in text


def test_encoder_built_from_config_with_the_model_sizes() -> None:
    from vla_sensor.models.vla import encoder_settings

    cfg = _compose(["encoder.interpolation_mode=cubic", "encoder.temporal_length=32", "encoder.nhead=4"])
    enc = SensorEncoder(input_channels=6, hidden_dim=cfg.model.sensor_hidden_dim,
                        output_dim=cfg.model.sensor_output_dim, num_tokens=3, **encoder_settings(cfg.encoder))
    assert isinstance(enc, SensorEncoder)
    assert enc.interpolation_mode is InterpolationMode.cubic
    assert enc.encode_tokens(torch.randn(2, 50, 6)).shape == (2, 3, 24)
