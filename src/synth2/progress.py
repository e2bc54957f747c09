"""Progress bars with ETA (rich) and JSON-lines metrics, for every long step.

Bars go to stderr; set SYNTH2_PROGRESS=0 to silence them (tests do). Metrics are
appended to `metrics.jsonl`, one JSON object per line, by rank 0 only.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from synth2.files import atomic_write_text

T = TypeVar("T")

console = Console(stderr=True)


def warn(message: str) -> None:
    """A warning that changes results, on the console."""
    console.log(f"[yellow]warning:[/yellow] {message}", markup=True, highlight=False)


class ConsoleWarnings(logging.Handler):
    """Warnings that change results (a loss turned off, a stage recomputed) on the console, not
    only in a stage's log.txt."""

    def __init__(self):
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        warn(record.getMessage())


def progress_enabled() -> bool:
    return os.environ.get("SYNTH2_PROGRESS", "1") != "0" and is_rank_zero()


def is_rank_zero() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


class Bar:
    """One progress bar: `advance(n, **stats)` moves it and shows the latest stats."""

    def __init__(self, progress: Progress | None, task: Any):
        self._progress, self._task = progress, task

    def advance(self, n: int = 1, **stats: Any) -> None:
        if self._progress is None:
            return
        text = "  ".join(f"{k}={_fmt(v)}" for k, v in stats.items())
        self._progress.update(self._task, advance=n, stats=text)


@contextmanager
def progress_bar(description: str, total: int | None, completed: int = 0) -> Iterator[Bar]:
    if not progress_enabled():
        yield Bar(None, None)
        return
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[stats]}"),
    ]
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total, completed=completed, stats="")
        yield Bar(progress, task)


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress_bar(description, total) as bar:
        for item in items:
            yield item
            bar.advance()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class MetricsWriter:
    """Appends `{"step": .., "time": .., **metrics}` lines to a metrics.jsonl file (rank 0 only)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.enabled = is_rank_zero()
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, step: int | None = None, **metrics: Any) -> None:
        if not self.enabled:
            return
        for name, value in metrics.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise FloatingPointError(f"{name} is {value} at step {step} ({self.path})")
        record = {"step": step, "time": round(time.time(), 3), **metrics}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop lines past `step` (a resumed run rewrites them)."""
        if not self.enabled or not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a crash
                continue
            if (row.get("step") or 0) <= step:
                kept.append(line)
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))


def read_metrics(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
