"""``sim_metrics.json`` and the pictures of a closed-loop evaluation (matplotlib, no display needed)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vla_sensor.data.writer import write_json_atomic
from vla_sensor.sim.rollout import EpisodeRecord, summarize
from vla_sensor.sim.scene import SuccessCriterion

SHEET_ROWS = 4  # episodes in the contact sheet (successes and failures, half each when both exist)
TRACE_EPISODES = 5  # episodes per panel of the force/depth plot


def _figure(width: float, height: float):
    # Figure + Agg canvas directly: no pyplot, so the caller's matplotlib backend is left alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _pick(records: list[EpisodeRecord], count: int) -> list[EpisodeRecord]:
    """Successes and failures, half each when both exist."""
    ok = [r for r in records if r.success]
    bad = [r for r in records if not r.success]
    n_bad = min(len(bad), max(count - len(ok), count // 2))
    return (ok[: count - n_bad] + bad[:n_bad])[:count]


def contact_sheet(records: list[EpisodeRecord], path: Path) -> Path | None:
    """A grid: one row per episode, the kept frames left to right (all views side by side)."""
    rows = [r for r in _pick([r for r in records if r.frames], SHEET_ROWS)]
    if not rows:
        return None
    cols = max(len(r.frames) for r in rows)
    fig = _figure(1.6 * cols * len(rows[0].frames[0][1]) / 1.5, 1.9 * len(rows))
    for i, rec in enumerate(rows):
        for j in range(cols):
            ax = fig.add_subplot(len(rows), cols, i * cols + j + 1)
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(rec.frames):
                ax.axis("off")
                continue
            step, images = rec.frames[j]
            ax.imshow(np.concatenate([images[v] for v in sorted(images)], axis=1), interpolation="nearest")
            ax.set_title(f"t = {step / 10:.1f} s", fontsize=7)
            if j == 0:
                outcome = "success" if rec.success else "failure"
                ax.set_ylabel(f"seed {rec.seed}\n{outcome}", fontsize=8, color="green" if rec.success else "red")
    fig.suptitle("Closed-loop rollouts (views side by side)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    return path


def force_depth_plot(records: list[EpisodeRecord], path: Path, criterion: SuccessCriterion) -> Path:
    """Force and depth against time; successes on the left, failures on the right."""
    fig = _figure(10, 6)
    groups = [("success", [r for r in records if r.success]), ("failure", [r for r in records if not r.success])]
    for col, (name, recs) in enumerate(groups):
        ax_f = fig.add_subplot(2, 2, col + 1)
        ax_d = fig.add_subplot(2, 2, col + 3, sharex=ax_f)
        for rec in recs[:TRACE_EPISODES]:
            line = ax_f.plot(rec.times_s, rec.force_n, lw=0.8, label=f"seed {rec.seed}")[0]
            ax_d.plot(rec.times_s, rec.depth_mm, lw=0.8, color=line.get_color())
        ax_f.axhline(criterion.force_limit_n, color="red", ls="--", lw=0.8, label="force limit")
        lo = criterion.target_depth_mm - criterion.depth_tolerance_mm
        ax_d.axhspan(lo, lo + 2 * criterion.depth_tolerance_mm, color="green", alpha=0.15, label="target depth")
        ax_d.axhline(0.0, color="gray", lw=0.6)
        ax_f.set_title(f"{name}: {len(recs)} episode(s)" + (f", first {TRACE_EPISODES} shown" if len(recs) > TRACE_EPISODES else ""))
        ax_f.set_ylabel("force (N)")
        ax_d.set_ylabel("tip depth below surface (mm)")
        ax_d.set_xlabel("time (s)")
        if recs:
            ax_f.legend(fontsize=6, loc="upper left")
        ax_d.legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    return path


def write_sim_report(
    records: list[EpisodeRecord],
    out_dir: str | os.PathLike[str],
    summary: Mapping[str, Any] | None = None,
    criterion: SuccessCriterion | None = None,
) -> dict[str, Path]:
    """Write ``sim_metrics.json`` (atomically), ``sim_rollouts.png`` and ``sim_force_depth.png``.

    ``summary`` defaults to :func:`summarize` of ``records``; extra keys the caller adds (the run,
    the execution settings) are written as given.
    """
    criterion = criterion or SuccessCriterion()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = dict(summary) if summary is not None else summarize(records, criterion.force_limit_n)
    payload.setdefault("criterion", criterion.to_dict())
    paths = {"metrics": out / "sim_metrics.json"}
    write_json_atomic(paths["metrics"], payload)
    sheet = contact_sheet(records, out / "sim_rollouts.png")
    if sheet is not None:
        paths["rollouts"] = sheet
    paths["force_depth"] = force_depth_plot(records, out / "sim_force_depth.png", criterion)
    return paths
