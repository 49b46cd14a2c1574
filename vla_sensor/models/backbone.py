"""Qwen-VL backbone loading: pretrained checkpoints, or a given architecture with random weights.

The fused model keeps only the inner ``Qwen2_5_VLModel`` / ``Qwen2VLModel`` (vision tower + language
model, no LM head): the policy reads hidden states, and dropping an untied LM head saves ~0.5 B
parameters on the 7B model.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vla_sensor.models.tokenizer import (
    IMAGE_TOKEN,
    QWEN_SPECIAL_TOKEN_IDS,
    VIDEO_TOKEN,
    VISION_END_TOKEN,
    VISION_START_TOKEN,
    build_byte_tokenizer,
    check_token_ids,
)
from vla_sensor.models.vision import ImageSettings

log = logging.getLogger(__name__)

FAMILIES = ("qwen2_5_vl", "qwen2_vl")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class BackboneError(ValueError):
    """A backbone that cannot be loaded or does not fit the policy."""


@dataclass
class LoadedBackbone:
    model: nn.Module  # Qwen2_5_VLModel or Qwen2VLModel
    tokenizer: Any
    image_settings: ImageSettings
    family: str
    config: Any  # the composite Qwen-VL config

    @property
    def hidden_size(self) -> int:
        return int(self.config.text_config.hidden_size)


def tiny_arch(family: str = "qwen2_5_vl") -> dict[str, Any]:
    """A Qwen-VL small enough for CPU tests: text hidden 64, 2 layers, vision depth 2.

    Token ids follow the offline byte tokenizer (Qwen's special tokens shifted to 256+).
    mrope_section sums to head_dim / 2 = 8.
    """
    text = dict(
        vocab_size=288,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        bos_token_id=256,
        eos_token_id=258,
        pad_token_id=256,
        tie_word_embeddings=True,
        use_cache=False,
    )
    if family == "qwen2_vl":
        vision = dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2)
    else:
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                      window_size=56, fullatt_block_indexes=[1], tokens_per_second=2, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2)
    return dict(text_config=text, vision_config=vision, image_token_id=268, video_token_id=269,
                vision_start_token_id=265, vision_end_token_id=266, tie_word_embeddings=True)


def _classes(family: str) -> tuple[type, type]:
    if family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

        return Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    if family == "qwen2_vl":
        from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

        return Qwen2VLConfig, Qwen2VLForConditionalGeneration
    raise BackboneError(f"backbone family must be one of {list(FAMILIES)}, got {family!r}")


def to_plain(value: Any) -> Any:
    """Dataclass / OmegaConf / Enum -> plain Python containers."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, DictConfig | ListConfig):
            value = OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    return value


def normalize_spec(spec: Any) -> dict[str, Any]:
    """A backbone spec (BackboneConfig, DictConfig, dict, path string or None) as a plain dict."""
    if spec is None:
        spec = {}
    elif isinstance(spec, str | os.PathLike):
        spec = {"name_or_path": str(spec), "random_init": False}
    from omegaconf import OmegaConf

    from vla_sensor.models.model_config import BackboneConfig

    defaults = OmegaConf.to_container(OmegaConf.structured(BackboneConfig), enum_to_str=True)
    out = {**defaults, **{k: v for k, v in dict(to_plain(spec)).items() if v is not None}}
    if out["random_init"] is None:
        out["random_init"] = not out.get("name_or_path")
    if out["family"] not in FAMILIES:
        raise BackboneError(f"model.backbone.family must be one of {list(FAMILIES)}, got {out['family']!r}")
    if out["torch_dtype"] not in (*_DTYPES, "auto"):
        raise BackboneError(f"model.backbone.torch_dtype must be one of {[*_DTYPES, 'auto']}, got {out['torch_dtype']!r}")
    return out


def special_ids_from_config(config: Any) -> dict[str, int]:
    """The vision token ids the backbone was built/trained with."""
    return {
        VISION_START_TOKEN: int(config.vision_start_token_id),
        VISION_END_TOKEN: int(config.vision_end_token_id),
        IMAGE_TOKEN: int(config.image_token_id),
        VIDEO_TOKEN: int(config.video_token_id),
    }


def offline_tokenizer_for(config: Any) -> Any:
    """Byte-level tokenizer whose special ids line up with ``config`` (tiny or Qwen's real ids)."""
    first = QWEN_SPECIAL_TOKEN_IDS["<|endoftext|>"]
    offset = int(config.image_token_id) - (QWEN_SPECIAL_TOKEN_IDS[IMAGE_TOKEN] - first)
    from vla_sensor.models.tokenizer import QWEN_SENSOR_TOKEN_ID, SENSOR_TOKEN

    ids = {t: offset + i - first for t, i in QWEN_SPECIAL_TOKEN_IDS.items()}
    ids[SENSOR_TOKEN] = offset + QWEN_SENSOR_TOKEN_ID - first
    vocab = int(config.text_config.vocab_size)
    if max(ids.values()) >= vocab or offset < 256:
        raise BackboneError(
            f"cannot build an offline tokenizer for this config: image_token_id={config.image_token_id} "
            f"and vocab_size={vocab} leave no room for 256 byte tokens plus Qwen's special tokens"
        )
    tok = build_byte_tokenizer(ids)
    check_token_ids(tok, special_ids_from_config(config), "the random-init backbone")
    return tok


def _check_hidden_sizes(config: Any, family: str, where: str) -> None:
    text_hidden = int(config.text_config.hidden_size)
    vc = config.vision_config
    vis_out = int(vc.out_hidden_size if family == "qwen2_5_vl" else vc.hidden_size)
    if vis_out != text_hidden:
        key = "vision_config.out_hidden_size" if family == "qwen2_5_vl" else "vision_config.hidden_size"
        raise BackboneError(
            f"{where}: the vision tower outputs {vis_out} features ({key}) but the language model's hidden "
            f"size is {text_hidden}; they must match"
        )


def _image_settings(config: Any, processor_cfg: Mapping[str, Any] | None, image: Mapping[str, Any]) -> ImageSettings:
    vc = config.vision_config
    base = {
        "patch_size": int(vc.patch_size),
        "temporal_patch_size": int(vc.temporal_patch_size),
        "merge_size": int(vc.spatial_merge_size),
    }
    settings = ImageSettings.from_processor_config({**base, **(processor_cfg or {})})
    if image.get("min_pixels"):
        settings.min_pixels = int(image["min_pixels"])
    if image.get("max_pixels"):
        settings.max_pixels = int(image["max_pixels"])
    if (settings.patch_size, settings.temporal_patch_size, settings.merge_size) != tuple(base.values()):
        raise BackboneError(
            f"image processor patch settings {settings.to_dict()} disagree with the vision config {base}"
        )
    return settings


def _resolve_dtype(name: str) -> torch.dtype | str:
    return "auto" if name == "auto" else _DTYPES[name]


def _is_local_like(name: str) -> bool:
    """A path rather than a hub id ("org/name" has exactly one slash)."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name or os.path.exists(name)


def _read_pretrained_config(name: str) -> Any:
    from transformers import AutoConfig

    path = os.path.expanduser(name)
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise BackboneError(f"backbone directory {path!r} has no config.json: expected a Qwen-VL checkpoint")
    elif _is_local_like(name):
        raise FileNotFoundError(f"backbone path {name!r} does not exist (expected a Qwen-VL checkpoint directory)")
    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise BackboneError(
            f"could not read the config of backbone {name!r} (a local Qwen-VL checkpoint directory or a hub id "
            f"already in the local cache was expected): {exc}"
        ) from exc


def _processor_config(name: str) -> dict[str, Any] | None:
    path = os.path.expanduser(name)
    file = os.path.join(path, "preprocessor_config.json")
    if not os.path.isdir(path):
        try:
            from transformers.utils import cached_file

            file = cached_file(name, "preprocessor_config.json", _raise_exceptions_for_missing_entries=False)
        except OSError:
            file = None
    if file and os.path.isfile(file):
        return json.loads(Path(file).read_text())
    return None


def load_backbone(spec: Any = None) -> LoadedBackbone:
    """Build or load the backbone described by ``spec`` (see :class:`BackboneConfig`).

    Extra keys used when restoring a saved policy: ``config_dict`` (the full Qwen config) and
    ``tokenizer_dir``; then the architecture is rebuilt (random weights, overwritten by the caller).
    """
    s = normalize_spec(spec)
    family = s["family"]
    dtype = _resolve_dtype(s["torch_dtype"])
    attn = s["attn_implementation"]
    name = s.get("name_or_path")
    processor_cfg: dict[str, Any] | None = s.get("image_settings")

    if s.get("config_dict") is not None or s["random_init"]:
        config_cls, model_cls = _classes(family)
        if s.get("config_dict") is not None:
            config = config_cls.from_dict(dict(s["config_dict"]))
            where = "the saved policy"
        elif s["arch"]:
            config = config_cls(**s["arch"])
            where = "model.backbone.arch"
        elif name:
            config = _read_pretrained_config(name)
            where = name
        else:
            config = config_cls(**tiny_arch(family))
            where = "the tiny backbone"
        if config.model_type != family:
            raise BackboneError(f"{where} is a {config.model_type!r} config, expected family {family!r}")
        _check_hidden_sizes(config, family, where)
        config.text_config.use_cache = False
        model = model_cls._from_config(config, dtype=torch.float32 if dtype == "auto" else dtype,
                                       attn_implementation=attn)
        if s.get("tokenizer_dir"):
            tokenizer = _load_tokenizer(s["tokenizer_dir"])
        elif name and os.path.isdir(os.path.expanduser(name)):
            tokenizer = _load_tokenizer(os.path.expanduser(name))
        else:
            tokenizer = offline_tokenizer_for(config)
        if processor_cfg is None and name and not s.get("config_dict"):
            processor_cfg = _processor_config(name)
    else:
        if not name:
            raise BackboneError("model.backbone.name_or_path is required when random_init=false")
        config = _read_pretrained_config(name)
        if config.model_type not in FAMILIES:
            raise BackboneError(
                f"backbone {name!r} is a {config.model_type!r} model; expected a Qwen-VL checkpoint "
                f"(model_type one of {list(FAMILIES)})"
            )
        if config.model_type != family:
            log.warning("backbone %s is %s; using that instead of family=%s", name, config.model_type, family)
            family = config.model_type
        _check_hidden_sizes(config, family, name)
        _, model_cls = _classes(family)
        path = os.path.expanduser(name) if os.path.isdir(os.path.expanduser(name)) else name
        model = model_cls.from_pretrained(path, dtype=dtype, attn_implementation=attn)
        config = model.config
        config.text_config.use_cache = False
        tokenizer = _load_tokenizer(path)
        processor_cfg = _processor_config(name)
        where = name

    check_token_ids(tokenizer, special_ids_from_config(config), where)
    settings = _image_settings(config, processor_cfg, s["image"])
    inner = model.model
    inner.config.use_cache = False
    return LoadedBackbone(model=inner, tokenizer=tokenizer, image_settings=settings, family=family, config=config)


def _load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise BackboneError(f"could not load the tokenizer of backbone {path!r}: {exc}") from exc
