"""Steps/s of synthetic-pair VLM training in embedding space vs pixel space, in one run
(paper Table 5: 2.08 vs 1.66 steps/s, 1.25x).

Every step trains on a batch of synthetic pairs. Embedding space feeds the
generator's tokens straight to the VLM; pixel space decodes them with the VQ and
encodes the pixels again, as a pipeline that renders images would. Measured both
with tokens generated on the fly (the paper's setting) and from the synthesis cache.
Models are built from the quick preset's configs (speed does not depend on weights).

    .venv/bin/python benchmarks/bench_vlm_space.py
"""

from __future__ import annotations


import numpy as np
import torch

from common import save, training_steps_per_s

from synth2.config import quick
from synth2.models.lm import FrozenLM, build_embedded_lm, train_tokenizer
from synth2.models.sampler import SamplerConfig
from synth2.models.t2i import T2IModel
from synth2.models.vlm import VLM
from synth2.models.vq import VQModel
from synth2.synthesis import TokenGenerator
from synth2.train.distributed import DistInfo
from synth2.train.vlm import SourceConfig, SourceData, VLMTask
from synth2.world.annotate import annotators
from synth2.world.scene import WorldSpec, sample_scene



def build(cfg):
    spec = WorldSpec(cfg.world, 0)
    rng = np.random.default_rng(0)
    people = annotators("llm", 4, 0, cfg.world.grid)
    captions = [people[i % 4].describe(sample_scene(rng, spec), rng) for i in range(512)]
    tokenizer = train_tokenizer(captions, cfg.lm.model.vocab_size)
    torch.manual_seed(0)
    lm = FrozenLM(build_embedded_lm(cfg.lm.model, tokenizer), tokenizer, cfg.lm.max_text_length)
    vq = VQModel(cfg.vq.model).eval()
    grid = (cfg.world.resolution // cfg.vq.model.downsample,) * 2
    t2i = T2IModel(cfg.t2i.model, cfg.vq.model.codebook_size, grid, lm.hidden_size).eval()
    generator = TokenGenerator(lm, t2i, SamplerConfig(steps=cfg.sampler.steps, guidance=cfg.sampler.guidance), vq)
    return lm, vq, grid, generator, captions


def steps_per_s(cfg, lm, vq, grid, generator, captions, space: str, on_the_fly: bool, steps: int) -> float:
    torch.manual_seed(0)
    vlm = VLM(cfg.vlm.model, lm, vq, grid)
    tokens = None if on_the_fly else np.random.default_rng(0).integers(0, cfg.vq.model.codebook_size, (len(captions), 1, *grid))
    source = SourceData("llm", SourceConfig(kind="synthetic", data="llm"), captions, tokens)
    stage = cfg.vlm
    task = VLMTask(stage, vlm, [source], DistInfo(), 0, generator if on_the_fly else None, space=space)
    return training_steps_per_s(task, stage.train, steps)


def main(repeats: int = 3) -> None:
    cfg = quick(world_codes=False)  # joint codes: what BENCHMARKS.md measures (the presets on your own images)
    parts = build(cfg)
    results = {"batch": cfg.vlm.train.batch_size, "sampler_steps": cfg.sampler.steps, "tokens": parts[2]}
    for mode, on_the_fly, steps in (("on_the_fly", True, 3), ("cache", False, 10)):
        runs = {"embedding": [], "pixel": []}
        for _ in range(repeats):
            for space in ("embedding", "pixel"):  # interleaved, so machine noise hits both alike
                runs[space].append(steps_per_s(cfg, *parts, space=space, on_the_fly=on_the_fly, steps=steps))
        medians = {space: float(np.median(v)) for space, v in runs.items()}
        results[mode] = {
            "embedding_steps_per_s": round(medians["embedding"], 3),
            "pixel_steps_per_s": round(medians["pixel"], 3),
            "ratio": round(medians["embedding"] / medians["pixel"], 3),
            "runs": {k: [round(x, 3) for x in v] for k, v in runs.items()},
        }
    save("vlm_space", results)


if __name__ == "__main__":
    main()
