"""How much does the generator spend on what nothing reads: its head on tokens the loss or the decoding
step never reads, and, in decoding, the caption's side computed again at every step?

The loss reads the masked tokens only (on average 2/pi of them under the cosine schedule), and the
head, width x codebook, is the generator's widest layer. `masked_prediction_loss` runs the head on
the masked tokens alone (`T2IModel.forward(..., only_BN=mask)`); this compares one training step
(forward, backward, AdamW) of the quick preset's generator that way and with the head on every
token, the masked logits then picked out. Random ids and text states (the cost does not depend on
them), batch 64, one torch thread; median of 5 repeats of 20 steps each, the two ways taking
turns so that the machine's drift falls on both.

Decoding reads the unknown tokens only, and its caption is the same at every step, so
`sampler.sample` runs the head on the unknown tokens alone and computes the caption's side once
(`T2IModel.text_context`). The second measure is one image batch through 8 decoding steps of
quick's sampler, each step a forward at that step's share of unknown tokens with its argmax and
log-probabilities: as the sampler runs it, against every step whole (the caption's side again,
the head on every token). Batch 36, about Synth²'s synthetic share of a quick VLM batch; median
of 5 repeats of 10 batches.

    cd benchmarks && ../.venv/bin/python bench_t2i_head.py
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from common import DRAW_STEPS, medians_taking_turns, save, timed

from synth2.config import quick
from synth2.models.sampler import masked_after
from synth2.models.t2i import T2IModel, random_mask

STEPS, BATCH, TEXT_LENGTH = 20, 64, 24
DRAW_BATCH, DRAWS = 36, 10


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = quick(world_codes=False)  # joint codes: what BENCHMARKS.md measures (the presets on your own images)
    side = cfg.world.resolution // cfg.vq.model.downsample  # the quick VQ's token grid
    codes, grid, text_width = cfg.vq.model.codebook_size, (side, side), cfg.lm.model.hidden
    model = T2IModel(cfg.t2i.model, codes, grid, text_width)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, codes, (BATCH, grid[0] * grid[1]))
    text, text_mask = torch.randn(BATCH, TEXT_LENGTH, text_width), torch.ones(BATCH, TEXT_LENGTH, dtype=torch.bool)
    generator = torch.Generator().manual_seed(0)

    def step(masked_only: bool) -> None:
        mask = random_mask(BATCH, ids.shape[1], generator)
        inputs = ids.masked_fill(mask, model.mask_id)
        logits = model(inputs, text, text_mask, only_BN=mask) if masked_only else model(inputs, text, text_mask)[mask]
        F.cross_entropy(logits, ids[mask]).backward()
        optimizer.step()
        optimizer.zero_grad()

    def steps(masked_only: bool) -> float:
        return timed(lambda: [step(masked_only) for _ in range(STEPS)]) / STEPS

    every, masked = medians_taking_turns({"every token": lambda: steps(False), "masked only": lambda: steps(True)}).values()

    model.eval()
    N, decoding = ids.shape[1], dataclasses.replace(cfg.sampler, steps=DRAW_STEPS)
    # the unknown tokens before each decoding step: the schedule's count, at random places
    unknown_steps = [torch.rand(DRAW_BATCH, N, generator=generator).argsort(1).argsort(1) < masked_after(t, decoding.steps, N, decoding.schedule) for t in range(decoding.steps)]

    @torch.no_grad()
    def draw(as_the_sampler: bool) -> None:
        texts, masks = text[:DRAW_BATCH], text_mask[:DRAW_BATCH]
        context = model.text_context(texts, masks) if as_the_sampler else None
        for unknown in unknown_steps:
            inputs = ids[:DRAW_BATCH].masked_fill(unknown, model.mask_id)
            logits = model(inputs, texts, masks, only_BN=unknown, context=context) if as_the_sampler else model(inputs, texts, masks)
            chosen = logits.argmax(-1)
            F.log_softmax(logits, dim=-1).gather(-1, chosen[..., None])

    def draws(as_the_sampler: bool) -> float:
        return timed(lambda: [draw(as_the_sampler) for _ in range(DRAWS)]) / DRAWS

    whole_draw, sampler_draw = medians_taking_turns({"whole steps": lambda: draws(False), "as the sampler": lambda: draws(True)}).values()
    save("t2i_head", {
        "batch": BATCH, "every_token_ms": 1000 * every, "masked_only_ms": 1000 * masked, "every_over_masked": every / masked,
        "draw_batch": DRAW_BATCH, "draw_steps": decoding.steps, "draw_whole_steps_ms": 1000 * whole_draw,
        "draw_as_the_sampler_ms": 1000 * sampler_draw, "draw_whole_over_sampler": whole_draw / sampler_draw,
    })


if __name__ == "__main__":
    main()
