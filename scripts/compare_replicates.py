#!/usr/bin/env python3
"""Compare two settings of the generator trained at the same seeds, training by training.

    python scripts/compare_replicates.py --before OUT1/replicates.json [...] --after OUT2/replicates.json [...]

Each side is one or more `replicates.json` files of `generator_replicates.py`, merged by seed
offset; the offsets both sides trained are compared. Trainings at one seed share their data
order and initialisation, so the paired differences (after minus before) separate a lever from
the spread between seeds. Prints, per split and metric: each side's mean, the mean paired
difference with its standard deviation and standard error, and how many trainings gain, tie
and lose; then, on eval A, how many of the after side's trainings reach each of small's targets.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

from generator_replicates import METRICS, PERCENT

# small's targets on eval A (issue 23): seen, held-out, the LLM's captions, GenPair's own
TARGETS = {"oracle_seen": 0.90, "oracle_heldout": 0.70, "oracle_llm": 0.80, "oracle_genpair": 0.75}


def merged(files: list[Path]) -> dict[int, dict]:
    """offset -> {split: metrics}, over every file (a later file's offset replaces an earlier one's)."""
    results: dict[int, dict] = {}
    for path in files:
        results.update({int(o): r for o, r in json.loads(Path(path).read_text())["results"].items()})
    return results


def comparison(before: dict[int, dict], after: dict[int, dict], split: str, metric: str) -> dict:
    offsets = sorted(set(before) & set(after))
    scale = 100 if metric in PERCENT else 1
    old = [scale * before[o][split][metric] for o in offsets]
    new = [scale * after[o][split][metric] for o in offsets]
    diffs = [n - o for o, n in zip(old, new)]
    sd = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
    return {"before": statistics.mean(old), "after": statistics.mean(new), "diff": statistics.mean(diffs), "sd": sd,
            "se": sd / math.sqrt(len(diffs)), "gain": sum(d > 0 for d in diffs), "tie": sum(d == 0 for d in diffs),
            "loss": sum(d < 0 for d in diffs), "after_range": (min(new), max(new))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, nargs="+", required=True)
    parser.add_argument("--after", type=Path, nargs="+", required=True)
    parser.add_argument("--splits", default="b,a")
    args = parser.parse_args(argv)
    before, after = merged(args.before), merged(args.after)
    offsets = sorted(set(before) & set(after))
    if not offsets:
        raise SystemExit("the two sides share no seed offset: nothing to compare")
    print(f"offsets {', '.join(map(str, offsets))}")
    print("| split | metric | before | after | after - before | sd | se | gain / tie / loss | after's range |")
    print("|---|---|---|---|---|---|---|---|---|")
    for split in args.splits.split(","):
        for metric in METRICS:
            c = comparison(before, after, split, metric)
            digits = 1 if metric in PERCENT else 2
            f = f"{{:.{digits}f}}".format
            print(f"| {split} | {metric} | {f(c['before'])} | {f(c['after'])} | {c['diff']:+.{digits}f} | {f(c['sd'])} | "
                  f"{f(c['se'])} | {c['gain']} / {c['tie']} / {c['loss']} | {f(c['after_range'][0])}-{f(c['after_range'][1])} |")
    if "a" in args.splits.split(","):
        reached = {m: sum(after[o]["a"][m] >= t for o in offsets) for m, t in TARGETS.items()}
        print("a: the after side's trainings that reach the targets: "
              + ", ".join(f"{m} >= {100 * t:.0f}%: {reached[m]} of {len(offsets)}" for m, t in TARGETS.items()))


if __name__ == "__main__":
    main()
