"""Shared helpers: repeat a measurement, report the median, save JSON under benchmarks/results/."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from synth2.hardware import describe as describe_hardware

RESULTS = Path(__file__).parent / "results"
# the decoding steps the benchmarks that time a decoding batch use, fixed so that BENCHMARKS.md's
# figures stay comparable whatever the presets decode with (a batch's cost grows with the steps)
DRAW_STEPS = 8


def median_of(fn, repeats: int) -> tuple[float, list[float]]:
    values = [fn() for _ in range(repeats)]
    return statistics.median(values), values


def medians_taking_turns(timers: dict, repeats: int = 5) -> dict[str, float]:
    """Each timer's median over `repeats` rounds, after a warm-up round; within a round the timers
    run one after another, so that the machine's drift falls on all of them."""
    for timer in timers.values():
        timer()
    rounds = [[timer() for timer in timers.values()] for _ in range(repeats)]
    return {name: statistics.median(times) for name, times in zip(timers, zip(*rounds))}


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def training_steps_per_s(task, train_cfg, steps: int) -> float:
    """Steps/s of a training task's `steps` steps after one warm-up step, on one process."""
    from synth2.train.distributed import DistInfo
    from synth2.train.loop import StepContext

    ctx = StepContext(train_cfg, DistInfo())
    task.step(task.batch(0), 0, ctx)  # warm-up
    start = time.perf_counter()
    for step in range(1, steps + 1):
        task.step(task.batch(step), step, ctx)
        ctx.end_step()
    return steps / (time.perf_counter() - start)


def save(name: str, payload: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": describe_hardware(), **payload}, indent=2))
    print(json.dumps(payload, indent=2))
    return path
