#!/usr/bin/env python3
"""How a product-code generator chooses the colour of a patch it is shown the structure of.

    python scripts/colour_probe.py RUN [--per-shape 16]

RUN's generator predicts product codes (`vq.model.quantizer=product`). The probe takes the
one-object scenes of `oracle_binding_*` (each shape in its held-out colours and in colours the
paired data showed it in, `--per-shape` per shape and group), renders and encodes them, masks
the object's cell, and runs the generator once with the caption and the structure part of
every masked patch given to a head that reads it (teacher forcing; an unchained head, or one
that chooses the colour first, predicts the colour from the position's state alone), so the
colour part is the only choice. Per group, for the masked patches the object shows in (their
true colour code is not the scene's background code) and for the background ones, it prints
the mean p(true colour code) and the share of patches whose most likely colour code is the
true one. The gap between held-out and
seen colours at object patches is the (shape, colour) prior the generator's colour prediction
has learnt, free of the sampler and of the other patches.

When the colour part is copied by a pointer (`t2i.model.pointer_parts`), four more columns say
where that prior enters: the weight the pointer gives its own slot (the position's prediction
from its state) rather than the caption's words; p(true colour code) from the own slot alone and
from the words alone (their weighted mixture, each word's codes as the position reweighs them,
CaptionPointer's `fit`); and from the same words' codes as the words give them, unweighed.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from synth2 import api
from synth2.encoding import encode_images
from synth2.eval.generator import binding_captions
from synth2.models.codes import split_ids
from synth2.report.build import markdown_table
from synth2.stages.data import world_spec
from synth2.stages.generator import finished_generator
from synth2.world.render import render

COLUMNS = ("group", "patches", "n", "p(true colour code)", "right")
POINTER_COLUMNS = ("own slot weight", "p(true) own slot", "p(true) words", "p(true) words unweighed")


def pointer_terms(pointer, state, own, caption, true):
    """Per position: the own slot's weight, and p(true code) from the own slot, from the words as
    the position reweighs their codes, and from the same words' codes as they are."""
    weights = pointer.attention(state, caption).exp()
    word_weights = weights[:, 1:, None] / (1 - weights[:, 0:1, None]).clamp_min(1e-12)
    own_true = own.float().softmax(-1).gather(-1, true[:, None])[:, 0]
    words = [(word_weights * pointer.word_codes(state, caption, reweigh).exp()).sum(1) for reweigh in (True, False)]
    return [weights[:, 0], own_true] + [codes.gather(-1, true[:, None])[:, 0] for codes in words]


@torch.no_grad()
def probe(gen, spec, seed: int, per_shape: int) -> list[list[str]]:
    model = gen.model.eval()
    h, w = gen.grid
    if h % spec.cfg.grid or w % spec.cfg.grid:
        raise SystemExit(f"the token grid {h}x{w} does not divide into the world's {spec.cfg.grid}x{spec.cfg.grid} cells")
    cell = h // spec.cfg.grid
    rows = []
    for group, (scenes, captions) in binding_captions(spec, spec.cfg.eval_styles[0], seed, per_shape).items():
        if not scenes:  # a world without held-out combinations
            continue
        images = np.stack([render(scene, spec.cfg.resolution, spec.cfg.grid) for scene in scenes])
        tokens = torch.from_numpy(encode_images(gen.vq, images, spec.cfg.resolution).astype(np.int64)).view(len(scenes), -1)
        masked = torch.zeros(len(scenes), h, w, dtype=torch.bool)
        for b, scene in enumerate(scenes):
            obj = scene.objects[0]
            masked[b, obj.row * cell : (obj.row + 1) * cell, obj.col * cell : (obj.col + 1) * cell] = True
        masked = masked.view(len(scenes), -1)
        parts = split_ids(tokens, model.code_factors)
        true = [part[masked] for part in parts]
        states, text_mask = gen.lm.encode_texts([gen.prompt(c) for c in captions], model.cfg.text_layer)
        pointer = model.pointers.get(len(parts) - 1)
        seen = []  # the colour pointer's inputs, when there is one
        hook = pointer.register_forward_hook(lambda _, inputs, __: seen.append(inputs)) if pointer is not None else None
        logits, _ = model(tokens.masked_fill(masked, model.mask_id), states, text_mask, choose=lambda part, logits: true[part], only_BN=masked)
        measures = [logits[-1].float().softmax(-1).gather(-1, true[-1][:, None])[:, 0], (logits[-1].argmax(-1) == true[-1]).float()]
        if hook is not None:
            hook.remove()
            measures += pointer_terms(pointer, *seen[0], true[-1])
        # a scene's background code: the most common colour code among its patches outside the cell
        background = torch.stack([colours[~cell].mode().values for colours, cell in zip(parts[-1], masked)])
        shows_object = true[-1] != background[masked.nonzero(as_tuple=True)[0]]
        for name, chosen in (("object", shows_object), ("background", ~shows_object)):
            means = [f"{x[chosen].mean().item():.2f}" for x in measures]
            rows.append([f"{group} colours", name, str(int(chosen.sum()))] + means)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a run whose generator predicts product codes (`vq.model.quantizer=product`)")
    parser.add_argument("--per-shape", type=int, default=16, help="one-object scenes per shape and group")
    args = parser.parse_args(argv)
    run = api.open_run(args.run)
    cfg = run.config
    spec = world_spec(run)
    if spec is None:
        raise SystemExit(f"{args.run}: not an embedded-world run; the probe needs the world's scenes")
    gen, _ = finished_generator(run)
    if len(gen.model.code_factors) < 2:
        raise SystemExit(f"{args.run}: its generator predicts joint codes; the probe needs product codes (vq.model.quantizer=product)")
    columns = COLUMNS + (POINTER_COLUMNS if len(gen.model.code_factors) - 1 in gen.model.pointers else ())
    print(markdown_table(list(columns), probe(gen, spec, cfg.seed, args.per_shape)))


if __name__ == "__main__":
    main()
