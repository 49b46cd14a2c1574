"""Backbone loading: tiny random model, offline tokenizer, from_pretrained path, configs, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoTokenizer, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from vla_sensor.models.backbone import BackboneError, _classes, load_backbone, tiny_arch
from vla_sensor.models.model_config import ModelConfig
from vla_sensor.models.tokenizer import (
    QWEN_SPECIAL_TOKEN_IDS,
    SENSOR_TOKEN,
    build_byte_tokenizer,
    qwen_special_token_ids,
    tiny_special_token_ids,
)
from vla_sensor.models.vision import ImageSettings

CONF = Path(__file__).resolve().parents[2] / "conf" / "model"


def test_tiny_backbone_ids_and_sizes() -> None:
    b = load_backbone(None)
    assert type(b.model).__name__ == "Qwen2_5_VLModel"
    assert b.hidden_size == 64 and b.config.vision_config.out_hidden_size == 64
    tok = b.tokenizer
    assert tok.convert_tokens_to_ids("<|image_pad|>") == b.config.image_token_id
    assert tok.convert_tokens_to_ids("<|vision_start|>") == b.config.vision_start_token_id
    assert tok.convert_tokens_to_ids(SENSOR_TOKEN) < b.config.text_config.vocab_size
    assert sum(p.numel() for p in b.model.parameters()) < 1_000_000


def test_byte_tokenizer_round_trips_text_and_specials(tmp_path: Path) -> None:
    tok = build_byte_tokenizer()
    text = "Insert the needle — 3 mm <|image_pad|><|im_end|>"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert ids[-2:] == [tiny_special_token_ids()["<|image_pad|>"], tiny_special_token_ids()["<|im_end|>"]]
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(text, add_special_tokens=False)["input_ids"] == ids
    for token, i in tiny_special_token_ids().items():
        assert again.convert_tokens_to_ids(token) == i


def test_byte_tokenizer_with_qwen_ids() -> None:
    tok = build_byte_tokenizer(qwen_special_token_ids())
    for token, i in QWEN_SPECIAL_TOKEN_IDS.items():
        assert tok.convert_tokens_to_ids(token) == i
    assert tok("ab", add_special_tokens=False)["input_ids"] == [97, 98]


def _save_tiny_checkpoint(path: Path, family: str = "qwen2_5_vl") -> torch.nn.Module:
    config_cls, model_cls = _classes(family)
    torch.manual_seed(0)
    model = model_cls(config_cls(**tiny_arch(family))).eval()
    model.save_pretrained(path)
    build_byte_tokenizer().save_pretrained(path)
    (path / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "min_pixels": 784, "max_pixels": 50176,
                    "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2})
    )
    return model


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen2_vl"])
def test_from_pretrained_local_dir_restores_weights(tmp_path: Path, family: str) -> None:
    saved = _save_tiny_checkpoint(tmp_path, family)
    b = load_backbone({"name_or_path": str(tmp_path), "random_init": False, "family": family,
                       "attn_implementation": "eager", "image": {}})
    assert b.family == family
    ref = dict(saved.model.named_parameters())
    for name, p in b.model.named_parameters():
        assert torch.equal(p, ref[name]), name
    assert b.image_settings.image_mean == (0.5, 0.5, 0.5) and b.image_settings.max_pixels == 50176
    assert b.model.config._attn_implementation == "eager"
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        a = saved.model(input_ids=ids).last_hidden_state
        c = b.model(input_ids=ids).last_hidden_state
    torch.testing.assert_close(a, c)


def test_from_pretrained_dtype(tmp_path: Path) -> None:
    _save_tiny_checkpoint(tmp_path)
    b = load_backbone({"name_or_path": str(tmp_path), "random_init": False, "torch_dtype": "bfloat16"})
    assert next(b.model.parameters()).dtype == torch.bfloat16


def test_bad_backbone_paths(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=r"nope.*does not exist"):
        load_backbone({"name_or_path": str(missing), "random_init": False})
    with pytest.raises(BackboneError, match=r"no config\.json"):
        load_backbone({"name_or_path": str(tmp_path), "random_init": False})
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(BackboneError, match="expected a Qwen-VL checkpoint"):
        load_backbone({"name_or_path": str(tmp_path), "random_init": False})
    with pytest.raises(BackboneError, match="family must be one of"):
        load_backbone({"family": "llava"})


def test_vision_text_hidden_mismatch_is_named() -> None:
    arch = tiny_arch()
    arch["vision_config"] = {**arch["vision_config"], "out_hidden_size": 48}
    with pytest.raises(BackboneError, match=r"outputs 48 .*out_hidden_size.*hidden size is 64"):
        load_backbone({"arch": arch})


def test_model_yamls_validate_against_schema() -> None:
    schema = OmegaConf.structured(ModelConfig)
    for name in ("tiny", "qwen2_5_vl_3b", "qwen2_5_vl_7b", "qwen2_vl_2b"):
        cfg = OmegaConf.merge(schema, OmegaConf.load(CONF / f"{name}.yaml"))
        assert cfg.name == name
    bad = OmegaConf.merge(schema, OmegaConf.load(CONF / "tiny.yaml"))
    with pytest.raises(Exception, match="late"):
        bad.fusion = "early"


def test_3b_config_has_real_dimensions_and_builds_without_download() -> None:
    cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.load(CONF / "qwen2_5_vl_3b.yaml"))
    arch = OmegaConf.to_container(cfg.backbone.arch)
    config = Qwen2_5_VLConfig(**arch)
    assert config.text_config.hidden_size == 2048 and config.text_config.num_hidden_layers == 36
    assert config.vision_config.depth == 32 and config.vision_config.hidden_size == 1280
    with torch.device("meta"):  # real size, no memory: the parameter count of Qwen2.5-VL-3B
        model = Qwen2_5_VLForConditionalGeneration._from_config(config)
    n = sum(p.numel() for p in model.parameters())
    assert 3.7e9 < n < 3.8e9
    # and the random-init path builds the matching offline tokenizer with Qwen's real ids
    from vla_sensor.models.backbone import offline_tokenizer_for

    tok = offline_tokenizer_for(config)
    assert tok.convert_tokens_to_ids("<|image_pad|>") == 151655


def test_image_settings_round_trip() -> None:
    s = ImageSettings(min_pixels=784)
    assert ImageSettings.from_dict(s.to_dict()) == s
