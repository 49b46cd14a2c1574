"""A DataLoader worker that raises or dies: a clear error naming the sample (and file), never a hang."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.reliability.components import FAIL_AT
from tests.training.helpers import TOY_ARGS, compose_cfg
from vla_sensor.data.dataset import InsertionDataset
from vla_sensor.data.errors import DataFormatError
from vla_sensor.data.loader import build_loader
from vla_sensor.training.loop import train

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize("cached", [False, True], ids=["per-sample-decode", "cached"])
def test_worker_raising_names_sample_and_file(tiny_root: Path, tmp_path: Path, cached: bool) -> None:
    traj = tmp_path / "traj"
    shutil.copytree(tiny_root / "traj_000", traj)
    ds = InsertionDataset(traj, cache=cached, cache_images=cached,
                          cache_dir=tmp_path / "cache", image_size=(28, 28), sensor_window_size=32, progress=False)
    image = next((traj / "images" / "oak").glob("000009.*"))
    if cached:  # the decoded-image cache went missing under a running job
        for f in (tmp_path / "cache" / "images").glob("*oak*.npy"):
            f.unlink()
    else:  # the image changed after the dataset was built
        image.write_bytes(b"garbage")
    batches = iter(build_loader(ds, shuffle=False, batch_size=4, num_workers=2))
    try:
        with pytest.raises(DataFormatError) as info:
            list(batches)
    finally:
        batches.close()  # now, rather than when the traceback is collected (seconds of joins)
    message = str(info.value)
    if cached:
        assert re.search(rf"sample \d+ \(trajectory {traj}, step \d+\): .*images/traj-\w+-oak-\w+\.npy", message)
    else:
        assert f"sample 9 (trajectory {traj}, step 9): {image}: unreadable image" in message, message


@pytest.mark.parametrize("fault", ["raise", "die"])
def test_training_worker_failure_is_reported_not_hung(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      fault: str) -> None:
    monkeypatch.setenv("VLA_TEST_WORKER_FAULT", fault)
    monkeypatch.setenv("VLA_TOY_SAMPLES", "64")
    cfg = compose_cfg([*TOY_ARGS, "trainer.components=tests.reliability.components.build_failing_components",
                       "data.num_workers=2", f"output_dir={tmp_path / 'run'}", "trainer.max_steps=20",
                       "trainer.save_every=0"])
    with pytest.raises(RuntimeError) as info:
        train(cfg)
    message = str(info.value)
    assert "loading training batch" in message and f"{FAIL_AT}" in message, message
    if fault == "die":
        assert "exited unexpectedly" in message or "killed by signal" in message, message
    else:
        assert f"/recordings/toy_{FAIL_AT}.npz" in message, message
