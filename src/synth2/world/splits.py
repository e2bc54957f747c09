"""Build the embedded world's splits and write them as shards plus `world.json`.

Splits (paper analogue in brackets; docs/world.md):
- `paired` [CCv2]: long-tailed shape classes, never shows the held-out (shape, colour)
  combinations; one caption per image in `world.paired_style` (web alt-text).
- text-only corpora, e.g. `ltip`, `webli` [LTIP, WebLI]: their own style and skew,
  held-out combinations allowed; captions in `captions.jsonl`, and shards with the
  true images so that "Gold" and "extra real pairs" can be run.
- `eval_a`, `eval_b` [COCO, Flickr30k]: `world.references` references per image by annotators
  who wrote no other caption, in the eval styles; A follows a skew of its own, B is balanced;
  both show the held-out combinations. Each eval image also carries a `complete_caption` in its
  split's style that names every object (what the generator is evaluated on).
- `images` [the broad image data a VQ-GAN is pre-trained on], when `world.images` > 0:
  balanced, every combination; only its pixels are used (to pre-train the VQ).
- `lm_text/captions.jsonl` [the web text a pre-trained LM has read], no images: scenes of its
  own in every style of `world.lm_text_styles`, by annotators of its own.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synth2.configtools import to_dict
from synth2.data.corpus import write_captions
from synth2.data.shards import Pair, ShardWriter
from synth2.progress import progress_bar
from synth2.world.annotate import Annotator, annotators
from synth2.world.render import Renderer
from synth2.world.scene import Scene, WorldConfig, WorldSpec, sample_scene

EVAL_SPLITS = ("eval_a", "eval_b")
VQ_IMAGES_SPLIT = "images"
LM_TEXT = "lm_text"


@dataclass(frozen=True)
class SplitPlan:
    name: str
    size: int
    style: str
    references: int
    shape_probs: np.ndarray | None
    exclude_heldout: bool
    stream: int  # seeds this split's random stream


def plan_splits(spec: WorldSpec) -> list[SplitPlan]:
    cfg = spec.cfg
    plans = [SplitPlan("paired", cfg.paired, cfg.paired_style, 1, spec.zipf_probs(cfg.skew, 1), True, 1)]
    for i, (name, corpus) in enumerate(sorted(cfg.text_only.items())):
        if name in ("paired", VQ_IMAGES_SPLIT, LM_TEXT, *EVAL_SPLITS):
            raise ValueError(f"world.text_only may not be named {name!r}")
        plans.append(SplitPlan(name, corpus.size, corpus.style, 1, spec.zipf_probs(corpus.skew, 10 + i), False, 10 + i))
    if len(cfg.eval_styles) != len(EVAL_SPLITS):
        raise ValueError(f"world.eval_styles needs {len(EVAL_SPLITS)} styles, got {cfg.eval_styles}")
    eval_probs = (spec.zipf_probs(cfg.eval_skew, 100) if cfg.eval_skew else None, None)
    for i, (name, style, probs) in enumerate(zip(EVAL_SPLITS, cfg.eval_styles, eval_probs)):
        plans.append(SplitPlan(name, cfg.eval, style, cfg.references, probs, False, 100 + i))
    if cfg.images:
        plans.append(SplitPlan(VQ_IMAGES_SPLIT, cfg.images, cfg.paired_style, 1, None, False, 200))
    return plans


def iter_split(spec: WorldSpec, plan: SplitPlan, seed: int):
    """Yield (key, scene, captions, writers) for one split, deterministically from the seed;
    `writers` are the annotators' ids (seeds), one per caption."""
    rng = np.random.default_rng([seed, plan.stream])
    people = annotators(plan.style, spec.cfg.annotators_per_style, seed * 7919 + plan.stream, spec.cfg.grid)
    careful = Annotator(plan.style, seed * 7919 + plan.stream + 555, spec.cfg.grid, omits=False)
    for i in range(plan.size):
        scene = sample_scene(rng, spec, plan.shape_probs, plan.exclude_heldout)
        if plan.references == 1:
            chosen = [int(rng.integers(len(people)))]  # much cheaper than choice(replace=False)
        else:
            chosen = rng.permutation(len(people))[: plan.references].tolist()
        captions = [people[j].describe(scene, rng) for j in chosen]
        writers = [people[j].seed for j in chosen]
        if plan.references > 1:
            # a caption naming every object, in the split's style: what the generator is tested on
            captions.append(careful.describe(scene, rng))
            writers.append(careful.seed)
        yield f"{plan.name}_{i:07d}", scene, captions, writers


