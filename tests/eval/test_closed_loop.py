"""Closed-loop evaluation of a trained run in the simulator, and the policy's inputs equal the dataset's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.training.helpers import compose_cfg

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny policy trained for a few steps on four recorded simulator episodes."""
    from vla_sensor.sim.record import record
    from vla_sensor.training.loop import train

    tmp = tmp_path_factory.mktemp("simrun")
    record(tmp / "data", episodes=4, seed=0, progress=False)
    cfg = compose_cfg([f"data.root={tmp / 'data'}", "data.val_fraction=0.25", "data.num_workers=0",
                       "data.batch_size=4", "data.progress=false", f"data.cache_strategy.cache_dir={tmp / 'cache'}",
                       f"output_dir={tmp / 'run'}", "logger=jsonl", "trainer.max_steps=3", "trainer.save_every=0",
                       "trainer.progress_bar=false", "cpu=true"])
    train(cfg)
    return tmp / "run"


def _observations(traj_dir: Path) -> list[dict]:
    """The observations the env gave while a trajectory was recorded, replayed from its files."""
    with np.load(traj_dir / "sensor.npz") as npz:
        ts, values = npz["timestamps"], np.concatenate([npz["forces"][:, None], npz["alines"]], axis=1)
    with np.load(traj_dir / "actions.npz") as npz:
        steps, states = npz["timestamps"], npz["states"]
    meta = json.loads((traj_dir / "meta.json").read_text())
    out, previous = [], -np.inf
    for k, t in enumerate(steps):
        rows = (ts > previous) & (ts <= t)
        images = {v: np.asarray(Image.open(next((traj_dir / "images" / v).glob(f"{k:06d}.*"))).convert("RGB"))
                  for v in meta["views"]}
        out.append({"images": images, "sensor": {"timestamps": ts[rows], "values": values[rows].astype(np.float32)},
                    "instruction": meta["instruction"], "state": states[k]})
        previous = t
    return out


def test_policy_inputs_equal_the_datasets(sim_run: Path) -> None:
    """Replaying a recording through the policy gives, step by step, the batch the dataset gives."""
    from vla_sensor.data.collate import collate_samples
    from vla_sensor.eval.policy import RunPolicy
    from vla_sensor.eval.run import build_eval_dataset, load_run_config

    policy = RunPolicy.from_run(sim_run)
    dataset = build_eval_dataset(load_run_config(sim_run), None)
    dataset.input_transform = policy.transform
    traj = dataset.trajectories[0]
    policy.reset()
    for k, obs in enumerate(_observations(traj.path)):
        got = policy.batch(obs)
        want = collate_samples([dataset[k]])  # trajectory 0: sample k is step k
        for key in ("sensor_data", "sensor_lengths", "has_sensor_mask", "pixel_values", "image_grid_thw",
                    "input_ids", "attention_mask", "state"):
            assert torch.equal(got[key], want[key]), (k, key)


def test_a_policy_trained_with_state_refuses_observations_without_a_valid_one(sim_run: Path) -> None:
    """The recordings carry the tip position, so the run's model reads a 3-dim state."""
    from vla_sensor.data.build import build_datasets
    from vla_sensor.eval.policy import LoadedPolicy
    from vla_sensor.eval.run import load_run_config, resolve_weights

    loaded = LoadedPolicy.from_run(sim_run)
    assert loaded.state_dim == 3 and loaded.model.state_dim == 3
    # saved with the weights: the training split's state statistics
    saved = json.loads((resolve_weights(sim_run, None) / "action_stats.json").read_text())["state"]
    train, _, stats = build_datasets(load_run_config(sim_run).data)
    np.testing.assert_allclose(saved["mean"], np.concatenate([t.states for t in train.trajectories]).mean(0), rtol=1e-5)
    np.testing.assert_allclose(saved["std"], stats.state.std, rtol=1e-6)
    obs = _observations(sorted((sim_run.parent / "data").iterdir())[0])[0]
    bad = {
        "missing": ({k: v for k, v in obs.items() if k != "state"}, r"state: missing; .* needs 'state' float32 \(3,\)"),
        "size": ({**obs, "state": np.zeros(2, np.float32)}, r"state: expected 3 values .* got shape \(2,\)"),
        "dtype": ({**obs, "state": obs["state"].astype(np.float64)}, r"state: expected dtype float32, got float64"),
        "nan": ({**obs, "state": np.array([0.0, np.nan, 1.0], np.float32)}, r"state: NaN or inf"),
    }
    for name, (o, match) in bad.items():
        session = loaded.new_session()
        with pytest.raises(ValueError, match=match):
            session.predict(o)
        assert session.stream.timestamps.shape == (0,), name  # refused before the stream took anything
    chunk = loaded.new_session().predict(obs)
    assert chunk.shape == (loaded.horizon, 3) and np.isfinite(chunk).all()


def test_closed_loop_evaluation_writes_metrics_and_pictures(sim_run: Path, tmp_path: Path) -> None:
    from vla_sensor.eval.closed_loop import evaluate_in_sim
    from vla_sensor.eval.config import SimEvalConfig

    result = evaluate_in_sim(sim_run, SimEvalConfig(episodes=2, seed=7, progress=False, episode_seconds=2.0),
                             output_dir=tmp_path, cpu=True)
    payload = json.loads((tmp_path / "sim_metrics.json").read_text())
    assert payload["episodes"] == 2 and payload["seeds"] == [7, 8]
    lo, hi = payload["success_rate_ci95"]
    assert 0.0 <= lo <= payload["success_rate"] <= hi <= 1.0
    assert {"mean_time_to_success_s", "peak_force_n", "force_limit_violations", "per_episode"} <= set(payload)
    assert payload["settings"]["views"] == ["left", "oak"] and payload["settings"]["execute_steps"] == 4
    assert (tmp_path / "sim_rollouts.png").stat().st_size > 0 and (tmp_path / "sim_force_depth.png").stat().st_size > 0
    assert result.summary["per_episode"][0]["queries"] >= 1


def test_evaluate_py_in_closed_loop_under_two_processes(sim_run: Path, tmp_path: Path) -> None:
    """``accelerate launch`` splits the episodes across ranks; each is counted once, one table printed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29533",
         str(REPO / "evaluate.py"), f"run_dir={sim_run}", f"output_dir={tmp_path}", "cpu=true", "sim.episodes=3",
         "sim.episode_seconds=1.0", "sim.progress=false"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    payload = json.loads((tmp_path / "sim_metrics.json").read_text())
    assert payload["seeds"] == [1000, 1001, 1002] and payload["settings"]["processes"] == 2
    assert proc.stdout.count("| episodes |") == 1
