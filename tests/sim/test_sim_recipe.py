"""``experiment=sim_insertion`` runs end to end on recordings: the flatten readout over 112x112 views
from the feature cache, trained, exported and driven in closed loop."""

from __future__ import annotations

import numpy as np

from tests.training.helpers import compose_cfg
from vla_sensor.execution import ExecutionConfig


def test_the_full_task_recipe_trains_and_acts(recording, tmp_path):
    from vla_sensor.eval.policy import RunPolicy
    from vla_sensor.sim.rollout import run_episodes
    from vla_sensor.training.loop import train

    cfg = compose_cfg(["experiment=sim_insertion", f"data.root={recording}", "data.val_fraction=0.34",
                       "data.batch_size=8", "data.num_workers=0", "data.progress=false", "logger=jsonl",
                       "trainer.max_steps=3", "trainer.warmup_steps=1", "trainer.val_every=0",
                       "trainer.save_every=0", "trainer.progress_bar=false",
                       f"data.cache_strategy.cache_dir={tmp_path / 'cache'}",
                       f"trainer.feature_cache_dir={tmp_path / 'features'}", f"output_dir={tmp_path / 'run'}"])
    assert (cfg.model.pooling.value, cfg.model.loss.value, list(cfg.data.image_size)) == ("flatten", "mse", [112, 112])
    train(cfg)
    stored = np.load(next((tmp_path / "features" / "features").glob("train-*.npy")), mmap_mode="r")
    assert stored["tokens"].shape[1:] == (2 * 4 * 4, 64)  # two views of 4x4 merged tokens, image tokens only
    policy = RunPolicy.from_run(tmp_path / "run")
    assert policy.model.readout.num_tokens == 32 and policy.state_dim == 0  # the recipe leaves the state out
    records = run_episodes(policy, [0], {"episode_seconds": 0.5}, ExecutionConfig(execute_steps=4),
                           progress=False, frames=0)
    assert records[0].steps == 5 and records[0].queries == 2
