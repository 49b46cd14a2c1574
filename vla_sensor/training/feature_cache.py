"""Stage-1 feature cache: the frozen backbone's features computed once, memory-mapped from disk.

In stage 1 with late fusion the backbone is frozen and sees only the images and the prompt, so what
the readout reads of a sample (``QwenVLAWithSensor.backbone_features``) is the same at every step:
the pooled feature (``model.pooling=last|mean``) or every token's final hidden state and its (view,
row, col) layout (``model.pooling=attention``). With ``trainer.feature_cache=true`` it is computed once
per sample (a pass over the split with a progress bar) into one ``.npy`` per split — ``(N, hidden)``
float32 for a pooled feature; for the attention readout a structured ``(N,)`` array of ``tokens``
``(L, hidden)`` in the backbone's dtype (bfloat16 stored as its 16 raw bits) and ``layout`` ``(L, 3)``
int16, ``L`` the split's longest prompt (shorter ones padded, their layout marking padding) — built with the sensor
cache's machinery (:mod:`vla_sensor.data.disk_cache`: one builder under ``flock`` while the other
ranks wait, temp file + ``fsync`` + rename, a JSON sidecar written last, a stale or truncated file
rebuilt, never read). The key covers the backbone's weights (a hash of its state dict), its dtype,
attention and config, the mixed precision, the pooling, the image pre-processing (image size, views,
Qwen image settings), the tokenizer and prompt layout, each trajectory's instruction and the data
(trajectory paths, step counts and image fingerprints).

Training then reads :class:`FeatureDataset` samples: the dataset's own samples without images (no
decode, no pre-processing in the workers) plus ``vl_features`` (or ``vl_tokens`` and
``vl_token_layout``); the model runs only its trainable readout, fusion and head on them.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import PIL
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from vla_sensor.data.cache import default_cache_dir
from vla_sensor.data.collate import collate_samples
from vla_sensor.data.disk_cache import build_or_reuse, key_of, open_cow
from vla_sensor.data.images import RESAMPLE
from vla_sensor.data.loader import build_loader
from vla_sensor.models.readout import PAD
from vla_sensor.models.vla import FEATURES_KEY, LAYOUT_KEY, TOKENS_KEY
from vla_sensor.training.config import choice

log = logging.getLogger(__name__)

FEATURE_CACHE_VERSION = 2
HASH_BLOCK = 1 << 16  # bytes checked at each end of a feature file at every start


class FeatureCacheRefused(ValueError):
    """``trainer.feature_cache=true`` where the backbone's features cannot be reused."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"trainer.feature_cache=true is refused: {reason}. Run without it (trainer.feature_cache=false).")


def config_refusal(cfg: Any) -> str | None:
    """Why the config's run cannot reuse backbone features (None: it can). Checked before anything is built."""
    stage = choice(cfg.trainer.stage.name)
    if stage != "stage1":
        return f"trainer.stage={stage} trains the backbone, so its features change at every step (the cache is for stage 1)"
    if cfg.model.sensor_enabled and choice(cfg.model.fusion) == "tokens":
        return "model.fusion=tokens puts the sensor tokens into the backbone, so its output depends on the sensor"
    return None


def check_config(cfg: Any) -> None:
    """Raise :class:`FeatureCacheRefused` when ``trainer.feature_cache`` is on and cannot be used."""
    if cfg.trainer.feature_cache:
        reason = config_refusal(cfg)
        if reason is not None:
            raise FeatureCacheRefused(reason)


def check_model(model: Any, dataset: Any) -> None:
    """The built model and dataset: a frozen, dropout-free backbone fed by the model's own deterministic
    pre-processing (a different ``input_transform``, e.g. one with image augmentation, is refused)."""
    reason = model.features_cacheable()
    if reason is None:
        from vla_sensor.models.vision import QwenSampleTransform

        transform = getattr(dataset, "input_transform", None)
        if type(transform) is not QwenSampleTransform:
            reason = (f"the dataset's input_transform is {type(transform).__name__}, not the model's own "
                      "pre-processing; random image augmentation cannot be cached")
    if reason is not None:
        raise FeatureCacheRefused(reason)


def weights_digest(module: torch.nn.Module) -> str:
    """blake2b over every tensor of ``module``'s state dict (name, dtype, shape and bytes)."""
    h = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(memoryview(t.view(torch.uint8).numpy()) if t.numel() else b"")
    return h.hexdigest()


