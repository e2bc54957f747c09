#!/usr/bin/env python3
"""What GenPair-pixel's round trip keeps: tokens decoded to pixels and encoded again.

    python scripts/reencode_probe.py RUN [--split a]

Table 5's pixel-space arm decodes the generator's tokens with the VQ and encodes the pixels again
(`train/vlm.py`). A decoded image is not a clean render, and a tokenizer that reads the image as
the world's plain-background layers (`vq.model.colour_input: layers`) reads it as one. This takes
the eval split's tokens of RUN (its `encode` stage), decodes them, encodes the pixels again and
decodes those, and prints the share of tokens (and of each product-code part) the round trip keeps,
and the oracle's accuracy on the images decoded before and after it. The VQ's `token_stability`
(`eval/vq.py`) measures the round trip on uint8 reconstructions; this one keeps the decoded pixels
as GenPair-pixel does (float, clamped, not rounded), and splits the share by part.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from synth2 import api
from synth2.data.arrays import load_pairs
from synth2.models.codes import split_ids
from synth2.models.vq import to_uint8
from synth2.report.build import markdown_table
from synth2.stages.data import world_spec
from synth2.stages.generator import finished_generator
from synth2.world.oracle import Oracle, scene_agreement
from synth2.world.scene import Scene


@torch.no_grad()
def round_trip(vq, tokens_Bhw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(the tokens decoded, the tokens after decoding and encoding again, those decoded): pixels in [-1, 1]."""
    decoded = vq.decode(tokens_Bhw).clamp(-1, 1)
    again = vq.encode(decoded)
    return decoded, again, vq.decode(again).clamp(-1, 1)


def probe(vq, oracle: Oracle, tokens_Bhw: torch.Tensor, scenes: list[Scene]) -> list[list[str]]:
    decoded, again, decoded_again = round_trip(vq, tokens_Bhw)
    rows = [["tokens kept", f"{(again == tokens_Bhw).float().mean().item():.3f}"]]
    factors = vq.code_factors
    if len(factors) > 1:
        for i, (before, after) in enumerate(zip(split_ids(tokens_Bhw, factors), split_ids(again, factors))):
            rows.append([f"part {i} ({factors[i]} codes) kept", f"{(before == after).float().mean().item():.3f}"])
    for name, pixels in (("oracle, decoded", decoded), ("oracle, decoded, encoded and decoded again", decoded_again)):
        right = [scene_agreement(scene, oracle.parse(image))["objects"] for scene, image in zip(scenes, to_uint8(pixels).cpu().numpy())]
        rows.append([name, f"{np.mean(right):.3f}"])
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a run whose VQ and eval tokens are finished (`synth2 train t2i` builds them)")
    parser.add_argument("--split", default="a", choices=["a", "b"], help="the eval split")
    args = parser.parse_args(argv)
    run = api.open_run(args.run)
    spec = world_spec(run)
    if spec is None:
        raise SystemExit(f"{args.run}: not an embedded-world run; the oracle needs the world's scenes")
    gen, done = finished_generator(run, also=("encode",))
    pairs = load_pairs(done["encode"]["splits"][f"eval_{args.split}"], images=False, tokens=True, limit=run.config.eval.max_images)
    scenes = [Scene.from_json(meta["scene"]) for meta in pairs.meta]
    tokens = torch.from_numpy(np.asarray(pairs.tokens).astype(np.int64))
    print(markdown_table([f"eval {args.split}, {len(scenes)} images", "share"], probe(gen.vq.eval(), Oracle(spec), tokens, scenes)))


if __name__ == "__main__":
    main()
