"""What the world's codes cost a generator training step.

On the embedded world the presets use layered product codes (structure, background colour, object
colour) whose structure and colour the generator copies from caption words (`use_world_codes`);
on the user's images, joint codes with one head over them. This times one training step
(`masked_prediction_loss`, backward, AdamW) of quick's generator three ways: on joint codes
(`quick(world_codes=False)`), on the world's codes with a chained head and no pointers, and as the
presets run it (both pointers, the rank-2 colour fit). Random ids and text states (the cost does
not depend on them), batch 64, one torch thread; median of 5 repeats of 20 steps each, the three
ways taking turns so that the machine's drift falls on all of them.

    cd benchmarks && ../.venv/bin/python bench_world_codes.py
"""

from __future__ import annotations

import dataclasses
import math

import torch
from common import medians_taking_turns, save, timed

from synth2.config import quick
from synth2.models.t2i import T2IModel, masked_prediction_loss

STEPS, BATCH, TEXT_LENGTH = 20, 64, 24


def step_timer(head, factors: tuple[int, ...], grid: tuple[int, int], text_width: int, optimizers=None):
    """A function timing STEPS training steps of a generator with `head` over codes of `factors`;
    `optimizers(model)` gives the optimizers that update it (None: AdamW over every weight)."""
    torch.manual_seed(0)
    model = T2IModel(head, math.prod(factors), grid, text_width, code_factors=factors)
    updates = list(optimizers(model)) if optimizers else [torch.optim.AdamW(model.parameters(), lr=1e-3)]
    ids = torch.randint(0, math.prod(factors), (BATCH, grid[0] * grid[1]))
    text, text_mask = torch.randn(BATCH, TEXT_LENGTH, text_width), torch.ones(BATCH, TEXT_LENGTH, dtype=torch.bool)
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        loss, _, _ = masked_prediction_loss(model, ids, text, text_mask, generator)
        loss.backward()
        for optimizer in updates:
            optimizer.step()
            optimizer.zero_grad()

    return lambda: timed(lambda: [step() for _ in range(STEPS)]) / STEPS


def main() -> None:
    torch.set_num_threads(1)
    joint, world = quick(world_codes=False), quick()
    side = world.world.resolution // world.vq.model.downsample
    grid, text_width = (side, side), world.lm.model.hidden
    world_factors = tuple(world.vq.model.product_codebooks)
    chained = dataclasses.replace(world.t2i.model, pointer_parts=[], pointer_fit_rank={}, structure_first=False)
    ways = {
        "joint codes": step_timer(joint.t2i.model, (joint.vq.model.codebook_size,), grid, text_width),
        "world codes, chained head": step_timer(chained, world_factors, grid, text_width),
        "world codes, both pointers (the presets)": step_timer(world.t2i.model, world_factors, grid, text_width),
    }
    medians = medians_taking_turns(ways)
    for name, seconds in medians.items():
        print(f"{name}: {1000 * seconds:.0f} ms/step")
    pointers, base = medians["world codes, both pointers (the presets)"], medians["joint codes"]
    print(f"the presets' step / joint codes' step: {pointers / base:.2f}x")
    save("world_codes", {"batch": BATCH, "ms_per_step": {k: 1000 * v for k, v in medians.items()}, "presets_over_joint": pointers / base})


if __name__ == "__main__":
    main()
