"""Qwen-VL image + prompt pre-processing: pixel equality with the official processor, prompt layout."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from vla_sensor.models.backbone import load_backbone
from vla_sensor.models.tokenizer import IMAGE_TOKEN, SENSOR_TOKEN, VISION_END_TOKEN, VISION_START_TOKEN
from vla_sensor.models.vision import (
    ImageSettings,
    PixelPatchifier,
    PromptSpec,
    QwenSampleTransform,
    smart_resize,
)


@pytest.mark.parametrize("size", [(56, 56), (56, 112), (84, 140), (224, 224)])
def test_pixels_equal_official_processor_at_kept_size(size: tuple[int, int]) -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (2, 3, *size), dtype=np.uint8)
    official = Qwen2VLImageProcessorPil()(images=list(images), return_tensors="pt")
    pixel_values, grid = PixelPatchifier(ImageSettings())(torch.from_numpy(images))
    assert pixel_values.dtype == torch.float32
    assert torch.equal(pixel_values, official["pixel_values"])
    assert torch.equal(grid, official["image_grid_thw"])
    assert grid.tolist() == [[1, size[0] // 14, size[1] // 14]] * 2


@pytest.mark.parametrize("size", [(60, 90), (30, 30), (300, 40)])
def test_pixels_equal_official_processor_when_resizing(size: tuple[int, int]) -> None:
    """Sizes off the 28-pixel grid or under min_pixels are resized with PIL bicubic, as officially."""
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (1, 3, *size), dtype=np.uint8)
    official = Qwen2VLImageProcessorPil()(images=list(images), return_tensors="pt")
    pixel_values, grid = PixelPatchifier(ImageSettings())(images)
    assert torch.equal(grid, official["image_grid_thw"])
    torch.testing.assert_close(pixel_values, official["pixel_values"], atol=1e-6, rtol=0)


def test_custom_processor_settings_match_official() -> None:
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    settings = ImageSettings(image_mean=mean, image_std=std, min_pixels=28 * 28, max_pixels=112 * 112)
    official = Qwen2VLImageProcessorPil(image_mean=list(mean), image_std=list(std), min_pixels=28 * 28, max_pixels=112 * 112)
    images = np.random.default_rng(3).integers(0, 256, (2, 3, 112, 84), dtype=np.uint8)
    ref = official(images=list(images), return_tensors="pt")
    pixel_values, grid = PixelPatchifier(settings)(images)
    assert torch.equal(pixel_values, ref["pixel_values"])
    assert torch.equal(grid, ref["image_grid_thw"])
    assert smart_resize(112, 84, settings) == (112, 84)


def _every_byte_value(size: tuple[int, int], seed: int) -> np.ndarray:
    """(3, H, W) uint8 holding all 256 values in every channel, shuffled differently per channel."""
    rng = np.random.default_rng(seed)
    flat = np.resize(np.arange(256, dtype=np.uint8), size[0] * size[1])
    return np.stack([rng.permutation(flat).reshape(size) for _ in range(3)])


@pytest.mark.parametrize("settings", [
    ImageSettings(),
    ImageSettings(image_mean=(0.5, 0.4, 0.3), image_std=(0.2, 0.25, 0.3), rescale_factor=1 / 127.5),
    ImageSettings(rescale_factor=0.0037),  # no float32 divisor gives the table's rescale: the float64 product
], ids=["clip", "custom", "float64-rescale"])
@pytest.mark.parametrize("views,size", [(1, (224, 224)), (2, (56, 84))])
def test_patching_into_buffers_is_bit_identical_to_the_table(settings: ImageSettings, views: int,
                                                            size: tuple[int, int]) -> None:
    """Every byte value of every channel, from (3, H, W) arrays and from (H, W, 3) camera frames seen
    transposed: the buffered passes give the lookup table's bits (which equal the official processor's)."""
    patchifier = PixelPatchifier(settings)
    buffers = patchifier.buffers(views, *size)
    images = np.stack([_every_byte_value(size, seed) for seed in range(views)])
    want_pv, want_grid = patchifier(images)
    got_pv, got_grid = patchifier(images, buffers)
    assert torch.equal(got_pv, want_pv) and torch.equal(got_grid, want_grid)
    frames = [np.ascontiguousarray(img.transpose(1, 2, 0)) for img in images]  # (H, W, 3), as cameras give
    got_pv, _ = patchifier([f.transpose(2, 0, 1) for f in frames], buffers)
    assert torch.equal(got_pv, want_pv)


def test_buffers_are_overwritten_by_the_next_call_and_the_grid_is_the_callers() -> None:
    patchifier = PixelPatchifier(ImageSettings())
    buffers = patchifier.buffers(2, 56, 56)
    rng = np.random.default_rng(4)
    first, second = (rng.integers(0, 256, (2, 3, 56, 56), dtype=np.uint8) for _ in range(2))
    pv1, grid1 = patchifier(first, buffers)
    kept = pv1.clone()
    grid1[0, 0] = 99  # a caller's change to its grid does not reach the next call
    pv2, grid2 = patchifier(second, buffers)
    assert torch.equal(pv2, patchifier(second)[0]) and grid2.tolist() == [[1, 4, 4]] * 2
    assert torch.equal(kept, patchifier(first)[0])
    assert pv1.data_ptr() == pv2.data_ptr()  # one storage, reused: the documented contract


def test_buffers_refuse_sizes_the_processor_resizes_and_images_of_another_shape() -> None:
    patchifier = PixelPatchifier(ImageSettings())
    with pytest.raises(ValueError, match="resized by the processor"):
        patchifier.buffers(1, 60, 90)
    buffers = patchifier.buffers(2, 56, 56)
    with pytest.raises(ValueError, match="expected 2 images"):
        patchifier(np.zeros((1, 3, 56, 56), np.uint8), buffers)
    with pytest.raises(ValueError, match=r"expected uint8 images of shape \(3, 56, 56\)"):
        patchifier(np.zeros((2, 3, 56, 84), np.uint8), buffers)


def _transform(num_sensor_tokens: int = 0, views: list[str] | None = None) -> QwenSampleTransform:
    loaded = load_backbone(None)
    tok = loaded.tokenizer
    spec = PromptSpec(
        vision_start_id=tok.convert_tokens_to_ids(VISION_START_TOKEN),
        vision_end_id=tok.convert_tokens_to_ids(VISION_END_TOKEN),
        image_token_id=tok.convert_tokens_to_ids(IMAGE_TOKEN),
        sensor_token_id=tok.convert_tokens_to_ids(SENSOR_TOKEN),
        num_sensor_tokens=num_sensor_tokens,
    )
    return QwenSampleTransform(tok, loaded.image_settings, spec, views or ["left", "oak"], (56, 84))


def test_prompt_layout_per_view_and_instruction() -> None:
    transform = _transform()
    tok = transform.tokenizer
    sample = {"images": torch.randint(0, 256, (2, 3, 56, 84), dtype=torch.uint8), "instruction": "push in", "x": 1}
    out = transform(sample)
    assert "images" not in out and out["x"] == 1
    assert out["image_grid_thw"].tolist() == [[1, 4, 6], [1, 4, 6]]
    assert out["pixel_values"].shape == (2 * 24, 3 * 2 * 14 * 14)
    ids = out["input_ids"].tolist()
    assert out["attention_mask"].tolist() == [1] * len(ids)
    text = tok.decode(ids)
    per_view = VISION_START_TOKEN + IMAGE_TOKEN * (24 // 4) + VISION_END_TOKEN
    assert text == f"<|im_start|>user\n{per_view}{per_view}push in<|im_end|>\n<|im_start|>assistant\n"
    assert SENSOR_TOKEN not in text


def test_prompt_has_sensor_placeholders_in_token_mode() -> None:
    transform = _transform(num_sensor_tokens=5)
    out = transform({"images": torch.randint(0, 256, (2, 3, 56, 84), dtype=torch.uint8), "instruction": "go"})
    sensor_id = transform.tokenizer.convert_tokens_to_ids(SENSOR_TOKEN)
    assert int((out["input_ids"] == sensor_id).sum()) == 5


def test_transform_pickles_for_dataloader_workers() -> None:
    transform = _transform(num_sensor_tokens=2)
    sample = {"images": torch.randint(0, 256, (2, 3, 56, 84), dtype=torch.uint8), "instruction": "go"}
    clone = pickle.loads(pickle.dumps(transform))
    a, b = transform(dict(sample)), clone(dict(sample))
    for key in ("pixel_values", "image_grid_thw", "input_ids", "attention_mask"):
        assert torch.equal(a[key], b[key])


def test_missing_view_and_wrong_size_are_clear_errors() -> None:
    transform = _transform(views=["left", "oak"])
    with pytest.raises(ValueError, match=r"1 image view.*expects 2.*left.*oak"):
        transform({"images": torch.zeros(1, 3, 56, 84, dtype=torch.uint8)})
    with pytest.raises(ValueError, match="image_size"):
        transform({"images": torch.zeros(2, 3, 56, 56, dtype=torch.uint8)})
    with pytest.raises(KeyError, match="images"):
        transform({"instruction": "x"})
    with pytest.raises(ValueError, match="uint8"):
        transform.patchifier.patchify(torch.zeros(3, 56, 56))
