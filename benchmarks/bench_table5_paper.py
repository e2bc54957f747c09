"""Table 5 at the paper's shapes: VLM training steps/s on 16x16 tokens (embedding space) against
the same step on 256-px images (pixel space: the tokens decoded by the VQ-GAN and encoded again),
in one run. The paper reports 2.08 vs 1.66 steps/s, 1.25x.

Every model is the `paper` preset's architecture with random weights (speed does not depend on
them): the VQ-GAN (base 128, 2 residual blocks per level, 256 px -> 16x16, codebook 8192), the
frozen LM (24 layers, width 1024, 32k vocabulary), the perceiver (6 layers, width 1024, 64
latents). Only the batch is reduced to what a CPU steps through in seconds; the ratio is per
step, so it does not depend on the batch as long as both spaces use the same one. `--lm-layers`
and `--width` shrink the LM and the VLM for slower machines; the VQ is never shrunk.

    .venv/bin/python benchmarks/bench_table5_paper.py [--batch 2] [--steps 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch

from common import save, training_steps_per_s

from synth2.config import paper
from synth2.models.lm import FrozenLM, build_embedded_lm, train_tokenizer
from synth2.models.vlm import VLM
from synth2.models.vq import VQModel
from synth2.train.distributed import DistInfo
from synth2.train.vlm import SourceConfig, SourceData, VLMTask

PAPER = {"embedding_steps_per_s": 2.08, "pixel_steps_per_s": 1.66, "ratio": 1.25}
CAPTIONS = [f"This is an image of a {c} object on a plain background, seen from the front, number {i}." for i, c in
            enumerate(["red", "green", "blue", "yellow"] * 16)]


def build(lm_layers: int | None, width: int | None):
    cfg = paper()
    if lm_layers:
        cfg.lm.model.layers = lm_layers
    if width:
        cfg.vlm.model.width = width
    tokenizer = train_tokenizer(CAPTIONS * 4, 1000)
    torch.manual_seed(0)
    model = build_embedded_lm(cfg.lm.model, tokenizer)
    model.resize_token_embeddings(cfg.lm.model.vocab_size)  # the paper LM's 32k output layer, whatever this tokenizer's size
    lm = FrozenLM(model, tokenizer, cfg.lm.max_text_length)
    vq = VQModel(dataclasses.replace(cfg.vq.model, kmeans_init=False)).eval()
    grid = (cfg.world.resolution // cfg.vq.model.downsample,) * 2
    return cfg, lm, vq, grid


def steps_per_s(cfg, lm, vq, grid, space: str, batch: int, steps: int) -> float:
    torch.manual_seed(0)
    vlm = VLM(cfg.vlm.model, lm, vq, grid)
    tokens = np.random.default_rng(0).integers(0, cfg.vq.model.codebook_size, (len(CAPTIONS), 1, *grid))
    source = SourceData("llm", SourceConfig(kind="synthetic", data="llm"), CAPTIONS, tokens)
    stage = dataclasses.replace(cfg.vlm, train=dataclasses.replace(cfg.vlm.train, batch_size=batch, precision="fp32"))
    task = VLMTask(stage, vlm, [source], DistInfo(), 0, space=space)
    return training_steps_per_s(task, stage.train, steps)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lm-layers", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    args = parser.parse_args()
    cfg, lm, vq, grid = build(args.lm_layers, args.width)
    runs = {"embedding": [], "pixel": []}
    for _ in range(args.repeats):
        for space in runs:  # interleaved, so machine noise hits both alike
            runs[space].append(steps_per_s(cfg, lm, vq, grid, space, args.batch, args.steps))
    medians = {space: float(np.median(v)) for space, v in runs.items()}
    save("table5_paper", {
        "shapes": {"image_px": cfg.world.resolution, "tokens": list(grid), "codebook": cfg.vq.model.codebook_size,
                   "vq_params_m": round(sum(p.numel() for p in vq.parameters()) / 1e6, 1),
                   "lm_layers": cfg.lm.model.layers, "lm_width": cfg.lm.model.hidden, "vlm_width": cfg.vlm.model.width, "batch": args.batch},
        "embedding_steps_per_s": round(medians["embedding"], 4),
        "pixel_steps_per_s": round(medians["pixel"], 4),
        "ratio": round(medians["embedding"] / medians["pixel"], 3),
        "paper": PAPER,
        "runs": {k: [round(x, 4) for x in v] for k, v in runs.items()},
    })


if __name__ == "__main__":
    main()
