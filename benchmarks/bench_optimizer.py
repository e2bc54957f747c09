"""What Muon costs a generator training step, against AdamW.

`t2i.optimizer: muon` updates the generator's hidden matrices with Muon (torch.optim.Muon: the
momentum made orthogonal by 5 Newton-Schulz iterations, a few small matrix products per matrix
per step) and the rest with AdamW. This times quick's generator both ways: one training step
(`masked_prediction_loss`, backward, the optimizers' steps) at batch 64, with random ids and text
states (the cost does not depend on them), one torch thread; median of 5 repeats, the two ways
taking turns so that the machine's drift falls on both.

    cd benchmarks && ../.venv/bin/python bench_optimizer.py
"""

from __future__ import annotations

import dataclasses
import math
import statistics

import torch
from bench_world_codes import BATCH, STEPS, TEXT_LENGTH
from common import save, timed

from synth2.config import quick
from synth2.models.t2i import T2IModel, masked_prediction_loss
from synth2.train.t2i import generator_optimizers


def step_timer(cfg, optimizer: str, factors: tuple[int, ...], grid: tuple[int, int], text_width: int):
    """A function timing STEPS training steps of quick's generator with `optimizer`."""
    torch.manual_seed(0)
    model = T2IModel(cfg.t2i.model, math.prod(factors), grid, text_width, code_factors=factors)
    optimizers = generator_optimizers(model, dataclasses.replace(cfg.t2i, optimizer=optimizer)).values()
    ids = torch.randint(0, math.prod(factors), (BATCH, grid[0] * grid[1]))
    text, text_mask = torch.randn(BATCH, TEXT_LENGTH, text_width), torch.ones(BATCH, TEXT_LENGTH, dtype=torch.bool)
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        loss, _, _ = masked_prediction_loss(model, ids, text, text_mask, generator)
        loss.backward()
        for each in optimizers:
            each.step()
            each.zero_grad()

    return lambda: timed(lambda: [step() for _ in range(STEPS)]) / STEPS


def main() -> None:
    torch.set_num_threads(1)
    cfg = quick()
    side = cfg.world.resolution // cfg.vq.model.downsample
    grid, text_width, factors = (side, side), cfg.lm.model.hidden, tuple(cfg.vq.model.product_codebooks)
    timers = {optimizer: step_timer(cfg, optimizer, factors, grid, text_width) for optimizer in ("adamw", "muon")}
    for timer in timers.values():  # warm-up
        timer()
    runs = [[timer() for timer in timers.values()] for _ in range(5)]
    medians = {name: 1000 * statistics.median(way) for name, way in zip(timers, zip(*runs))}
    for name, ms in medians.items():
        print(f"training step, {name}: {ms:.0f} ms")
    ratio = medians["muon"] / medians["adamw"]
    print(f"muon / adamw {ratio:.2f}x")
    save("optimizer", {"batch": BATCH, "ms": medians, "muon_over_adamw": ratio})


if __name__ == "__main__":
    main()