def build_world(cfg: WorldConfig, seed: int, out: str | Path) -> dict:
    """Write every split under `out/` and return (and write) the world.json summary."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spec = WorldSpec(cfg, seed)
    renderer = Renderer(spec)
    summary = {"seed": seed, "knobs": to_dict(cfg), "vocabulary": spec.to_json(), "splits": {}}
    plans = plan_splits(spec)
    total = sum(p.size for p in plans)
    with progress_bar("world: render + write", total) as bar:
        for plan in plans:
            stats = SplitStats(spec)
            text_records = []
            with ShardWriter(out / plan.name, prefix=plan.name, shard_size=cfg.shard_size) as writer:
                for key, scene, captions, writers in iter_split(spec, plan, seed):
                    heldout = any(c in spec.heldout for c in scene.combos())
                    meta = {"scene": scene.to_json(), "heldout": heldout, "split": plan.name, "style": plan.style, "annotators": writers}
                    if plan.references > 1:
                        meta["references"] = captions[:-1]
                        meta["complete_caption"] = captions[-1]
                        captions = captions[:-1]
                    writer.write(Pair(key, captions[0], image=renderer(scene), meta=meta))
                    if plan.name in cfg.text_only:
                        text_records.append({"key": key, "caption": captions[0], "scene": meta["scene"], "annotator": writers[0]})
                    stats.add(scene, captions)
                    bar.advance()
            if text_records:
                write_captions(out / plan.name / "captions.jsonl", text_records)
            summary["splits"][plan.name] = {"style": plan.style, **stats.to_json()}
    if cfg.lm_text:
        summary[LM_TEXT] = write_lm_text(spec, seed, out / LM_TEXT)  # text only: not an image split
    (out / "world.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def lm_text_records(spec: WorldSpec, seed: int):
    """(style, annotator id, caption) of the LM's web text: balanced scenes, the styles in turn,
    each style's annotators drawn from seeds no other split uses."""
    cfg = spec.cfg
    rng = np.random.default_rng([seed, 300])
    people = {style: annotators(style, cfg.annotators_per_style, seed * 7919 + 300 + k, cfg.grid) for k, style in enumerate(cfg.lm_text_styles)}
    for i in range(cfg.lm_text):
        style = cfg.lm_text_styles[i % len(cfg.lm_text_styles)]
        scene = sample_scene(rng, spec)
        person = people[style][int(rng.integers(len(people[style])))]
        yield style, person.seed, person.describe(scene, rng)


def write_lm_text(spec: WorldSpec, seed: int, out: Path) -> dict:
    records = [{"caption": caption, "style": style, "annotator": who} for style, who, caption in lm_text_records(spec, seed)]
    write_captions(out / "captions.jsonl", records)
    return {"styles": list(spec.cfg.lm_text_styles), "captions": len(records)}


class SplitStats:
    def __init__(self, spec: WorldSpec):
        self.spec = spec
        self.images = 0
        self.objects = 0
        self.shapes: Counter = Counter()
        self.combos: Counter = Counter()
        self.heldout_images = 0
        self.words = 0
        self.captions = 0

    def add(self, scene: Scene, captions: list[str]) -> None:
        self.images += 1
        self.objects += len(scene.objects)
        self.shapes.update(o.shape for o in scene.objects)
        self.combos.update(scene.combos())
        self.heldout_images += any(c in self.spec.heldout for c in scene.combos())
        self.words += sum(len(c.split()) for c in captions)
        self.captions += len(captions)

    def to_json(self) -> dict:
        total = max(sum(self.shapes.values()), 1)
        shares = sorted((n / total for n in self.shapes.values()), reverse=True)
        return {
            "images": self.images,
            "objects": self.objects,
            "shape_counts": {s: self.shapes.get(s, 0) for s in self.spec.shapes},
            "top3_class_share": round(sum(shares[:3]), 4),
            "heldout_combination_objects": sum(self.combos[c] for c in self.spec.heldout),
            "images_with_heldout_combination": self.heldout_images,
            "mean_caption_words": round(self.words / max(self.captions, 1), 2),
        }
