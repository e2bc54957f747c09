"""The caption diversity stage (Tables 3 and 8, Figure 5): the run's caption corpora co-clustered.

It reads only the corpora and the frozen LM, so `reproduce`'s workers build it while the
tokenizer trains, instead of the report waiting for it after the last arm.
"""

from __future__ import annotations

import json
from pathlib import Path

from synth2.data.arrays import load_pairs
from synth2.eval.diversity import diversity, embed_with_lm, embed_with_world_concepts, plot_diversity
from synth2.run import Run, StageResult
from synth2.stages.captions import caption_sources, captions
from synth2.stages.data import datasets, world_spec
from synth2.stages.models import frozen_lm, lm


def caption_diversity(run: Run) -> StageResult:
    """Concentration and entropy of the paired captions, the LLM's and each text-only corpus, by two
    embedders: the frozen LM's mean-pooled states (the paper's kind of measure) and, on the embedded
    world, the shapes and colours each caption mentions (content only). Writes `diversity.json`
    (one result per embedder) and one Figure 5 plot per embedder."""
    cfg = run.config
    data, inputs = datasets(run)
    inputs = inputs + [captions(run), lm(run)]

    def build(directory: Path) -> dict:
        corpora = {"paired": load_pairs(data["paired"], images=False).captions, **caption_sources(run)}
        frozen = frozen_lm(run)
        results = {"lm": diversity(corpora, lambda c: embed_with_lm(frozen, c), cfg.diversity)}
        spec = world_spec(run)
        if spec is not None:
            results["concepts"] = diversity(corpora, lambda c: embed_with_world_concepts(c, spec.shapes, spec.colours), cfg.diversity)
        for name, result in results.items():
            plot_diversity(result, directory / f"diversity_{name}.png")
        (directory / "diversity.json").write_text(json.dumps(results, indent=2))
        return {"results": str(directory / "diversity.json")}

    return run.stage("diversity", {"diversity": cfg.diversity}, inputs, build)
