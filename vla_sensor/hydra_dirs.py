"""Where ``evaluate.py`` and ``serve.py`` put Hydra's own log files, without creating a missing run.

Both scripts read an existing run directory. Hydra creates its log directory before the script
runs, so ``<run_dir>/<script>/.hydra_<stamp>`` would bring a mistyped ``run_dir`` into being before
the script can say it is missing; for a directory that does not exist the logs go to a temporary one.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from omegaconf import OmegaConf


def run_log_dir(run_dir: str, script: str, stamp: str) -> str:
    """``<run_dir>/<script>/.hydra_<stamp>`` for an existing run directory, else a temporary one."""
    if Path(run_dir).is_dir():
        return str(Path(run_dir) / script / f".hydra_{stamp}")
    return str(Path(tempfile.gettempdir()) / "vla_sensor_hydra" / f"{script}_{stamp}")


if not OmegaConf.has_resolver("run_log_dir"):
    OmegaConf.register_new_resolver("run_log_dir", run_log_dir)
