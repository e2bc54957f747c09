"""GenPair's two control sources, which only the embedded world can make (the paper could not):

- `llm_true`: the LLM captions with the true rendered images of the scenes they describe, VQ
  encoded: GenPair with a perfect generator, its upper bound;
- `llm_blind`: the same captions with one uninformative image for all of them, the VQ tokens of
  the mean paired image: what the captions alone give.

Between them they split GenPair's gain into "the text" and "the synthetic images".
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from synth2.data.arrays import load_pairs
from synth2.encoding import encode_images
from synth2.run import Run, StageResult
from synth2.stages.captions import captions, llm_captions_and_scenes
from synth2.stages.data import datasets, world_spec
from synth2.stages.models import load_vq, vq
from synth2.world.render import Renderer

CONTROL_SOURCES = ("llm_true", "llm_blind")


def genpair_controls(run: Run) -> StageResult:
    """Token grids (N, h, w) for `llm_true` and `llm_blind`, in the order of the LLM captions: one
    fixed image per caption, which the VLM reads as it reads real pairs."""
    cfg = run.config
    spec = world_spec(run)
    if spec is None or cfg.captions.backend != "world":
        raise ValueError("the GenPair-true and GenPair-blind arms need the embedded world and its LLM (captions.backend: world)")
    data, inputs = datasets(run)
    caps, v = captions(run), vq(run)

    def build(directory: Path) -> dict:
        records, scenes = llm_captions_and_scenes(run)
        missing = sum(scene is None for scene in scenes)
        if missing:
            raise ValueError(f"{caps['path']}: {missing} of {len(records)} captions are not the world LLM's; their scenes are unknown")
        model = load_vq(run)
        render = Renderer(spec)
        true_tokens = encode_images(model, np.stack([render(scene) for scene in scenes]), cfg.world.resolution)
        paired = load_pairs(data["paired"], resolution=cfg.world.resolution).images
        mean_image = paired.mean(axis=0).round().astype(np.uint8)[None]
        blind_tokens = np.repeat(encode_images(model, mean_image, cfg.world.resolution), len(records), axis=0)
        out = {}
        for name, tokens in (("llm_true", true_tokens), ("llm_blind", blind_tokens)):
            np.save(directory / f"{name}.tokens.npy", tokens.astype(np.int64))
            (directory / f"{name}.captions.json").write_text(json.dumps([r["caption"] for r in records]))
            out[name] = {"tokens": str(directory / f"{name}.tokens.npy"), "captions": str(directory / f"{name}.captions.json"), "count": len(records)}
        return out

    return run.stage("controls", {"resolution": cfg.world.resolution, "seed": cfg.seed}, inputs + [caps, v], build)
