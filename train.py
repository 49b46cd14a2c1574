"""Train the sensor-fused VLA policy: ``python train.py [overrides]`` (see docs/training.md).

With no arguments: the demo (generated recordings, a tiny random Qwen-VL, a couple of minutes on CPU).
Multi-GPU: ``accelerate launch --multi_gpu --num_processes 4 train.py model=qwen2_5_vl_3b ...``.
Sweep: ``python train.py -m data.sensor_window_size=325,650,1300``.
"""

from __future__ import annotations

import logging
import os

import hydra
from omegaconf import DictConfig

from vla_sensor.config import register_configs

register_configs()
log = logging.getLogger("train")


def _submitit_distributed_env() -> None:
    """Under a SLURM job started by hydra-submitit-launcher with several tasks, export torch's env vars."""
    if "WORLD_SIZE" in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
        return
    try:
        import submitit

        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    except (ImportError, RuntimeError):  # not a submitit job: the launcher is responsible
        pass


def _refuse_sweep_inside_launcher() -> None:
    """`accelerate launch train.py -m ...` would run every sweep job in every process, uncoordinated."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.get().mode == RunMode.MULTIRUN and "LOCAL_RANK" in os.environ:
        raise RuntimeError(
            "a multirun sweep inside `accelerate launch`/torchrun: run the sweep without a launcher "
            "(python train.py -m ...) and get DDP per job from hydra/launcher (e.g. slurm_4gpu)"
        )


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from vla_sensor.training.loop import train  # heavy imports after Hydra parsed the command line

    _refuse_sweep_inside_launcher()
    _submitit_distributed_env()
    result = train(cfg)
    log.info("done: step %s, loss %s, val_loss %s, run dir %s", result.get("step"), result.get("loss"),
             result.get("val_loss"), result.get("run_dir"))
    return result.get("val_loss")  # the sweep objective (e.g. for an Optuna sweeper)


if __name__ == "__main__":
    main()
