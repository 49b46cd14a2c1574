"""``python train.py data.format=lerobot data.root=<dataset>`` trains, validates and evaluates unchanged."""

from __future__ import annotations

from pathlib import Path

from lerobot_fixtures import IMAGES_KC

from tests.training.helpers import compose_cfg


def test_train_and_evaluate_on_a_lerobot_dataset(tmp_path: Path) -> None:
    from vla_sensor.eval.run import evaluate_run
    from vla_sensor.training.loop import train

    cfg = compose_cfg([
        "data.format=lerobot", f"data.root={IMAGES_KC}", "data.lerobot.expected_channels=1026",
        "data.view_selection=[observation.images.top,observation.images.wrist]", "data.val_dirs=[episode_000002]",
        "data.batch_size=2", "data.num_workers=0", "data.sensor_window_size=130", "data.progress=false",
        f"data.cache_strategy.cache_dir={tmp_path / 'cache'}", f"output_dir={tmp_path / 'run'}", "logger=jsonl",
        "trainer.max_steps=3", "trainer.save_every=0", "trainer.progress_bar=false", "cpu=true",
    ])
    result = train(cfg)
    assert result["step"] == 3 and "val_loss" in result
    ev = evaluate_run(tmp_path / "run", output_dir=tmp_path / "eval", cpu=True)
    payload = ev.metrics["all"]
    assert payload["num_action_steps"] > 0
    trajectories = (tmp_path / "eval" / "eval_metrics.json").read_text()
    assert "episode_000002" in trajectories and "episode_000000" not in trajectories  # split by episode
