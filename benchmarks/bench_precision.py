"""Is bf16 autocast or channels_last faster on this CPU? (The presets use them only where measured faster.)

Times training steps of the quick preset's VQ and T2I models in fp32, bf16 autocast,
and (VQ) channels_last memory format.

    .venv/bin/python benchmarks/bench_precision.py
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from common import save

from synth2.config import quick
from synth2.models.t2i import T2IModel, masked_prediction_loss
from synth2.train.distributed import DistInfo
from synth2.train.loop import StepContext
from synth2.train.vq import VQTask


def vq_steps_per_s(cfg, precision: str, channels_last: bool, steps: int = 15) -> float:
    stage = dataclasses.replace(cfg.vq, channels_last=channels_last, train=dataclasses.replace(cfg.vq.train, precision=precision))
    images = np.random.default_rng(0).integers(0, 255, (512, cfg.world.resolution, cfg.world.resolution, 3), dtype=np.uint8)
    task = VQTask(stage, images, DistInfo(), 0)
    ctx = StepContext(stage.train, DistInfo())
    task.step(task.batch(0), 0, ctx)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        task.step(task.batch(step), step, ctx)
    return steps / (time.perf_counter() - start)


def t2i_steps_per_s(cfg, precision: str, steps: int = 10) -> float:
    torch.manual_seed(0)
    model = T2IModel(cfg.t2i.model, cfg.vq.model.codebook_size, (8, 8), cfg.lm.model.hidden)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    ctx = StepContext(dataclasses.replace(cfg.t2i.train, precision=precision), DistInfo())
    ids = torch.randint(0, cfg.vq.model.codebook_size, (cfg.t2i.train.batch_size, 64))
    text, mask = torch.randn(len(ids), 16, cfg.lm.model.hidden), torch.ones(len(ids), 16, dtype=torch.bool)

    def step():
        with ctx.autocast():
            loss, _, _ = masked_prediction_loss(model, ids, text, mask)
        ctx.update(loss, opt)

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - start)


def main(repeats: int = 3) -> None:
    cfg = quick(world_codes=False)  # joint codes: what BENCHMARKS.md measures (the presets on your own images)
    results = {}
    for name, fn in {
        "vq_fp32": lambda: vq_steps_per_s(cfg, "fp32", False),
        "vq_bf16": lambda: vq_steps_per_s(cfg, "bf16", False),
        "vq_fp32_channels_last": lambda: vq_steps_per_s(cfg, "fp32", True),
        "t2i_fp32": lambda: t2i_steps_per_s(cfg, "fp32"),
        "t2i_bf16": lambda: t2i_steps_per_s(cfg, "bf16"),
    }.items():
        results[name] = round(float(np.median([fn() for _ in range(repeats)])), 3)
    results["vq_bf16_over_fp32"] = round(results["vq_bf16"] / results["vq_fp32"], 3)
    results["vq_channels_last_over_fp32"] = round(results["vq_fp32_channels_last"] / results["vq_fp32"], 3)
    results["t2i_bf16_over_fp32"] = round(results["t2i_bf16"] / results["t2i_fp32"], 3)
    save("precision", results)


if __name__ == "__main__":
    main()
