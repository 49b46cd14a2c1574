"""QwenVLAWithSensor: a Qwen-VL backbone fused with the force + OCT sensor encoder.

Fusion modes:
- ``late`` (default): the pooled VL feature and the pooled sensor feature, each layer-normed, are
  concatenated and fed to the action head. In stage 1 (frozen backbone) the backbone runs without
  autograd, so it costs one inference pass; :meth:`QwenVLAWithSensor.backbone_features` is that pass
  alone and :meth:`QwenVLAWithSensor.fuse` the trainable rest, so a batch may carry the stored features
  (``vl_features``, the stage-1 feature cache) instead of images.
- ``tokens``: the encoder's sensor tokens are projected to the backbone's hidden size and replace
  ``<|sensor_pad|>`` placeholders in the prompt. ``input_ids`` still go in next to ``inputs_embeds``
  so that the image placeholders and Qwen's 3-D M-RoPE positions are computed as usual; the sensor
  placeholders count as text (``mm_token_type_ids`` 0), i.e. ordinary 1-D positions.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vla_sensor.data.config import DataConfig
from vla_sensor.data.format import DEFAULT_INSTRUCTION
from vla_sensor.data.sensor_decode import decode_sensor_batch
from vla_sensor.data.windows import SENSOR_CHANNELS
from vla_sensor.models.action_head import ActionHead, ActionNormalizer, masked_action_loss, stats_to_dict
from vla_sensor.models.backbone import LoadedBackbone, load_backbone, to_plain
from vla_sensor.models.encoder_config import EncoderConfig
from vla_sensor.models.model_config import ModelConfig
from vla_sensor.models.readout import AttentionReadout, FlattenReadout, image_tokens_per_sample, token_layout
from vla_sensor.models.stages import apply_lora, configure_stage
from vla_sensor.models.state import StateProjector, state_stats_of
from vla_sensor.models.tokenizer import SENSOR_TOKEN, ensure_sensor_token
from vla_sensor.models.vision import PromptSpec, QwenSampleTransform, collate_model_inputs, smart_resize

FORMAT_VERSION = 1
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "vla_config.json"
STATS_NAME = "action_stats.json"
TOKENIZER_DIR = "tokenizer"
# Batch keys of the readout's inputs when they come from the feature cache instead of the backbone.
FEATURES_KEY = "vl_features"
TOKENS_KEY = "vl_tokens"
LAYOUT_KEY = "vl_token_layout"
_NO_SENSOR_T = 4  # rows of zeros standing in for a missing sensor_data (enough for cubic resampling)


class QwenVLAWithSensor(nn.Module):
    """Vision-language-action policy; see the module docstring for the fusion modes."""

    def __init__(
        self,
        sensor_enabled: bool | None = None,
        sensor_hidden_dim: int | None = None,
        sensor_output_dim: int | None = None,
        *,
        backbone: Any = None,
        config: ModelConfig | Mapping[str, Any] | None = None,
        encoder: EncoderConfig | Mapping[str, Any] | None = None,
        action_dim: int = 7,
        horizon: int = DataConfig.horizon,
        sensor_channels: int = SENSOR_CHANNELS,
        action_stats: Any = None,
        view_selection: Sequence[str] | None = None,
        image_size: Sequence[int] | int | None = None,
        state_dim: int = 0,
    ) -> None:
        """``config``: the ``model`` settings (fusion, pooling, loss, head, sensor sizes; unset: the
        schema's defaults, 512/3072 sensor sizes); the three sensor arguments may be given directly
        instead, as in the original API. ``encoder``: the sensor encoder's own settings. The sizes that
        follow the data (``action_dim``, ``horizon``, ``sensor_channels``, views, image size) are the
        dataset's, as is ``state_dim`` (0: no proprioceptive state; > 0: ``batch["state"]`` (B, state_dim)
        is normalised with the ``state`` statistics of ``set_action_stats`` and projected into the
        fusion). ``backbone``: a :class:`BackboneConfig`-like spec, a path, or None (the tiny one)."""
        super().__init__()
        m = model_settings(config, sensor_enabled=sensor_enabled, sensor_hidden_dim=sensor_hidden_dim,
                           sensor_output_dim=sensor_output_dim)
        enc = encoder_settings(encoder)
        self.init_kwargs: dict[str, Any] = to_plain(dict(
            config=m, encoder=enc, action_dim=int(action_dim), horizon=int(horizon),
            sensor_channels=int(sensor_channels), view_selection=list(view_selection) if view_selection else None,
            image_size=image_size, state_dim=int(state_dim),
        ))
        self.sensor_enabled, self.fusion = bool(m["sensor_enabled"]), m["fusion"]
        self.loss_type, self.pooling = m["loss"], m["pooling"]
        self.huber_delta = float(m["huber_delta"])
        self.action_dim, self.horizon = int(action_dim), int(horizon)
        self.loss_weights = self._loss_weights(m["loss_weights"])
        self.view_selection = list(view_selection) if view_selection else None
        self.image_size = image_size
        self.stage: int | None = None
        self.lora_settings: dict[str, Any] | None = None
        self._init_backbone(backbone)
        self.readout: AttentionReadout | FlattenReadout | None = None
        vl_dim = self.hidden_size
        if self.pooling == "attention":
            self.readout = AttentionReadout(self.hidden_size, int(m["readout_queries"]), int(m["readout_heads"]))
            vl_dim = self.readout.out_dim
        elif self.pooling == "flatten":
            self.readout = FlattenReadout(self.hidden_size, self._image_tokens(), int(m["readout_dim"]))
            vl_dim = self.readout.out_dim
        head_in = self._init_sensor_path(m, enc, int(sensor_channels)) - self.hidden_size + vl_dim
        self.state_dim = int(state_dim)
        self.state_projector: StateProjector | None = None
        if self.state_dim > 0:
            self.state_projector = StateProjector(self.state_dim, int(m["state_hidden_dim"]))
            head_in += self.state_projector.out_dim
        self.vl_norm = nn.LayerNorm(vl_dim)
        self.head = ActionHead(head_in, action_dim, horizon, m["head_hidden_dim"], m["head_num_layers"],
                               m["head_dropout"])
        self.normalizer = ActionNormalizer(action_dim)
        if action_stats is not None:
            self.set_action_stats(action_stats)
        self._transform: QwenSampleTransform | None = None

    def _loss_weights(self, weights: Sequence[float]) -> Tensor | None:
        if not weights:
            return None
        w = torch.tensor([float(x) for x in weights])
        if w.shape != (self.action_dim,) or not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"model.loss_weights={list(weights)}: expected {self.action_dim} finite weights >= 0 "
                             f"(one per action dimension) with a positive sum")
        return w

    def _init_backbone(self, backbone: Any) -> None:
        loaded = backbone if isinstance(backbone, LoadedBackbone) else load_backbone(backbone)
        self.backbone = loaded.model
        self.backbone_family = loaded.family
        self.backbone_config = loaded.config
        self.tokenizer = loaded.tokenizer
        self.image_settings = loaded.image_settings
        self._backbone_spec = to_plain(backbone) if not isinstance(backbone, LoadedBackbone | str | os.PathLike) else (
            {"name_or_path": str(backbone)} if isinstance(backbone, str | os.PathLike) else {}
        )
        self.hidden_size = loaded.hidden_size
        self.image_token_id = int(loaded.config.image_token_id)
        self.sensor_token_id: int | None = None

    def _image_tokens(self) -> int:
        """Image tokens per sample for the views and image size the model is built for (``flatten``)."""
        if not self.view_selection or self.image_size is None:
            raise ValueError("model.pooling=flatten reads a fixed token grid: the model needs its views and "
                             "image size (data.view_selection, data.image_size) when it is built")
        size = (self.image_size, self.image_size) if isinstance(self.image_size, int) else tuple(self.image_size)
        resized = smart_resize(int(size[0]), int(size[1]), self.image_settings)
        return image_tokens_per_sample(len(self.view_selection), resized, self.image_settings.factor)

    def _init_sensor_path(self, m: Mapping[str, Any], enc: Mapping[str, Any], channels: int) -> int:
        """The sensor encoder and its fusion layers; returns the action head's input width."""
        self.sensor_encoder: nn.Module | None = None
        self.sensor_norm: nn.Module | None = None
        self.sensor_token_proj: nn.Module | None = None
        if not self.sensor_enabled:
            return self.hidden_size
        from vla_sensor.models.sensor_encoder import SensorEncoder

        out_dim = int(m["sensor_output_dim"])
        self.sensor_encoder = SensorEncoder(input_channels=channels, hidden_dim=int(m["sensor_hidden_dim"]),
                                            output_dim=out_dim, num_tokens=int(m["num_sensor_tokens"]), **enc)
        if self.fusion == "late":
            self.sensor_norm = nn.LayerNorm(out_dim)
            return self.hidden_size + out_dim
        self.sensor_token_proj = nn.Sequential(nn.LayerNorm(out_dim), nn.Linear(out_dim, self.hidden_size))
        self.sensor_token_id = ensure_sensor_token(self.tokenizer, int(self.backbone_config.text_config.vocab_size))
        return self.hidden_size

    # ------------------------------------------------------------------ properties / helpers
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def policy_modules(self) -> list[nn.Module]:
        """Modules trained in every stage: sensor encoder, fusion layers, action head."""
        mods = [self.readout, self.sensor_encoder, self.sensor_norm, self.sensor_token_proj, self.state_projector,
                self.vl_norm, self.head]
        return [m for m in mods if m is not None]

    def set_action_stats(self, stats: Any) -> None:
        """Training-split statistics (mapping of name -> floats, or an object with ``to_dict()``); with a
        state, their ``state`` statistics normalise ``batch["state"]``."""
        self.normalizer.set_stats(stats)
        if self.state_projector is not None:
            state = state_stats_of(stats)
            if state is None:
                raise ValueError(f"the model reads a {self.state_dim}-dim state: the action statistics need "
                                 "'state' statistics (the training split's)")
            self.state_projector.set_stats(state)

    def action_stats(self) -> dict[str, Any]:
        out = self.normalizer.to_dict()
        if self.state_projector is not None:
            out["state"] = self.state_projector.normalizer.to_dict()
        return out

    def configure_stage(self, stage: int = 1, **kwargs: Any) -> dict[str, int]:
        """See :func:`vla_sensor.models.stages.configure_stage`."""
        return configure_stage(self, stage, **kwargs)

    def set_gradient_checkpointing(self, sensor: bool = False, backbone: bool = False) -> None:
        """Recompute activations in backward (the trainer's ``checkpointing`` none/sensor/all)."""
        if self.sensor_encoder is not None:
            self.sensor_encoder.gradient_checkpointing = bool(sensor)
        bb = self.backbone
        # transformers >= 5 names it activation checkpointing; older releases gradient checkpointing.
        enable = getattr(bb, "activation_checkpointing_enable", None)
        if backbone:
            if enable is not None:
                enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:  # pragma: no cover - transformers < 5
                bb.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        elif self.backbone_checkpointing:
            (getattr(bb, "activation_checkpointing_disable", None) or bb.gradient_checkpointing_disable)()

    @property
    def backbone_checkpointing(self) -> bool:
        """Whether the backbone recomputes activations in backward."""
        return any(getattr(m, "gradient_checkpointing", False) for m in self.backbone.modules())

    def prompt_spec(self) -> PromptSpec:
        # The tokenizer's vision ids were checked against this config when the backbone loaded.
        cfg = self.backbone_config
        tokens = self.sensor_enabled and self.fusion == "tokens"
        return PromptSpec(
            vision_start_id=int(cfg.vision_start_token_id),
            vision_end_id=int(cfg.vision_end_token_id),
            image_token_id=self.image_token_id,
            sensor_token_id=self.sensor_token_id if tokens else None,
            num_sensor_tokens=self.init_kwargs["config"]["num_sensor_tokens"] if tokens else 0,
            default_instruction=DEFAULT_INSTRUCTION,
        )

    def build_sample_transform(
        self,
        view_selection: Sequence[str] | None = None,
        image_size: Sequence[int] | int | None = None,
        keep_images: bool = False,
    ) -> QwenSampleTransform:
        """Picklable per-sample pre-processing for DataLoader workers (images -> pixel patches, prompt ids)."""
        views = list(view_selection) if view_selection is not None else self.view_selection
        if view_selection is not None:
            self.view_selection = views
        return QwenSampleTransform(
            self.tokenizer, self.image_settings, self.prompt_spec(), views, image_size or self.image_size, keep_images
        )

    # ------------------------------------------------------------------ forward
    def _model_inputs(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """The backbone inputs of a batch; raw ``images`` are pre-processed here when needed."""
        if "pixel_values" in batch and "input_ids" in batch:
            inputs = {k: batch[k] for k in ("pixel_values", "image_grid_thw", "input_ids", "attention_mask")}
        elif "images" in batch:
            if self._transform is None:
                self._transform = self.build_sample_transform()
            images = batch["images"]
            if images.dim() != 5:
                raise ValueError(f"batch 'images' must be uint8 (B, V, 3, H, W), got shape {tuple(images.shape)}")
            instr = batch.get("instruction") or [DEFAULT_INSTRUCTION] * images.shape[0]
            samples = [self._transform({"images": images[b].cpu(), "instruction": instr[b]}) for b in range(len(images))]
            inputs = collate_model_inputs(samples)
        else:
            raise KeyError(
                f"batch needs 'pixel_values'/'image_grid_thw'/'input_ids'/'attention_mask' (from the model's "
                f"sample_transform) or raw 'images'; got keys {sorted(batch)}"
            )
        dev = self.device
        out = {k: v.to(dev, non_blocking=True) for k, v in inputs.items()}
        b = out["input_ids"].shape[0]
        if self.view_selection is not None and out["image_grid_thw"].shape[0] != b * len(self.view_selection):
            raise ValueError(
                f"batch has {out['image_grid_thw'].shape[0]} images for {b} samples; the model expects "
                f"{len(self.view_selection)} views per sample: view_selection={self.view_selection}"
            )
        return out

    def _sensor_inputs(self, batch: Mapping[str, Any], batch_size: int) -> tuple[Tensor, Tensor | None, Tensor]:
        dev = self.device
        c = self.sensor_encoder.input_channels
        if batch.get("sensor_data") is None:
            zeros = torch.zeros(batch_size, _NO_SENSOR_T, c, device=dev)
            none = torch.zeros(batch_size, dtype=torch.bool, device=dev)
            return zeros, torch.zeros(batch_size, dtype=torch.long, device=dev), none
        data = decode_sensor_batch(batch, dev)["sensor_data"]  # stored float16/int8 -> float32 here
        lengths = batch.get("sensor_lengths")
        lengths = lengths.to(dev, non_blocking=True) if lengths is not None else None
        has = batch.get("has_sensor_mask")
        if has is None:
            has = lengths > 0 if lengths is not None else torch.ones(batch_size, dtype=torch.bool, device=dev)
        return data.float(), lengths, has.to(dev, non_blocking=True).bool()

    def _backbone_needs_grad(self) -> bool:
        if not torch.is_grad_enabled():
            return False
        if self.sensor_enabled and self.fusion == "tokens":
            return True
        return any(p.requires_grad for p in self.backbone.parameters())

    def features_cacheable(self) -> str | None:
        """None when :meth:`backbone_features` depends on nothing but the images and the prompt (so it can
        be computed once and reused); else the reason it cannot."""
        if any(p.requires_grad for p in self.backbone.parameters()):
            return "the backbone trains (stage 2, LoRA or full): its features change at every step"
        if self.sensor_enabled and self.fusion == "tokens":
            return "model.fusion=tokens: the sensor tokens enter the backbone, so its output depends on the sensor"
        dropout = float(getattr(self.backbone_config.text_config, "attention_dropout", 0.0) or 0.0)
        if dropout > 0:
            return f"the backbone's attention_dropout={dropout}: its training-mode features are random"
        return None

    def backbone_features(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """The frozen backbone's part of late fusion, in the backbone's dtype: what the readout reads.
        ``pooling=last|mean``: ``{"vl_features": (B, hidden)}``, the pooled feature before ``vl_norm``;
        ``pooling=attention``: ``{"vl_tokens": (B, L, hidden), "vl_token_layout": (B, L, 3)}``, every
        token's final hidden state and its (view, row, col); ``pooling=flatten``: the same for the image
        tokens only, (B, N image tokens, ...). The feature cache stores exactly this."""
        inputs = self._model_inputs(batch)
        with contextlib.nullcontext() if self._backbone_needs_grad() else torch.no_grad():
            return self._readout_inputs(self._run_backbone(inputs, None), inputs)

    def _readout_inputs(self, hidden: Tensor, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        if self.readout is None:
            return {FEATURES_KEY: self._pooled(hidden, ids, mask)}
        merge = int(getattr(self.backbone_config.vision_config, "spatial_merge_size", 2))
        layout = token_layout(ids, mask, self.image_token_id, inputs["image_grid_thw"], merge)
        if isinstance(self.readout, FlattenReadout):
            hidden, layout = self.readout.select(hidden, layout)
        return {TOKENS_KEY: hidden, LAYOUT_KEY: layout}

    def _read(self, features: Mapping[str, Tensor]) -> Tensor:
        """The VL vector the head gets (before ``vl_norm``) from :meth:`backbone_features`' output."""
        dev = self.device
        if self.readout is None:
            return features[FEATURES_KEY].to(dev, non_blocking=True).float()
        return self.readout(features[TOKENS_KEY].to(dev, non_blocking=True),
                            features[LAYOUT_KEY].to(dev, non_blocking=True).long())

    def _run_backbone(self, inputs: Mapping[str, Tensor], embeds: Tensor | None) -> Tensor:
        ids = inputs["input_ids"]
        out = self.backbone(
            input_ids=ids,
            inputs_embeds=embeds,
            attention_mask=inputs["attention_mask"],
            pixel_values=inputs["pixel_values"],
            image_grid_thw=inputs["image_grid_thw"],
            mm_token_type_ids=(ids == self.image_token_id).int(),
            use_cache=False,
        )
        return out.last_hidden_state

    def _pooled(self, hidden: Tensor, ids: Tensor, mask: Tensor) -> Tensor:
        if self.pooling == "last":
            pos = torch.arange(ids.shape[1], device=ids.device)
            last = (mask.bool() * pos).argmax(dim=1)  # last non-pad token, whatever the padding side
            return hidden[torch.arange(ids.shape[0], device=ids.device), last]
        m = mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)

    def fuse(self, features: Mapping[str, Tensor], batch: Mapping[str, Any]) -> Tensor:
        """The trainable late fusion: the readout of :meth:`backbone_features`' output, ``vl_norm``,
        then the sensor feature when on, then the projected state when the model has one."""
        feature = self.vl_norm(self._read(features))
        parts = [feature]
        if self.sensor_enabled:
            data, lengths, has = self._sensor_inputs(batch, feature.shape[0])
            parts.append(self.sensor_norm(self.sensor_encoder(data, lengths, has).float()))
        return self._with_state(parts, batch)

    def _with_state(self, parts: list[Tensor], batch: Mapping[str, Any]) -> Tensor:
        if self.state_projector is not None:
            parts.append(self.state_projector(batch, self.device))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)

    def encode(self, batch: Mapping[str, Any]) -> Tensor:
        """The fused feature fed to the action head, (B, head_in).

        A batch carrying the readout's inputs (``vl_features``, or ``vl_tokens`` and ``vl_token_layout``)
        — the feature cache's stored :meth:`backbone_features` — skips the backbone; otherwise it runs
        on the batch's images.
        """
        if self.sensor_enabled and self.fusion == "tokens":
            return self._encode_tokens(batch)
        keys = (FEATURES_KEY,) if self.readout is None else (TOKENS_KEY, LAYOUT_KEY)
        if all(batch.get(k) is not None for k in keys):
            return self.fuse({k: batch[k] for k in keys}, batch)
        return self.fuse(self.backbone_features(batch), batch)

    def _encode_tokens(self, batch: Mapping[str, Any]) -> Tensor:
        """Token fusion: the sensor tokens replace placeholders in the prompt; the backbone always runs."""
        inputs = self._model_inputs(batch)
        ids = inputs["input_ids"]
        data, lengths, has = self._sensor_inputs(batch, ids.shape[0])
        embeds = self._inject_sensor_tokens(ids, self.sensor_encoder.encode_tokens(data, lengths, has))
        with contextlib.nullcontext() if self._backbone_needs_grad() else torch.no_grad():
            hidden = self._run_backbone(inputs, embeds)
        return self._with_state([self.vl_norm(self._read(self._readout_inputs(hidden, inputs)))], batch)

    def _inject_sensor_tokens(self, ids: Tensor, tokens: Tensor) -> Tensor:
        embed = self.backbone.get_input_embeddings()
        slots = ids == self.sensor_token_id
        counts = slots.sum(1)
        n = tokens.shape[1]
        if bool((counts != n).any()):
            raise ValueError(
                f"token fusion needs {n} {SENSOR_TOKEN} placeholders per prompt, found {counts.tolist()}; "
                f"build inputs with model.build_sample_transform()"
            )
        base = embed(ids)
        proj = self.sensor_token_proj(tokens).to(base.dtype)
        return base.masked_scatter(slots.unsqueeze(-1), proj)

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """``loss`` (masked by ``action_is_pad``, normalised units; only with ``actions`` in the batch),
        ``pred_actions`` (B, horizon, A) normalised, ``l1``/``mse`` (detached) and ``target_actions``."""
        pred = self.head(self.encode(batch))
        out: dict[str, Tensor] = {"pred_actions": pred}
        if batch.get("actions") is not None:
            target = self.normalizer.normalize(batch["actions"].to(pred.device, torch.float32))
            is_pad = batch.get("action_is_pad")
            is_pad = is_pad.to(pred.device) if is_pad is not None else None
            weights = self.loss_weights.to(pred.device) if self.loss_weights is not None else None
            out.update(masked_action_loss(pred, target, is_pad, self.loss_type, weights, self.huber_delta))
            out["target_actions"] = target
        return out

    @torch.no_grad()
    def predict_action(self, batch: Mapping[str, Any]) -> Tensor:
        """(B, horizon, A) actions in robot units."""
        return self.normalizer.denormalize(self.head(self.encode(batch)))

    # ------------------------------------------------------------------ save / load
    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write weights, config (incl. backbone config and tokenizer) and stats atomically."""
        from safetensors.torch import save_model

        target = Path(directory)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            save_model(self, str(tmp / WEIGHTS_NAME))
            self.tokenizer.save_pretrained(str(tmp / TOKENIZER_DIR))
            config = {
                "format_version": FORMAT_VERSION,
                "class": type(self).__name__,
                "init": self.init_kwargs,
                "backbone": {
                    "family": self.backbone_family,
                    "torch_dtype": _dtype_name(next(self.backbone.parameters()).dtype),
                    "attn_implementation": self.backbone.config._attn_implementation or "sdpa",
                    "config_dict": self.backbone_config.to_dict(),
                    "image_settings": self.image_settings.to_dict(),
                    "source": self._backbone_spec,
                },
                "lora": self.lora_settings,
                "stage": self.stage,
            }
            (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, default=str))
            (tmp / STATS_NAME).write_text(json.dumps(self.action_stats(), indent=2))
            old = None
            if target.exists():
                old = target.with_name(f".{target.name}.old-{os.getpid()}")
                os.replace(target, old)
            os.replace(tmp, target)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike, *, device: str | torch.device | None = None, **backbone_overrides: Any
    ) -> QwenVLAWithSensor:
        """Rebuild a policy written by :meth:`save_pretrained` (same predictions).

        ``backbone_overrides`` (e.g. ``attn_implementation="flash_attention_2"``, ``torch_dtype``)
        change how the backbone is built, not its weights.
        """
        from safetensors.torch import load_model

        path = Path(directory)
        cfg_file = path / CONFIG_NAME
        if not cfg_file.is_file() or not (path / WEIGHTS_NAME).is_file():
            raise FileNotFoundError(
                f"{str(path)!r} is not a saved QwenVLAWithSensor: expected {CONFIG_NAME} and {WEIGHTS_NAME}"
            )
        config = json.loads(cfg_file.read_text())
        if config.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{cfg_file}: unsupported format_version {config.get('format_version')}")
        bb = config["backbone"]
        spec = {
            "family": bb["family"],
            "random_init": True,
            "config_dict": bb["config_dict"],
            "tokenizer_dir": str(path / TOKENIZER_DIR),
            "image_settings": bb["image_settings"],
            "torch_dtype": bb["torch_dtype"],
            "attn_implementation": bb["attn_implementation"],
            **backbone_overrides,
        }
        init = dict(config["init"])
        model = cls(backbone=spec, **init)
        model._backbone_spec = bb.get("source") or {}
        if config.get("lora"):
            lo = config["lora"]
            apply_lora(model, lo)
        if device is not None:
            model.to(device)
        load_model(model, str(path / WEIGHTS_NAME), strict=True, device=str(model.device))
        stats_file = path / STATS_NAME
        if stats_file.is_file():
            stats = json.loads(stats_file.read_text())
            model.normalizer.extra = {k: v for k, v in stats.items() if k not in ("mean", "std", "state")}
        model.stage = config.get("stage")
        return model


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}.get(dtype, "float32")


MODEL_FIELDS = ("sensor_enabled", "sensor_hidden_dim", "sensor_output_dim", "fusion", "num_sensor_tokens",
                "pooling", "readout_queries", "readout_heads", "readout_dim", "loss", "huber_delta", "loss_weights",
                "state_hidden_dim", "head_hidden_dim", "head_num_layers", "head_dropout")


def model_settings(config: Any = None, **direct: Any) -> dict[str, Any]:
    """The model fields the network is built from: the schema's defaults, then ``config``, then the
    arguments given directly (None: not given). Giving a field both ways with different values is an
    error, never a silent override."""
    from omegaconf import OmegaConf

    given = to_plain(config) if config is not None else {}
    merged = OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(ModelConfig),
                                                    {k: v for k, v in given.items() if k in MODEL_FIELDS}),
                                    enum_to_str=True)
    out = {k: merged[k] for k in MODEL_FIELDS}
    for key, value in direct.items():
        if value is None:
            continue
        if key in given and given[key] != value:
            raise ValueError(f"{key}={value!r} given directly and {key}={given[key]!r} in config; give it once")
        out[key] = value
    return out


def encoder_settings(encoder: Any = None) -> dict[str, Any]:
    """The sensor encoder's own settings: the ``encoder`` schema's defaults, then ``encoder``."""
    from omegaconf import OmegaConf

    merged = OmegaConf.merge(OmegaConf.structured(EncoderConfig), to_plain(encoder) if encoder is not None else {})
    return OmegaConf.to_container(merged, enum_to_str=True)  # type: ignore[return-value]


def build_model(
    model_cfg: Any,
    encoder_cfg: Any = None,
    *,
    action_dim: int,
    horizon: int,
    sensor_channels: int = SENSOR_CHANNELS,
    view_selection: Sequence[str] | None = None,
    image_size: Sequence[int] | int | None = None,
    action_stats: Any = None,
    state_dim: int = 0,
) -> QwenVLAWithSensor:
    """The policy of the ``model`` and ``encoder`` config groups, sized for the data (used by train.py)."""
    m = to_plain(model_cfg)
    return QwenVLAWithSensor(backbone=m.get("backbone"), config=m, encoder=encoder_cfg, action_dim=action_dim,
                             horizon=horizon, sensor_channels=sensor_channels, action_stats=action_stats,
                             view_selection=view_selection, image_size=image_size, state_dim=state_dim)


def stage_kwargs(model_cfg: Any) -> dict[str, Any]:
    """``configure_stage`` keyword arguments from the ``model`` config group (the stage itself is the trainer's)."""
    from omegaconf import OmegaConf

    m = OmegaConf.merge(OmegaConf.structured(ModelConfig), to_plain(model_cfg))
    return {"llm": m.llm_training.value, "lora": OmegaConf.to_container(m.lora), "train_vision": m.train_vision}


__all__ = ["QwenVLAWithSensor", "build_model", "stage_kwargs", "stats_to_dict"]
