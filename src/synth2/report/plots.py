"""Plots for the report (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_figure6(fig6: dict, path: str | Path) -> Path:
    """CIDEr against training steps, mean ± std over seeds, with the parity point."""
    plt = _pyplot()
    steps = np.array(fig6["steps"])
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label, colour in (("baseline", "Baseline (paired only)", "tab:blue"), ("synth2", "Synth² (+ GenPair)", "tab:purple")):
        mean, std = np.array(fig6[f"{key}_mean"]), np.array(fig6[f"{key}_std"])
        ax.plot(steps, mean, label=label, color=colour, marker="o", markersize=3)
        ax.fill_between(steps, mean - std, mean + std, color=colour, alpha=0.2)
    ax.axhline(fig6["baseline_mean"][-1], color="grey", linestyle=":", linewidth=1)
    if fig6.get("parity_fraction") is not None:
        ax.axvline(fig6["parity_fraction"] * steps[-1], color="tab:purple", linestyle="--", linewidth=1, label=f"parity at {fig6['parity_fraction']:.0%} of steps")
    ax.set_xlabel("training step")
    ax.set_ylabel("CIDEr (eval A)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
