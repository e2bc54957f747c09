"""Do two processes with half the torch threads each train more steps per second together than
one process with all of them? (`synth2 reproduce --jobs 2` builds a run's stages that way.)

For the quick preset's VQ, generator and VLM (cached tokens, embedding space), in one run and
alternating: steps/s of one process with every torch thread, alone; and of two processes with
half the threads each, training side by side from the same moment. Reports each model's
speed-up, (the two processes' steps/s summed) / (the one process's), median over repeats.

    cd benchmarks && ../.venv/bin/python bench_workers.py
"""

from __future__ import annotations

import multiprocessing

import numpy as np
import torch

from bench_precision import t2i_steps_per_s, vq_steps_per_s
from bench_vlm_space import build as build_vlm_inputs
from bench_vlm_space import steps_per_s as vlm_steps_per_s
from common import save

from synth2.config import quick

STEPS = {"vq": 60, "t2i": 60, "vlm": 60}


def measure(model: str, threads: int, barrier=None) -> float:
    """Steps/s of `model`'s training at `threads` torch threads; with a barrier, timing starts
    when the other process is ready too."""
    torch.set_num_threads(threads)
    cfg = quick(world_codes=False)  # joint codes: what BENCHMARKS.md measures (the presets on your own images)
    steps = STEPS[model]
    if model == "vlm":
        inputs = build_vlm_inputs(cfg)
        run = lambda: vlm_steps_per_s(cfg, *inputs, space="embedding", on_the_fly=False, steps=steps)  # noqa: E731
    elif model == "vq":
        run = lambda: vq_steps_per_s(cfg, "fp32", False, steps)  # noqa: E731
    else:
        run = lambda: t2i_steps_per_s(cfg, "fp32", steps)  # noqa: E731
    if barrier is not None:
        barrier.wait()
    return run()


def main(repeats: int = 3) -> None:
    threads = torch.get_num_threads()
    context = multiprocessing.get_context("spawn")
    results: dict = {"threads": threads}
    with context.Manager() as manager:
        for model in STEPS:
            alone, together = [], []
            for _ in range(repeats):
                # fresh processes each time, as reproduce's workers are: a process that has run
                # at one thread count is not a fair measure at another
                with context.Pool(1) as pool:
                    alone.append(pool.apply(measure, (model, threads)))
                barrier = manager.Barrier(2)
                with context.Pool(2) as pool:
                    together.append(sum(pool.starmap(measure, [(model, max(1, threads // 2), barrier)] * 2)))
            results[model] = {
                "alone_steps_per_s": [round(v, 3) for v in alone],
                "two_workers_steps_per_s": [round(v, 3) for v in together],
                "speedup": round(float(np.median(np.array(together) / np.array(alone))), 3),
            }
    save("workers", results)


if __name__ == "__main__":
    main()
