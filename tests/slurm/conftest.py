"""One SLURM cluster per test session (installed and started on first use, stopped at the end)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.slurm.cluster import Cluster, Unavailable


@pytest.fixture(scope="session")
def slurm() -> Iterator[Cluster]:
    cluster = Cluster(Path(tempfile.gettempdir()) / "vla_sensor_slurm")
    cluster.root.mkdir(parents=True, exist_ok=True)
    try:
        cluster.start()
    except Unavailable as exc:
        cluster.stop()
        pytest.skip(f"no SLURM on this machine: {exc}")
    try:
        yield cluster
    finally:
        cluster.cancel_jobs()
        cluster.stop()
