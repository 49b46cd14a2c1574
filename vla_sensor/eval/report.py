"""Human-readable output of an evaluation: a markdown table, a JSON file and PNG plots."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def format_table(summary: Mapping[str, Any], action_names: Sequence[str] | None = None) -> str:
    """Markdown tables: overall L1/MSE per sensor group, then per horizon step and per action dim."""
    lines = ["| samples | action steps | L1 | MSE |", "|---|---:|---:|---:|"]
    for group, m in summary.items():
        if m.get("num_action_steps", 0) == 0:
            lines.append(f"| {group} | 0 | – | – |")
        else:
            lines.append(f"| {group} | {m['num_action_steps']} | {m['l1']:.4f} | {m['mse']:.4f} |")
    overall = summary.get("all", {})
    if overall.get("num_action_steps", 0):
        lines += ["", "| horizon step | L1 | MSE |", "|---:|---:|---:|"]
        for h, (l1, mse) in enumerate(zip(overall["l1_per_horizon_step"], overall["mse_per_horizon_step"])):
            lines.append(f"| {h} | {l1:.4f} | {mse:.4f} |")
        dims = overall["l1_per_action_dim"]
        names = list(action_names) if action_names else [f"a{i}" for i in range(len(dims))]
        lines += ["", "| action dim | L1 | MSE |", "|---|---:|---:|"]
        for name, l1, mse in zip(names, dims, overall["mse_per_action_dim"]):
            lines.append(f"| {name} | {l1:.4f} | {mse:.4f} |")
    return "\n".join(lines)


def plot_action_traces(
    traces: Mapping[int, Mapping[str, np.ndarray]],
    path: str | Path,
    action_names: Sequence[str] | None = None,
) -> None:
    """Predicted (first step of each chunk) vs. true actions over time, one column per trajectory.

    ``traces[traj] = {"step": (N,), "true": (N, A), "pred": (N, A)}``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trajs = list(traces)
    if not trajs:
        return
    n_dims = next(iter(traces.values()))["true"].shape[1]
    names = list(action_names) if action_names else [f"a{i}" for i in range(n_dims)]
    fig, axes = plt.subplots(n_dims, len(trajs), figsize=(3.2 * len(trajs), 1.6 * n_dims),
                             squeeze=False, sharex="col")
    for col, traj in enumerate(trajs):
        tr = traces[traj]
        order = np.argsort(tr["step"])
        for d in range(n_dims):
            ax = axes[d][col]
            ax.plot(tr["step"][order], tr["true"][order, d], color="black", lw=1.2, label="true")
            ax.plot(tr["step"][order], tr["pred"][order, d], color="tab:orange", lw=1.0, ls="--", label="predicted")
            if col == 0:
                ax.set_ylabel(names[d])
        axes[0][col].set_title(f"trajectory {traj}")
        axes[-1][col].set_xlabel("action step")
    axes[0][0].legend(loc="best", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_error_by_horizon(summary: Mapping[str, Any], path: str | Path) -> None:
    """L1 error per horizon step for each sensor group with samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for group, m in summary.items():
        if m.get("num_action_steps", 0):
            ax.plot(range(len(m["l1_per_horizon_step"])), m["l1_per_horizon_step"], marker="o", label=group)
    ax.set_xlabel("horizon step")
    ax.set_ylabel("L1 (robot units)")
    ax.set_title("Action error by horizon step")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
