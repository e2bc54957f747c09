"""Shared helpers: repeat a measurement, report the median, save JSON under benchmarks/results/."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from synth2.hardware import describe as describe_hardware

RESULTS = Path(__file__).parent / "results"


def median_of(fn, repeats: int) -> tuple[float, list[float]]:
    values = [fn() for _ in range(repeats)]
    return statistics.median(values), values


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def save(name: str, payload: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": describe_hardware(), **payload}, indent=2))
    print(json.dumps(payload, indent=2))
    return path
