"""What Muon costs a generator training step, against AdamW.

`t2i.optimizer: muon` updates the generator's hidden matrices with Muon (torch.optim.Muon: the
momentum made orthogonal by 5 Newton-Schulz iterations, a few small matrix products per matrix
per step) and the rest with AdamW. This times quick's generator both ways: one training step
(`masked_prediction_loss`, backward, the optimizers' steps) at batch 64, with random ids and text
states (the cost does not depend on them), one torch thread; median of 5 repeats of 20 steps,
the two ways taking turns so that the machine's drift falls on both.

    cd benchmarks && ../.venv/bin/python bench_optimizer.py
"""

from __future__ import annotations

import dataclasses

import torch
from bench_world_codes import BATCH, step_timer
from common import medians_taking_turns, save

from synth2.config import quick
from synth2.train.t2i import generator_optimizers


def main() -> None:
    torch.set_num_threads(1)
    cfg = quick()
    side = cfg.world.resolution // cfg.vq.model.downsample
    grid, text_width, factors = (side, side), cfg.lm.model.hidden, tuple(cfg.vq.model.product_codebooks)

    def optimizers(name: str):
        return lambda model: generator_optimizers(model, dataclasses.replace(cfg.t2i, optimizer=name)).values()

    timers = {name: step_timer(cfg.t2i.model, factors, grid, text_width, optimizers(name)) for name in ("adamw", "muon")}
    medians = {name: 1000 * seconds for name, seconds in medians_taking_turns(timers).items()}
    for name, ms in medians.items():
        print(f"training step, {name}: {ms:.0f} ms")
    ratio = medians["muon"] / medians["adamw"]
    print(f"muon / adamw {ratio:.2f}x")
    save("optimizer", {"batch": BATCH, "ms": medians, "muon_over_adamw": ratio})


if __name__ == "__main__":
    main()
