"""Declared outputs: an evaluator's metrics as one dataclass, each field with how reports show it.

A field made with `metric(row, pct)` is reported: `results.json` carries it and the report shows
it in the row named `row` (fields that share a row are shown together, "a / b"). A field made
with `detail()` is kept in the stage's own metrics.json only. Adding a metric is one field.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def metric(row: str, pct: bool = False) -> Any:
    """A reported metric (None where it does not apply, e.g. oracle metrics off the embedded world)."""
    return dataclasses.field(default=None, metadata={"row": row, "pct": pct})


def detail() -> Any:
    """A value kept in the stage's metrics.json but not reported."""
    return dataclasses.field(default=None, metadata={})


def reported(obj: Any) -> dict[str, Any]:
    """{name: value} of `obj`'s reported fields, in declaration order."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if "row" in f.metadata}


def rows(cls: type) -> list[tuple[str, list[dataclasses.Field]]]:
    """The report rows of a declared dataclass: (row label, its fields), in declaration order."""
    out: dict[str, list[dataclasses.Field]] = {}
    for f in dataclasses.fields(cls):
        if "row" in f.metadata:
            out.setdefault(f.metadata["row"], []).append(f)
    return list(out.items())


def field_names(cls: type) -> list[str]:
    """Every field of a declared dataclass: part of the fingerprint of the stage that computes it,
    so a new metric makes finished evaluations run again."""
    return [f.name for f in dataclasses.fields(cls)]
