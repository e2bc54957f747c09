#!/usr/bin/env python3
"""Compare two results.json files leaf by leaf, timings aside.

    python scripts/compare_results.py OLD NEW [--rename OLD_PATH=NEW_PATH ...] [--skip PATH ...]

Every leaf (a number, string, bool or null at a path like `table2.baseline.cider_a`) of OLD is
looked up in NEW, after the renames (a rename of a path prefix renames everything below it).
Timings differ between any two runs and are skipped: keys ending in `seconds`, `steps_per_s`,
and the speed ratio `embedding_over_pixel_speed`; `--skip` names more paths (and everything below
them) to leave out, such as `hardware` between runs with different worker counts. Exits 1 if any compared leaf differs or is
missing; leaves only NEW has are listed, not counted as differences.
"""

from __future__ import annotations

import argparse
import json
import sys

TIMING_SUFFIXES = ("seconds", "steps_per_s", "embedding_over_pixel_speed")


def leaves(value, path: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out.update(leaves(item, f"{path}.{key}" if path else str(key)))
        return out
    if isinstance(value, list):
        out = {}
        for i, item in enumerate(value):
            out.update(leaves(item, f"{path}[{i}]"))
        return out
    return {path: value}


def is_timing(path: str) -> bool:
    return any(part.split("[")[0].endswith(TIMING_SUFFIXES) for part in path.split("."))


def renamed(path: str, renames: dict[str, str]) -> str:
    for old, new in renames.items():
        if under(path, old):
            return new + path[len(old):]
    return path


def under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + ".") or path.startswith(prefix + "[")


def compare(old: dict, new: dict, renames: dict[str, str], skip: tuple[str, ...] = ()) -> dict:
    a, b = ({p: v for p, v in leaves(tree).items() if not any(under(p, s) for s in skip)} for tree in (old, new))
    equal, different, missing = [], [], []
    for path, value in a.items():
        if is_timing(path):
            continue
        target = renamed(path, renames)
        if target not in b:
            missing.append(path)
        elif b[target] == value:
            equal.append(path)
        else:
            different.append((path, value, b[target]))
    mapped = {renamed(p, renames) for p in a}
    only_new = sorted(p for p in b if p not in mapped and not is_timing(p))
    return {"equal": equal, "different": different, "missing": missing, "only_new": only_new}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--rename", action="append", default=[], help="OLD_PATH=NEW_PATH (a path prefix)")
    parser.add_argument("--skip", action="append", default=[], help="a path (prefix) to leave out of the comparison")
    args = parser.parse_args(argv)
    renames = dict(r.split("=", 1) for r in args.rename)
    with open(args.old) as f, open(args.new) as g:
        result = compare(json.load(f), json.load(g), renames, tuple(args.skip))
    for path, a, b in result["different"]:
        print(f"different: {path}: {a!r} -> {b!r}")
    for path in result["missing"]:
        print(f"missing in {args.new}: {path}")
    for path in result["only_new"]:
        print(f"only in {args.new}: {path}")
    print(f"{len(result['equal'])} leaves equal, {len(result['different'])} different, {len(result['missing'])} missing, "
          f"{len(result['only_new'])} only in the new file (timings skipped)")
    return 1 if result["different"] or result["missing"] else 0


if __name__ == "__main__":
    sys.exit(main())
