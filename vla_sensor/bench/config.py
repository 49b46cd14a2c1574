"""Typed schema of ``conf/benchmark.yaml`` (the ``benchmark`` node).

Sizes are explicit so the report can state them: how much data was generated, how many loads were
timed, which encoder shapes were run. ``conf/benchmark/quick.yaml`` shrinks them for CI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

SECTIONS = ("floor", "data", "memory", "encoder", "model", "feature_cache", "sim", "lerobot", "serving", "scale",
            "gpu")
# ``gpu`` is the CUDA check of the real-size model (``benchmark=gpu``), never part of a default run
DEFAULT_SECTIONS = tuple(s for s in SECTIONS if s != "gpu")


@dataclass
class DataBenchConfig:
    """Generated recordings and dataset loading measurements."""

    trajectories: int = 4
    seconds: float = 10.0
    sensor_rate: float = 650.0
    action_rate: float = 10.0  # samples per second of recording (one sample per action step)
    image_size: int = 96  # generated square images; the dataset loads them at this size
    views: list[str] = field(default_factory=lambda: ["left", "oak"])
    window: int = 650
    horizon: int = 8
    strategies: list[str] = field(default_factory=lambda: ["none", "windows", "stream", "mmap"])
    dtypes: list[str] = field(default_factory=lambda: ["float32", "float16", "int8"])
    per_sample_loads: int = 200  # random indices timed per (strategy, dtype)
    no_cache_loads: int = 30  # the no-cache path is slow; fewer loads give the same median
    warmup_loads: int = 5
    batch_size: int = 16
    num_workers: list[int] = field(default_factory=lambda: [0, 2])
    batches: int = 8  # batches timed per (strategy, num_workers)
    no_cache_batches: int = 3
    epoch_samples: int = 256  # the "epoch" is this many samples, the same for every strategy
    init_repeats: int = 3
    seed: int = 0
    # torch intra-op threads of the loading process, as DataLoader workers set them (1): with more,
    # small per-sample tensor ops of the loader wait on a thread pool that the model would use
    torch_threads: int | None = 1


@dataclass
class ScaleBenchConfig:
    """Past RAM: loading a cache larger than the memory the loading process may use (cgroup limit)."""

    memory_limit_mb: int = 512  # the child's cgroup memory limit (page cache included)
    ratios: list[float] = field(default_factory=lambda: [0.25, 1.0, 4.0])  # dataset size / memory limit
    cgroup: bool = True  # false: no limit (the rows then say so)
    drop_caches: bool = False  # also /proc/sys/vm/drop_caches (global) besides per-file eviction
    trajectory_seconds: float = 60.0  # 160 MB of float32 sensor stream per recording
    action_rate: float = 10.0
    image_size: int = 16
    window: int = 650
    batch_size: int = 16
    num_workers: int = 2
    gather_threads: int = 4
    modes: list[str] = field(default_factory=lambda: ["mmap_copy", "pread_1", "pread_threads", "chunks"])
    batches: int = 40
    warmup_batches: int = 4
    floor_reads: int = 64
    floor_threads: int = 4
    build_seconds: list[float] = field(default_factory=lambda: [60.0, 240.0])  # build peak-RSS recordings
    keep_data: bool = False
    seed: int = 0


@dataclass
class EncoderBenchConfig:
    """Sensor-encoder training step and resampling measurements (default encoder sizes)."""

    lengths: list[int] = field(default_factory=lambda: [325, 650, 1300])
    batch_size: int = 16
    channels: int = 1026
    temporal_length: int = 650
    hidden_dim: int = 512
    output_dim: int = 3072
    num_conv_layers: int = 4
    num_transformer_layers: int = 2
    repeats: int = 5
    warmup: int = 1
    interpolation_modes: list[str] = field(default_factory=lambda: ["linear", "nearest", "cubic"])
    resample_length: int = 1300
    resample_repeats: int = 5
    torch_threads: int | None = None  # None: torch's default (all cores)


@dataclass
class ModelBenchConfig:
    """A training step of the fused model (tiny on CPU; the 3B-size config on a GPU)."""

    batch_size: int = 4
    repeats: int = 3
    warmup: int = 1
    gpu_config: str = "qwen2_5_vl_3b"
    gpu_batch_size: int = 4


@dataclass
class FeatureCacheBenchConfig:
    """Stage-1 step with and without the feature cache: the tiny model and a larger random backbone."""

    batch_size: int = 4
    repeats: int = 5
    warmup: int = 1
    load_repeats: int = 3  # batches loaded (with images / with features) per timing
    # what the readout reads, hence what is stored: last|mean (one vector), attention (every token),
    # flatten (the image tokens; the full insertion task's readout)
    pooling: str = "flatten"
    # the larger backbone (0 layers: tiny only); 224x224 views make the vision tower the bulk of it
    large_layers: int = 6
    large_hidden: int = 256
    large_heads: int = 4
    large_vision_depth: int = 6
    large_vision_hidden: int = 128
    large_image_size: int = 224


@dataclass
class GpuBenchConfig:
    """``benchmark=gpu``: the real-size model on CUDA (one script, a few minutes on one GPU)."""

    model: str = "qwen2_5_vl_3b"  # conf/model/<name>.yaml, built with random weights in bf16 (sdpa)
    batch_sizes: list[int] = field(default_factory=lambda: [1, 4, 16])
    image_size: int = 224
    repeats: int = 3
    warmup: int = 1
    encoder_length: int = 650  # sensor encoder activation memory, with and without checkpointing
    encoder_batch_size: int = 16
    train_steps: int = 200  # the default training loop on CUDA: data-wait fraction and samples/s
    train_overrides: list[str] = field(default_factory=lambda: [
        "model=qwen2_5_vl_3b", "model.backbone.random_init=true", "trainer.mixed_precision=bf16"])
    train_timeout_s: int = 300


@dataclass
class BenchmarkConfig:
    name: str = "full"
    quick: bool = False  # CI size for the sections sized by a switch (sim, lerobot)
    output_dir: str = "benchmark_results"
    work_dir: str | None = None  # where recordings and caches go; None: a fresh temp dir
    keep_work_dir: bool = False
    sections: list[str] = field(default_factory=lambda: list(DEFAULT_SECTIONS))
    floor_repeats: int = 50
    torch_threads: int | None = None  # None: torch's default
    chart: bool = True
    data: DataBenchConfig = field(default_factory=DataBenchConfig)
    encoder: EncoderBenchConfig = field(default_factory=EncoderBenchConfig)
    model: ModelBenchConfig = field(default_factory=ModelBenchConfig)
    feature_cache: FeatureCacheBenchConfig = field(default_factory=FeatureCacheBenchConfig)
    gpu: GpuBenchConfig = field(default_factory=GpuBenchConfig)
    scale: ScaleBenchConfig = field(default_factory=ScaleBenchConfig)


def resolve_config(node: DictConfig | dict[str, Any] | None) -> BenchmarkConfig:
    """Merge ``node`` over the schema (unknown keys and wrong types fail here, naming the key)."""
    schema = OmegaConf.structured(BenchmarkConfig)
    merged = OmegaConf.merge(schema, node or {})
    cfg: BenchmarkConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    unknown = sorted(set(cfg.sections) - set(SECTIONS))
    if unknown:
        raise ValueError(f"benchmark.sections: unknown {unknown}; allowed {list(SECTIONS)}")
    return cfg


def register_configs() -> None:
    """Register the schema as ``benchmark/schema`` so the group's YAML files are typed by it."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group="benchmark", name="schema", node=BenchmarkConfig)
