"""What sigmoid cross-attention costs a generator training step and a decoding batch.

`t2i.model.cross_attention: sigmoid` gates each caption word on its own and sums the values,
where softmax (`F.scaled_dot_product_attention`) averages them; the sigmoid path is written out
(scores, gates, a matrix product), since torch has no fused kernel for it. This times the
presets' generator both ways: one training step (`masked_prediction_loss`, backward, AdamW) at
batch 64, and one batch of 36 images through 8 decoding steps of quick's sampler
(`sampler.sample`), with random ids and text states (the cost does not depend on them), one torch
thread; median of 5 repeats, the two ways taking turns so that the machine's drift falls on both.

    cd benchmarks && ../.venv/bin/python bench_cross_attention.py
"""

from __future__ import annotations

import dataclasses
import math

import torch
from bench_world_codes import BATCH, step_timer
from common import DRAW_STEPS, medians_taking_turns, save, timed

from synth2.config import quick
from synth2.models.sampler import sample
from synth2.models.t2i import T2IModel

DRAW_BATCH, DRAWS, TEXT_LENGTH = 36, 5, 24


def draw_timer(head, factors: tuple[int, ...], grid: tuple[int, int], text_width: int, sampler):
    """A function timing DRAWS decoding batches of a generator with `head`."""
    torch.manual_seed(0)
    model = T2IModel(head, math.prod(factors), grid, text_width, code_factors=factors).eval()
    text, mask = torch.randn(DRAW_BATCH, TEXT_LENGTH, text_width), torch.ones(DRAW_BATCH, TEXT_LENGTH, dtype=torch.bool)
    empty, empty_mask = torch.randn(1, text_width), torch.ones(1, dtype=torch.bool)

    def draw() -> None:
        sample(model, text, mask, empty, empty_mask, sampler, torch.Generator().manual_seed(0))

    return lambda: timed(lambda: [draw() for _ in range(DRAWS)]) / DRAWS


def main() -> None:
    torch.set_num_threads(1)
    cfg = quick()
    side = cfg.world.resolution // cfg.vq.model.downsample
    grid, text_width, factors = (side, side), cfg.lm.model.hidden, tuple(cfg.vq.model.product_codebooks)
    heads = {weights: dataclasses.replace(cfg.t2i.model, cross_attention=weights) for weights in ("softmax", "sigmoid")}
    timers = {f"{kind}, {weights}": make(head, factors, grid, text_width, *extra)
              for weights, head in heads.items()
              for kind, make, extra in (("training step", step_timer, ()), ("decoding batch", draw_timer, (dataclasses.replace(cfg.sampler, steps=DRAW_STEPS),)))}
    medians = {name: 1000 * seconds for name, seconds in medians_taking_turns(timers).items()}
    for name, ms in medians.items():
        print(f"{name}: {ms:.0f} ms")
    ratios = {kind: medians[f"{kind}, sigmoid"] / medians[f"{kind}, softmax"] for kind in ("training step", "decoding batch")}
    for kind, ratio in ratios.items():
        print(f"{kind}: sigmoid / softmax {ratio:.2f}x")
    save("cross_attention", {"batch": {"training": BATCH, "decoding": DRAW_BATCH}, "ms": medians, "sigmoid_over_softmax": ratios})


if __name__ == "__main__":
    main()
