"""The package is installed, not found through the working directory: a script anywhere imports it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_policy_client_imports_from_a_script_outside_the_repository(tmp_path: Path) -> None:
    script = tmp_path / "robot.py"
    script.write_text(
        "import importlib.metadata, vla_sensor\n"
        "from vla_sensor.serving import PolicyClient\n"
        "print(PolicyClient.__name__, importlib.metadata.version('vla-sensor'), vla_sensor.__file__)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, f"not importable outside the repository (pip install -e .?):\n{proc.stderr[-2000:]}"
    name, version, where = proc.stdout.split()
    assert name == "PolicyClient" and version == "0.1.0"
    assert Path(where).resolve().is_relative_to(REPO)  # this checkout, in editable mode


def test_readme_and_ci_install_the_package() -> None:
    """Both quick-start commands and the CI script run ``pip install -e .`` (the import above needs it)."""
    readme = (REPO / "README.md").read_text()
    start = readme.index("## Quick start")
    quick = readme[start : readme.index("\n## ", start + 1)]
    commands = [line for line in quick.splitlines() if line.startswith("python3 -m venv")]
    assert len(commands) == 2 and all(re.search(r"pip install (-q )?-e \.", c) for c in commands), commands
    assert re.search(r"pip install (-q )?-e \.", (REPO / ".ci" / "run").read_text())
