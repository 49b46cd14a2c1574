"""Qwen-VL image and prompt pre-processing that runs in DataLoader workers.

``QwenSampleTransform`` reproduces transformers' Qwen2-VL image processor (rescale by 1/255,
normalise with the CLIP mean/std, duplicate each frame ``temporal_patch_size`` times, patchify in the
merge-window order the vision tower expects) with a per-channel lookup table and one reshape per
image, so pretrained weights see exactly the pixels they were trained on without the official
processor's per-image Python overhead. It also builds the prompt: per view ``<|vision_start|>`` +
``<|image_pad|>`` x (grid_t*grid_h*grid_w / merge^2) + ``<|vision_end|>``, then optional sensor
placeholder tokens, then the instruction, in Qwen's chat layout.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from vla_sensor.data.format import DEFAULT_INSTRUCTION

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class ImageSettings:
    """The Qwen2-VL image processor settings that decide the pixels a backbone sees."""

    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    image_mean: tuple[float, ...] = OPENAI_CLIP_MEAN
    image_std: tuple[float, ...] = OPENAI_CLIP_STD
    rescale_factor: float = 1 / 255
    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 1280

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["image_mean"] = list(self.image_mean)
        d["image_std"] = list(self.image_std)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ImageSettings:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        for k in ("image_mean", "image_std"):
            if k in known:
                known[k] = tuple(float(x) for x in known[k])
        return cls(**known)

    @classmethod
    def from_processor_config(cls, d: Mapping[str, Any]) -> ImageSettings:
        """Read a ``preprocessor_config.json`` dict (old min/max_pixels or new size keys)."""
        out = cls.from_dict(d)
        size = d.get("size") or {}
        out.min_pixels = int(d.get("min_pixels") or size.get("shortest_edge") or out.min_pixels)
        out.max_pixels = int(d.get("max_pixels") or size.get("longest_edge") or out.max_pixels)
        return out


def smart_resize(height: int, width: int, s: ImageSettings) -> tuple[int, int]:
    """Qwen2-VL's target size: multiples of patch*merge, pixel count within [min, max]."""
    factor = s.factor
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"image aspect ratio must be below 200, got {height}x{width}")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > s.max_pixels:
        beta = math.sqrt((height * width) / s.max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < s.min_pixels:
        beta = math.sqrt(s.min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def _pil_bicubic(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a uint8 (3, H, W) image the way the official PIL processor does."""
    from PIL import Image

    pil = Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0)))
    out = pil.resize((width, height), resample=Image.Resampling.BICUBIC)
    return np.asarray(out).transpose(2, 0, 1)


class PatchBuffers:
    """Reused storage for :meth:`PixelPatchifier.__call__` on ``views`` images of one size (a server's
    session keeps one): no page is allocated or faulted per request. Its ``pixel_values`` are
    overwritten by the next call that uses it."""

    def __init__(self, views: int, height: int, width: int, settings: ImageSettings) -> None:
        p, tp = settings.patch_size, settings.temporal_patch_size
        self.shape = (int(views), 3, int(height), int(width))
        self.values = np.zeros(self.shape, np.float32)  # the normalised pixels, image order
        self.pixel_values = np.zeros((views * (height // p) * (width // p), 3 * tp * p * p), np.float32)
        self.grids = torch.tensor([[1, height // p, width // p]] * views, dtype=torch.long)


class PixelPatchifier:
    """uint8 images (V, 3, H, W) -> (pixel_values (sum patches, D), image_grid_thw (V, 3))."""

    def __init__(self, settings: ImageSettings) -> None:
        self.settings = settings
        # Lookup table with the official arithmetic: float64 rescale -> float32, then
        # float32 (x - mean) / std. One gather per image reproduces it bit for bit.
        values = (np.arange(256, dtype=np.float64) * settings.rescale_factor).astype(np.float32)
        mean = np.asarray(settings.image_mean, dtype=np.float32)[:, None]
        std = np.asarray(settings.image_std, dtype=np.float32)[:, None]
        self._lut = (values[None, :] - mean) / std  # (3, 256) float32
        self._mean, self._std = mean[:, :, None], std[:, :, None]  # (3, 1, 1): per channel
        # The buffered path computes the table's arithmetic per pixel (each step IEEE-exact, so the same
        # bits); its rescale is one float32 division where that gives the table's float64 product for
        # every byte value (1/255 does), else the float64 product itself.
        divisor = np.float32(1 / settings.rescale_factor)
        self._divisor = divisor if np.array_equal(np.arange(256, dtype=np.float32) / divisor, values) else None

    def buffers(self, views: int, height: int, width: int) -> PatchBuffers:
        """Storage for calls on ``views`` images of ``height`` x ``width`` (already at a processed size)."""
        if smart_resize(height, width, self.settings) != (height, width):
            raise ValueError(f"{height}x{width} is resized by the processor; buffers hold processed sizes only")
        return PatchBuffers(views, height, width, self.settings)

    def patchify(self, image: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        s = self.settings
        img = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[0] != 3:
            raise ValueError(f"expected a uint8 image of shape (3, H, W), got {img.dtype} {tuple(img.shape)}")
        h, w = img.shape[1:]
        th, tw = smart_resize(h, w, s)
        if (th, tw) != (h, w):
            img = _pil_bicubic(img, th, tw)
        x = np.stack([self._lut[c][img[c]] for c in range(3)])  # (3, th, tw) float32
        p, m, tp = s.patch_size, s.merge_size, s.temporal_patch_size
        gh, gw = th // p, tw // p
        x = x.reshape(3, gh // m, m, p, gw // m, m, p).transpose(1, 4, 2, 5, 0, 3, 6)
        x = np.broadcast_to(x[:, :, :, :, :, None], (*x.shape[:5], tp, p, p))
        return torch.from_numpy(x.reshape(gh * gw, 3 * tp * p * p)), (1, gh, gw)

    def __call__(self, images: np.ndarray | torch.Tensor | Sequence[np.ndarray],
                 buffers: PatchBuffers | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The patches of ``images``; with ``buffers`` (images of its shape) written into them in a few
        vectorised passes — rescale, subtract the mean, divide by the std, one copy into patch order
        with the frame duplicated — the same values bit for bit, nothing allocated. Returns a view of
        ``buffers.pixel_values``."""
        if buffers is not None:
            return self._into(images, buffers)
        patches, grids = [], []
        for image in images:
            pv, thw = self.patchify(image)
            patches.append(pv)
            grids.append(thw)
        return torch.cat(patches, 0), torch.tensor(grids, dtype=torch.long)

    def _into(self, images: np.ndarray | torch.Tensor | Sequence[np.ndarray], buffers: PatchBuffers
              ) -> tuple[torch.Tensor, torch.Tensor]:
        if len(images) != buffers.shape[0]:
            raise ValueError(f"expected {buffers.shape[0]} images for these buffers, got {len(images)}")
        x = buffers.values
        for v, image in enumerate(images):  # any strides (e.g. an (H, W, 3) camera frame transposed)
            img = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
            if img.dtype != np.uint8 or img.shape != buffers.shape[1:]:
                raise ValueError(f"expected uint8 images of shape {buffers.shape[1:]}, got {img.dtype} "
                                 f"{tuple(img.shape)}")
            if self._divisor is not None:
                np.divide(img, self._divisor, out=x[v])
            else:
                np.multiply(img, np.float64(self.settings.rescale_factor), out=x[v], casting="same_kind")
        np.subtract(x, self._mean, out=x)
        np.divide(x, self._std, out=x)
        s = self.settings
        p, m, tp = s.patch_size, s.merge_size, s.temporal_patch_size
        v, _, h, w = buffers.shape
        gh, gw = h // p, w // p
        x = x.reshape(v, 3, gh // m, m, p, gw // m, m, p).transpose(0, 2, 5, 3, 6, 1, 4, 7)
        np.copyto(buffers.pixel_values.reshape(v, gh // m, gw // m, m, m, 3, tp, p, p), x[:, :, :, :, :, :, None])
        return torch.from_numpy(buffers.pixel_values), buffers.grids.clone()


@dataclass
class PromptSpec:
    """Token ids and layout of the prompt; plain data so the transform pickles cheaply."""

    vision_start_id: int
    vision_end_id: int
    image_token_id: int
    sensor_token_id: int | None = None
    num_sensor_tokens: int = 0
    template: str = "<|im_start|>user\n{vision}{sensor}{instruction}<|im_end|>\n<|im_start|>assistant\n"
    default_instruction: str = DEFAULT_INSTRUCTION
    extra: dict[str, Any] = field(default_factory=dict)


class QwenSampleTransform:
    """Picklable per-sample pre-processing for the dataset's ``input_transform`` (DataLoader workers).

    From a sample's ``images`` and ``instruction`` it makes ``pixel_values``, ``image_grid_thw``,
    ``input_ids`` and ``attention_mask`` and drops the raw ``images`` (unless ``keep_images``) so
    workers ship less memory to the trainer.
    """

    def __init__(
        self,
        tokenizer: Any,
        settings: ImageSettings,
        prompt: PromptSpec,
        view_selection: Sequence[str] | None = None,
        image_size: Sequence[int] | int | None = None,
        keep_images: bool = False,
    ) -> None:
        self.tokenizer = tokenizer
        self.settings = settings
        self.prompt = prompt
        self.view_selection = list(view_selection) if view_selection is not None else None
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        self.image_size = tuple(image_size) if image_size is not None else None
        if self.image_size is not None:
            th, tw = smart_resize(*self.image_size, settings)
            if (th, tw) != self.image_size:
                # Allowed (resized like the official processor), but worth knowing up front.
                self.processed_size = (th, tw)
            else:
                self.processed_size = self.image_size
        self.keep_images = keep_images
        self.patchifier = PixelPatchifier(settings)
        self._text_cache: dict[str, list[int]] = {}

    def _encode(self, text: str) -> list[int]:
        ids = self._text_cache.get(text)
        if ids is None:
            ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            if len(self._text_cache) < 4096:
                self._text_cache[text] = ids
        return ids

    def build_input_ids(self, grids: torch.Tensor, instruction: str) -> list[int]:
        """Prompt ids: chat template with the vision and sensor placeholders spliced in."""
        p = self.prompt
        merge2 = self.settings.merge_size**2
        vision: list[int] = []
        for t, h, w in grids.tolist():
            vision += [p.vision_start_id] + [p.image_token_id] * (t * h * w // merge2) + [p.vision_end_id]
        sensor = [p.sensor_token_id] * p.num_sensor_tokens if p.num_sensor_tokens else []
        ids: list[int] = []
        rest = p.template
        # Split the template on its three slots; the text around them is tokenized (cached).
        for slot, slot_ids in (("{vision}", vision), ("{sensor}", sensor), ("{instruction}", None)):
            before, _, rest = rest.partition(slot)
            ids += self._encode(before) if before else []
            ids += self._encode(instruction) if slot_ids is None else slot_ids
        ids += self._encode(rest) if rest else []
        return ids

    def check_views(self, images: torch.Tensor | np.ndarray) -> None:
        shape = tuple(images.shape)
        if len(shape) != 4 or shape[1] != 3:
            raise ValueError(f"sample 'images' must be uint8 (V, 3, H, W), got shape {shape}")
        if self.view_selection is not None and shape[0] != len(self.view_selection):
            raise ValueError(
                f"sample has {shape[0]} image view(s) but the model expects {len(self.view_selection)}: "
                f"view_selection={self.view_selection}"
            )
        if self.image_size is not None and tuple(shape[2:]) != self.image_size:
            raise ValueError(f"sample images are {shape[2]}x{shape[3]}, expected image_size={self.image_size}")

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        if "images" not in sample:
            raise KeyError(
                f"sample has no 'images' (views {self.view_selection}); keys are {sorted(sample)}"
            )
        images = sample["images"]
        self.check_views(images)
        pixel_values, grids = self.patchifier(images)
        instruction = sample.get("instruction") or self.prompt.default_instruction
        ids = torch.tensor(self.build_input_ids(grids, instruction), dtype=torch.long)
        out = dict(sample)
        if not self.keep_images:
            out.pop("images")
        out["pixel_values"] = pixel_values
        out["image_grid_thw"] = grids
        out["input_ids"] = ids
        out["attention_mask"] = torch.ones_like(ids)
        return out


def collate_model_inputs(samples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """Batch the transform's outputs as the data collate does (concat pixels, right-pad ids with 0)."""
    lengths = [len(s["input_ids"]) for s in samples]
    n = max(lengths)
    ids = torch.zeros(len(samples), n, dtype=torch.long)
    mask = torch.zeros(len(samples), n, dtype=torch.long)
    for i, s in enumerate(samples):
        ids[i, : lengths[i]] = s["input_ids"]
        mask[i, : lengths[i]] = s["attention_mask"]
    return {
        "pixel_values": torch.cat([s["pixel_values"] for s in samples], 0),
        "image_grid_thw": torch.cat([s["image_grid_thw"] for s in samples], 0),
        "input_ids": ids,
        "attention_mask": mask,
    }
