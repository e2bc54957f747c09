"""Plots for the report (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return Path(path)


def plot_figure6(fig6: dict, path: str | Path) -> Path:
    """CIDEr against training steps, mean ± std over seeds, with the parity point."""
    plt = _pyplot()
    steps = np.array(fig6["steps"])
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label, colour in (("baseline", "Baseline (paired only)", "tab:blue"), ("genpair", "Synth² (+ GenPair)", "tab:purple")):
        mean, std = np.array(fig6[f"{key}_mean"]), np.array(fig6[f"{key}_std"])
        ax.plot(steps, mean, label=label, color=colour, marker="o", markersize=3)
        ax.fill_between(steps, mean - std, mean + std, color=colour, alpha=0.2)
    ax.axhline(fig6["baseline_mean"][-1], color="grey", linestyle=":", linewidth=1)
    if fig6.get("parity_fraction") is not None:
        ax.axvline(fig6["parity_fraction"] * steps[-1], color="tab:purple", linestyle="--", linewidth=1, label=f"parity at {fig6['parity_fraction']:.0%} of steps")
    ax.set_xlabel("training step")
    ax.set_ylabel("CIDEr (eval A)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_sampler_sweep(rows: list[dict], path: str | Path, split: str) -> Path:
    """Oracle accuracies (left) and FD in VQ space (right) against the guidance scale, one line
    style per sampler step count."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    styles = ("-", "--", ":", "-.")
    step_counts = sorted({r["steps"] for r in rows})
    metrics = [("oracle_seen", "oracle, seen"), ("oracle_heldout", "oracle, held-out"), ("oracle_count_right", "count right"),
               ("oracle_colours_right", "colours right"), ("oracle_shapes_right", "shapes right")]
    for style, step_count in zip(styles * len(step_counts), step_counts):
        chosen = sorted((r for r in rows if r["steps"] == step_count), key=lambda r: r["guidance"])
        x = [r["guidance"] for r in chosen]
        for (key, label), colour in zip(metrics, ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")):
            if all(key in r for r in chosen):
                left.plot(x, [r[key] for r in chosen], style, color=colour, marker="o", markersize=3, label=f"{label} ({step_count} steps)")
        right.plot(x, [r["fd_vq"] for r in chosen], style, color="black", marker="o", markersize=3, label=f"{step_count} steps")
    left.set_xlabel("guidance scale")
    left.set_ylabel(f"share of eval {split.upper()} captions")
    left.legend(fontsize=7)
    right.set_xlabel("guidance scale")
    right.set_ylabel("Fréchet distance, VQ features (lower is better)")
    right.legend(fontsize=7)
    return _save(fig, path)
