#!/usr/bin/env python3
"""Train the generator several times on one run's data and tabulate the spread.

    python scripts/generator_replicates.py RUN OUT [--offsets 0,1,2,3] [--splits a,b] [--set KEY=VALUE ...]

Trainings of one setting differ by up to 18 points of oracle accuracy (docs/generator.md), so a
lever is judged by the mean and range over several. Each replicate is a copy of RUN's upstream
stages (the world, captions, LM, VQ and tokens) in OUT/offset_N, whose generator trains with
`t2i.seed_offset=N` and the `--set` overrides, then is evaluated on each eval split. A replicate
that finished is skipped, so an interrupted call resumes. Prints a table (mean and range per
metric) and writes OUT/replicates.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
from pathlib import Path

from synth2 import api
from synth2.eval.generator import GeneratorMetrics

# The stages the generator reads (stages/generator.py: t2i); anything else is recomputed if needed.
UPSTREAM = ("world", "captions", "lm", "vq", "encode")
METRICS = ("oracle_seen", "oracle_heldout", "oracle_llm", "oracle_paired_style", "oracle_objects_1", "oracle_objects_2",
           "oracle_objects_3plus", "oracle_present_right", "oracle_count_right", "oracle_genpair", "masked_token_nll")
# the shares, printed in percent, as the metrics' schema declares them; the rest (the NLL) as they are
PERCENT = {f.name for f in dataclasses.fields(GeneratorMetrics) if f.metadata.get("pct")}


def copy_upstream(run: Path, out: Path) -> None:
    """OUT gets RUN's config and the upstream stages, with their manifest entries only."""
    out.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((run / "manifest.json").read_text())
    stages = {name: entry for name, entry in manifest["stages"].items() if name in UPSTREAM}
    for name in stages:
        if not (out / name).exists():
            shutil.copytree(run / name, out / name)
    shutil.copy(run / "config.yaml", out / "config.yaml")
    (out / "manifest.json").write_text(json.dumps({**manifest, "stages": stages}, indent=2))


def replicate(run: Path, out: Path, offset: int, splits: list[str], overrides: list[str]) -> dict[str, dict]:
    """The generator metrics per split of one training with seed offset `offset`."""
    if not (out / "manifest.json").exists():
        copy_upstream(run, out)
    replica = api.open_run(out, overrides=[*overrides, f"t2i.seed_offset={offset}"])
    api.train(replica, "t2i")
    return {split: api.evaluate_generator(replica, split).artifacts for split in splits}


def summary(results: dict[int, dict[str, dict]], splits: list[str]) -> list[str]:
    """A markdown table: one row per split and metric, each replicate's value, mean and range."""
    offsets = sorted(results)
    lines = ["| split | metric | " + " | ".join(f"offset {o}" for o in offsets) + " | mean | range |",
             "|---" * (len(offsets) + 4) + "|"]
    for split in splits:
        for metric in METRICS:
            scale, digits = (100, 1) if metric in PERCENT else (1, 2)
            values = [scale * results[o][split][metric] for o in offsets]
            cells = " | ".join(f"{v:.{digits}f}" for v in values)
            lines.append(f"| {split} | {metric} | {cells} | {statistics.mean(values):.{digits}f} | {min(values):.{digits}f}-{max(values):.{digits}f} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a run whose upstream stages are done")
    parser.add_argument("out", type=Path)
    parser.add_argument("--offsets", default="0,1,2,3", help="generator seed offsets, comma-separated")
    parser.add_argument("--splits", default="a,b")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    offsets = [int(o) for o in args.offsets.split(",")]
    splits = args.splits.split(",")
    results = {o: replicate(args.run, args.out / f"offset_{o}", o, splits, args.overrides) for o in offsets}
    (args.out / "replicates.json").write_text(json.dumps({"overrides": args.overrides, "results": results}, indent=2))
    print("\n".join(summary(results, splits)))


if __name__ == "__main__":
    main()
