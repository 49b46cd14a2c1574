"""LeRobot episodes through InsertionDataset: every cache strategy and storage dtype."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from lerobot_fixtures import IMAGES_KC, VIDEO_WRENCH, WRENCH_FEATURES, arrays

from vla_sensor.bench.lerobot_bench import format_lerobot_section, measure_lerobot
from vla_sensor.data.config import strategy_settings
from vla_sensor.data.dataset import InsertionDataset
from vla_sensor.data.lerobot import LeRobotReader

VIEWS = ["observation.images.top", "observation.images.wrist"]


def _dataset(strategy: str, dtype: str, cache_dir: Path) -> InsertionDataset:
    reader = LeRobotReader(sensor_features=["observation.sensor"], expected_channels=1026)
    return InsertionDataset(reader.discover(IMAGES_KC), horizon=2, sensor_window_size=100, view_selection=VIEWS,
                            cache_dtype=dtype, cache_dir=str(cache_dir), reader=reader, image_size=(24, 32),
                            progress=False, **strategy_settings(strategy))


@pytest.mark.parametrize(("strategy", "dtype"), [("none", "float32"), ("stream", "float16"), ("mmap", "float32"),
                                                 ("mmap", "int8")])
def test_every_strategy_and_dtype(tmp_path: Path, strategy: str, dtype: str) -> None:
    ref = arrays("images_kc")
    ds = _dataset(strategy, dtype, tmp_path / "cache")
    assert len(ds) == 8 and ds.num_channels == 1026
    sample = ds[4]  # episode 1, step 1
    assert sample["trajectory_index"] == 1 and sample["step_index"] == 1
    assert sample["instruction"] == str(ref["task/1"])
    assert np.array_equal(sample["images"].numpy(), np.stack([ref[f"{v}/1"][1] for v in VIEWS]).transpose(0, 3, 1, 2))
    assert np.array_equal(sample["actions"][0].numpy(), ref["action/1"][1])
    window, length = ds.sensor_window(4)
    stream = ref["observation.sensor/1"].reshape(-1, 1026)
    truth = stream[130 - 100 : 130]  # the 100 samples ending at step 1's own timestamp
    assert length == 100
    tol = {"float32": 0.0, "float16": 2e-3, "int8": 0.05}[dtype]
    assert np.abs(window - truth).max() <= tol * max(1.0, np.abs(truth).max())


def test_mmap_cache_warm_start_never_reads_the_sensor_columns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _dataset("mmap", "float32", tmp_path / "cache")
    import vla_sensor.data.lerobot.reader as reader_module

    def fail(*_a, **_k):
        raise AssertionError("sensor columns read on a warm start")

    monkeypatch.setattr(reader_module, "_load_stream", fail)
    second = _dataset("mmap", "float32", tmp_path / "cache")
    assert np.array_equal(first.sensor_window(7)[0], second.sensor_window(7)[0])


def test_video_dataset_builds_its_image_cache(tmp_path: Path) -> None:
    reader = LeRobotReader(sensor_features=WRENCH_FEATURES)
    ds = InsertionDataset(reader.discover(VIDEO_WRENCH), sensor_window_size=26, view_selection=None,
                          cache_dir=str(tmp_path / "cache"), reader=reader, progress=False, image_size=(32, 48),
                          **strategy_settings("mmap"))
    assert ds.view_selection == ["observation.images.top"] and ds.image_cache is not None
    assert ds[14]["images"].shape == (1, 3, 32, 48) and ds.num_channels == 14


def test_benchmark_section_quick(tmp_path: Path) -> None:
    result = measure_lerobot(True, tmp_path)
    assert result["channels"] == 1026 and result["lerobot"]["copy"]["median"] > 0
    text = format_lerobot_section(result)
    assert "LeRobot" in text and "warm start" in text
