"""Counting what a long run skipped or converted, and stopping when too much is bad.

Every stage that reads user data keeps a `QualityReport`: good records are kept,
bad ones are counted by reason, and the run aborts with a message naming the worst
reasons only when the bad share passes `max_bad_fraction`.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from synth2.files import atomic_write_text


class TooManyBadRecords(RuntimeError):
    pass


@dataclass
class QualityReport:
    source: str = ""
    max_bad_fraction: float = 0.5
    # Do not judge the bad share before this many records were seen.
    min_records: int = 50
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    converted: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def keep(self) -> None:
        self.kept += 1

    def skip(self, reason: str, record: str = "") -> None:
        self.skipped[reason] += 1
        if record and reason not in self.examples:
            self.examples[reason] = record
        self.check()

    def convert(self, reason: str) -> None:
        self.converted[reason] += 1

    @property
    def total(self) -> int:
        return self.kept + sum(self.skipped.values())

    @property
    def bad_fraction(self) -> float:
        return sum(self.skipped.values()) / max(self.total, 1)

    def check(self, final: bool = False) -> None:
        if self.total < self.min_records and not final:
            return
        if self.total and self.bad_fraction > self.max_bad_fraction:
            worst = ", ".join(
                f"{reason}: {n} (e.g. {self.examples.get(reason, '?')})" for reason, n in self.skipped.most_common(3)
            )
            raise TooManyBadRecords(
                f"{self.source or 'input'}: {sum(self.skipped.values())} of {self.total} records are bad "
                f"({self.bad_fraction:.0%} > max_bad_fraction {self.max_bad_fraction:.0%}); worst reasons: {worst}"
            )

    def to_json(self) -> dict:
        return {
            "kept": self.kept,
            "skipped": dict(sorted(self.skipped.items())),
            "converted": dict(sorted(self.converted.items())),
            "examples": self.examples,
        }

    def write(self, path: str | Path, stopped: str = "") -> None:
        """`stopped`: why the run stopped early (the report still says what it found)."""
        data = self.to_json() | ({"stopped": stopped} if stopped else {})
        atomic_write_text(path, json.dumps(data, indent=2) + "\n")
