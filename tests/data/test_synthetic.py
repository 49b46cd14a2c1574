"""The generator: exact on-disk format, determinism, rates, and depth visible only in the sensor."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from vla_sensor.data.format import TrajectoryReader
from vla_sensor.data.synthetic import generate_dataset


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_deterministic_per_seed(tmp_path: Path) -> None:
    kw = {"trajectories": 2, "seconds": 0.5, "image_size": 16, "sensor_rate": 325.0}
    generate_dataset(tmp_path / "a", seed=5, **kw)
    generate_dataset(tmp_path / "b", seed=5, **kw)
    generate_dataset(tmp_path / "c", seed=6, **kw)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") != _digest(tmp_path / "c")


def test_cli_writes_the_spec_format_with_rates_and_sensorless_dirs(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    cmd = [sys.executable, "-m", "vla_sensor.data.synthetic", str(out), "--trajectories", "3", "--seconds", "1",
           "--sensor-rate", "325", "1300", "--image-size", "24", "--views", "left", "top",
           "--no-sensor-trajectories", "1", "--seed", "2"]
    subprocess.run(cmd, check=True, capture_output=True, cwd=Path(__file__).parents[2])
    dirs = sorted(out.iterdir())
    assert [d.name for d in dirs] == ["traj_000", "traj_001", "traj_002"]
    reader = TrajectoryReader()
    rates = []
    for d in dirs:
        t = reader.read(d)
        assert t.actions.shape == (10, 7) and list(t.image_paths) == ["left", "top"]
        assert Image.open(t.image_paths["top"][0]).size == (24, 24)
        with np.load(d / "actions.npz") as npz:
            assert npz["timestamps"].dtype == np.float64 and npz["actions"].dtype == np.float32
        if t.has_sensor:
            with np.load(d / "sensor.npz") as npz:
                assert set(npz.files) == {"timestamps", "forces", "alines"}
                assert npz["forces"].shape == (len(npz["timestamps"]),) and npz["alines"].shape[1] == 1025
            rates.append(t.meta["sensor_rate_hz"])
    assert rates == [325, 1300] and not (dirs[2] / "sensor.npz").exists()


def _r2(x: np.ndarray, y: np.ndarray) -> float:
    x = np.concatenate([x, x**2, np.ones((len(x), 1))], 1)
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    return float(1 - np.mean((x @ coef - y) ** 2) / np.var(y))


def test_depth_actions_are_predictable_from_the_sensor_not_from_images(tmp_path: Path) -> None:
    dirs = generate_dataset(tmp_path, trajectories=10, seconds=5, image_size=32, sensor_rate=325.0, seed=11)
    reader = TrajectoryReader()
    sensor_x, image_x, dz, force = [], [], [], []
    for d in dirs:
        t = reader.read(d)
        s = t.load_sensor_stream()
        last = np.searchsorted(t.sensor_timestamps, t.action_timestamps, side="right") - 1
        peak = s[last, 1:].argmax(1).astype(float)  # OCT peak: moves with tip-to-surface distance
        before = s[np.maximum(last - 32, 0), 1:].argmax(1).astype(float)
        sensor_x.append(np.stack([peak, s[last, 0], peak - before], 1))
        feats = []
        for k in range(t.num_steps):
            img = np.asarray(Image.open(t.image_paths["left"][k]).convert("L"), float)
            ys, xs = np.nonzero(img < 80)  # the needle tip: its xy is what the images show
            feats.append([xs.mean(), ys.mean(), k])
        image_x.append(np.array(feats))
        dz.append(t.actions[:, 2])
        pen = np.clip(t.actions[:, 6], 0, 1)
        force.append(np.stack([pen, s[last, 0]], 1))
    y = np.concatenate(dz)
    r2_sensor = _r2(np.concatenate(sensor_x), y)
    r2_image = _r2(np.concatenate(image_x), y)
    assert r2_sensor > 0.85 and r2_sensor > r2_image + 0.3, (r2_sensor, r2_image)
    f = np.concatenate(force)
    assert (f[f[:, 0] == 0, 1] < 0.1).all() and np.corrcoef(f[:, 0], f[:, 1])[0, 1] > 0.8  # force ramps on contact
