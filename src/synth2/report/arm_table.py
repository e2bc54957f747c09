"""Every VLM arm a run has trained, per seed, from the arms' own `scores.json`.

`reproduce`'s tables use one seed; arms trained on further seeds (`synth2 train vlm --arm A
--seed N`, stage `vlm/A-sN`) are gathered here with their mean over seeds, and CIDEr A
relative to a reference arm trained on the same seed (Table 2's Synth² / Gold, Table 3's gain of
GenPair over Baseline).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import yaml

from synth2.stages.arms import arm_and_seed

COLUMNS = ("CIDEr_a", "CIDEr_b", "distinct_a", "gate_openness", "steps_per_s")


def arm_scores(run_dir: str | Path) -> list[dict]:
    """One row per finished arm and seed: {"arm", "seed", **scores.json}, sorted by arm then seed."""
    run_dir = Path(run_dir)
    config = run_dir / "config.yaml"
    if not config.exists():
        raise FileNotFoundError(f"{config}: not a run directory (no config.yaml)")
    run_seed = int(yaml.safe_load(config.read_text()).get("seed", 0))
    rows = []
    for path in (run_dir / "vlm").glob("*/scores.json"):
        arm, seed = arm_and_seed(f"vlm/{path.parent.name}", run_seed)
        rows.append({"arm": arm, "seed": seed, **json.loads(path.read_text())})
    return sorted(rows, key=lambda r: (r["arm"], r["seed"]))


def seed_table(rows: list[dict], relative_to: str = "baseline") -> list[dict]:
    """`rows` plus, per arm with several seeds, a "mean" row (the mean over its seeds of each
    column, and `CIDEr_a_std`). Each row gets `CIDEr_a_relative`: its CIDEr A over the
    reference arm's on the same seed (for a mean row, over the reference's mean on the same
    seeds); None where the reference has no such seed or scored 0 on it."""
    reference = {r["seed"]: r["CIDEr_a"] for r in rows if r["arm"] == relative_to and r["CIDEr_a"] > 0}
    table = []
    for arm in sorted({r["arm"] for r in rows}):
        runs = [r for r in rows if r["arm"] == arm]
        for r in runs:
            table.append({**r, "CIDEr_a_relative": r["CIDEr_a"] / reference[r["seed"]] if r["seed"] in reference else None})
        if len(runs) > 1:
            seeds = [r["seed"] for r in runs]
            mean = {c: statistics.mean(r[c] for r in runs) for c in COLUMNS if all(c in r for r in runs)}
            mean["CIDEr_a_std"] = statistics.stdev(r["CIDEr_a"] for r in runs)
            matched = all(s in reference for s in seeds)
            relative = mean["CIDEr_a"] / statistics.mean(reference[s] for s in seeds) if matched else None
            table.append({"arm": arm, "seed": "mean", "seeds": seeds, **mean, "CIDEr_a_relative": relative})
    return table
