"""How well a product-code tokenizer factors structure from colour, on the embedded world.

Renders every single object (shape x colour x size x background) in the top-left cell and
encodes it with a trained product-code VQ (`vq.model.quantizer=product`), then reports:

- structure agreement: per (shape, size, background) and token patch, the share of the
  colours whose structure code is that patch's most common one (1 = colour-free structure);
- the mutual information between the structure part and the colour, and between the colour
  parts (every part after the first, as one code) and the shape (nats);
- colour codes per colour: per (colour, background), how many distinct colour codes the
  objects' patches take (those whose structure code is not an empty patch's); 1 when a colour
  word could name its code (`vq.model.colour_input=layers`);
- swap decodes: the structure codes of a shape drawn in one colour with the colour codes of
  the same shape drawn in another, decoded and read by the world's oracle; the share read as
  the shape in the second colour is what a generator composing parts could get.

    python scripts/product_codes_probe.py RUN/vq/model
"""

from __future__ import annotations

import itertools
import math
import sys
from collections import defaultdict

import numpy as np
import torch
from sklearn.metrics import mutual_info_score

from synth2.models.vq import to_model_pixels, to_uint8
from synth2.stages.artifacts import load_vq
from synth2.world.oracle import Oracle
from synth2.world.render import render
from synth2.world.scene import Obj, Scene, WorldConfig, WorldSpec


def main(model_dir: str) -> None:
    vq = load_vq(model_dir)
    if len(vq.code_factors) < 2:
        raise SystemExit(f"{model_dir}: not a product-code VQ (code factors {vq.code_factors})")
    world = WorldConfig()
    spec = WorldSpec(world, 0)
    cell = world.resolution // world.grid // vq.cfg.downsample  # token patches per cell side
    keys = list(itertools.product(world.shapes, world.colours, world.sizes, world.backgrounds))
    images = np.stack([render(Scene((Obj(s, c, z, 0, 0),), bg), world.resolution, world.grid) for s, c, z, bg in keys])
    with torch.no_grad():
        full = vq.encode(to_model_pixels(torch.from_numpy(images)))
    ids = full[:, :cell, :cell].reshape(len(keys), -1)
    structure = vq.quantizer.split_ids(ids)[0].numpy()
    empty = int(vq.quantizer.split_ids(full[:, -1, -1])[0].mode().values)  # the bottom-right cell is empty
    colour = (ids % math.prod(vq.code_factors[1:])).numpy()  # the parts after the structure, as one code

    by_form, by_colour = defaultdict(list), defaultdict(list)
    for k, (s, c, z, bg) in enumerate(keys):
        by_form[(s, z, bg)].append(k)
        by_colour[(c, bg)].append(k)
    agreement = [np.unique(structure[ks][:, p], return_counts=True)[1].max() / len(ks) for ks in by_form.values() for p in range(cell * cell)]
    mi_structure = np.mean([mutual_info_score(np.repeat([keys[k][1] for k in ks], cell * cell), structure[ks].ravel()) for ks in by_form.values()])
    mi_colour = np.mean([mutual_info_score(np.repeat([keys[k][0] for k in ks], cell * cell), colour[ks].ravel()) for ks in by_colour.values()])
    print(f"structure agreement across colours: {np.mean(agreement):.1%}")
    print(f"MI(structure code; colour | shape, size, background): {mi_structure:.3f} nats")
    print(f"MI(colour code; shape | colour, background): {mi_colour:.3f} nats")
    per_colour = [len(np.unique(colour[ks][structure[ks] != empty])) for ks in by_colour.values()]
    print(f"colour codes per colour at the objects' patches: {np.mean(per_colour):.1f} (mean), {max(per_colour)} (most)")

    oracle, right, total = Oracle(spec), 0, 0
    index = {key: k for k, key in enumerate(keys)}
    for s, c, other, z, bg in itertools.product(world.shapes, world.colours, world.colours, world.sizes, world.backgrounds):
        if c == other:
            continue
        full = vq.encode(to_model_pixels(torch.from_numpy(images[[index[(s, other, z, bg)], index[(s, c, z, bg)]]])))
        structure_parts, *colour_parts = vq.quantizer.split_ids(full)  # image 0 in `other`, image 1 in c
        swapped = vq.quantizer.join_ids([structure_parts[:1]] + [part[1:] for part in colour_parts])
        parsed = oracle.parse(to_uint8(vq.decode(swapped))[0].numpy())
        right += [(o.shape, o.colour) for o in parsed.objects] == [(s, c)]
        total += 1
    print(f"swap decodes read right: {right / total:.1%} of {total}")


if __name__ == "__main__":
    main(sys.argv[1])