def _tokenizer_digest(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def data_identity(dataset: Any) -> list[dict[str, Any]]:
    """Each trajectory's path, step count, instruction and image fingerprints, in sample order."""
    out = []
    for traj, instruction in zip(dataset.trajectories, dataset.instructions):
        out.append({
            "path": str(Path(traj.path).resolve()),
            "steps": int(traj.num_steps),
            "instruction": instruction,
            "images": {view: traj.images.fingerprint(view) for view in dataset.view_selection},
        })
    return out


def cache_key_info(model: Any, dataset: Any, mixed_precision: str) -> dict[str, Any]:
    """Everything the stored features depend on (hashed into the cache key)."""
    param = next(model.backbone.parameters())
    return {
        "version": FEATURE_CACHE_VERSION,
        "weights": weights_digest(model.backbone),
        "dtype": str(param.dtype),
        "mixed_precision": mixed_precision,
        "attn_implementation": model.backbone.config._attn_implementation,
        "backbone_config": model.backbone_config.to_dict(),
        "pooling": model.pooling,  # what the readout reads: a pooled vector or every token
        "image_settings": model.image_settings.to_dict(),
        "image_size": list(dataset.image_size) if dataset.image_size else None,
        "views": list(dataset.view_selection),
        "resample": RESAMPLE.name,
        "pillow": PIL.__version__,
        "tokenizer": _tokenizer_digest(model.tokenizer),
        "prompt": repr(model.prompt_spec()),
        "data": data_identity(dataset),
    }


_NUMPY_OF = {torch.float32: np.float32, torch.float16: np.float16, torch.bfloat16: np.uint16}


def _token_record(dtype: torch.dtype, length: int, hidden: int) -> np.dtype:
    return np.dtype([("tokens", _NUMPY_OF[dtype], (length, hidden)), ("layout", np.int16, (length, 3))])


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    return t.view(torch.uint16).numpy() if t.dtype == torch.bfloat16 else t.numpy()


@torch.no_grad()
def compute_features(
    model: Any,
    dataset: Any,
    data_cfg: Any,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager] = contextlib.nullcontext,
    progress: bool = True,
) -> np.ndarray:
    """``model.backbone_features`` of every sample of ``dataset``, in order: (N, hidden) float32 for a
    pooled readout; the structured (N,) ``tokens``/``layout`` array for the attention readout."""
    n, size = len(dataset), int(data_cfg.batch_size)
    batches = [list(range(i, min(i + size, n))) for i in range(0, n, size)]
    loader = build_loader(dataset, data_cfg, shuffle=False, batches=batches, pin_memory=device.type == "cuda",
                          collate_fn=collate_samples)
    pooled = model.readout is None
    out = np.empty((n, model.hidden_size), np.float32) if pooled else None
    parts: list[tuple[list[int], np.ndarray, np.ndarray]] = []
    dtype = next(model.backbone.parameters()).dtype
    was_training = model.training
    model.eval()  # the backbone has no dropout in either mode (checked); the fusion layers are not run
    try:
        for indices, batch in zip(batches, tqdm(loader, desc="feature cache", disable=not progress, leave=False)):
            with autocast():
                feats = model.backbone_features(batch)
            if pooled:
                out[indices] = feats[FEATURES_KEY].float().cpu().numpy()
            else:
                tokens = feats[TOKENS_KEY].to(dtype)
                parts.append((indices, _to_numpy(tokens), feats[LAYOUT_KEY].cpu().numpy().astype(np.int16)))
    finally:
        loader.close()
        model.train(was_training)
    if pooled:
        return out
    length = max(p[1].shape[1] for p in parts)
    records = np.zeros(n, _token_record(dtype, length, model.hidden_size))
    records["layout"][..., 0] = PAD
    for indices, tokens, layout in parts:
        records["tokens"][indices, : tokens.shape[1]] = tokens
        records["layout"][indices, : layout.shape[1]] = layout
    return records


class FeatureStore:
    """``store[i]`` -> the stored readout inputs of sample ``i`` (a dict of the batch keys) from a
    memory-mapped file."""

    def __init__(self, path: Path, meta: dict[str, Any], built_here: bool, dtype: torch.dtype | None = None) -> None:
        self.path, self.meta, self.built_here = path, meta, built_here
        self.dtype = dtype  # the tokens' dtype (attention readout); None: a pooled float32 feature
        self._array: np.ndarray | None = None
        self._pid = os.getpid()

    def __len__(self) -> int:
        return int(self.meta["shape"][0])

    @property
    def nbytes(self) -> int:
        return int(self.meta["data_bytes"])

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        if self._array is None or self._pid != os.getpid():  # map lazily, once per process
            self._array, self._pid = open_cow(self.path), os.getpid()
        if self.dtype is None:
            return {FEATURES_KEY: torch.from_numpy(np.array(self._array[idx]))}
        rec = self._array[idx]
        tokens = torch.from_numpy(np.array(rec["tokens"]))
        if self.dtype == torch.bfloat16:
            tokens = tokens.view(torch.bfloat16)
        return {TOKENS_KEY: tokens, LAYOUT_KEY: torch.from_numpy(np.array(rec["layout"]).astype(np.int64))}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_array": None}  # never pickle a mapping


def open_store(
    model: Any,
    dataset: Any,
    data_cfg: Any,
    cache_dir: str | os.PathLike[str],
    split: str,
    *,
    device: torch.device,
    mixed_precision: str = "no",
    autocast: Callable[[], AbstractContextManager] = contextlib.nullcontext,
    progress: bool = True,
) -> FeatureStore:
    """The split's features: reused when the cache on disk matches the key, else computed and written."""
    check_model(model, dataset)
    root = Path(cache_dir) / "features"
    root.mkdir(parents=True, exist_ok=True)
    key = key_of(cache_key_info(model, dataset, mixed_precision))
    paths = "\n".join(sorted(str(Path(t.path).resolve()) for t in dataset.trajectories))
    prefix = f"{split}-{hashlib.sha1(paths.encode()).hexdigest()[:10]}-"  # one version per split's data
    npy = root / f"{prefix}{key[:24]}.npy"

    def produce() -> tuple[np.ndarray, dict[str, Any]]:
        features = compute_features(model, dataset, data_cfg, device, autocast, progress)
        return features, {"split": split, "samples": len(dataset)}

    meta, built = build_or_reuse(npy, npy.with_suffix(".json"), root / f"{prefix}lock", key, produce, prefix,
                                 hash_block=HASH_BLOCK)
    expected = [len(dataset), model.hidden_size] if model.readout is None else [len(dataset)]
    if meta["shape"] != expected:
        raise RuntimeError(f"{npy}: feature cache of shape {meta['shape']}, expected {expected}")
    log.info("feature cache (%s): %s %s (%d samples, %.1f MB)", split, "built" if built else "reused", npy,
             len(dataset), meta["data_bytes"] / 1e6)
    dtype = None if model.readout is None else next(model.backbone.parameters()).dtype
    return FeatureStore(npy, meta, built, dtype)


class FeatureDataset(Dataset):
    """``dataset``'s samples without images (none are read or pre-processed) plus the readout's inputs.

    Everything else — sensor windows and their main-process gather, actions, the sampler's lengths —
    is the wrapped dataset's own (its attributes are delegated to it).
    """

    def __init__(self, dataset: Any, store: FeatureStore) -> None:
        if len(store) != len(dataset):
            raise ValueError(f"feature cache has {len(store)} samples, the dataset {len(dataset)}")
        self.base, self.store = dataset, store

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        return self.sample(idx)

    def sample(self, idx: int, window_ref: bool = False) -> dict[str, Any]:
        out = self.base.sample(idx, window_ref=window_ref, images=False)
        out.update(self.store[int(idx) % len(self.base)])
        return out

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("base", "store"):
            raise AttributeError(name)
        return getattr(self.base, name)


def attach(cfg: Any, accelerator: Any, model: Any, datasets: dict[str, Any]) -> dict[str, Any]:
    """Each split of ``datasets`` (None kept) wrapped with its features; rank 0 builds, the others wait."""
    cache_dir = cfg.trainer.feature_cache_dir or cfg.data.cache_strategy.cache_dir or default_cache_dir()
    model.to(accelerator.device)
    out: dict[str, Any] = {}
    with accelerator.main_process_first():
        for split, ds in datasets.items():
            if ds is None:
                out[split] = None
                continue
            store = open_store(model, ds, cfg.data, cache_dir, split, device=accelerator.device,
                               mixed_precision=str(choice(cfg.trainer.mixed_precision)), autocast=accelerator.autocast,
                               progress=accelerator.is_main_process and bool(cfg.data.progress))
            out[split] = FeatureDataset(ds, store)
    return out
