#!/usr/bin/env python3
"""How a trained generator's wrong images are wrong, on the embedded world.

    python scripts/generator_errors.py RUN [--split a] [--set sampler.KEY=VALUE ...]

Two tables, from RUN's generator and VQ (the world's grid aligned with the token grid):

- **drawn**: the eval split's complete captions drawn as the metrics draw them
  (`oracle_seen` and `oracle_heldout` together), each image put in one class by what the oracle
  reads back against the caption's (shape, colour) objects: right; fewer objects; more objects;
  as many objects with a shape, a colour, or both wrong, or every attribute right but bound to
  the wrong objects. One row per number of objects the caption names; two objects split by
  whether the caption joins them as a list ("a red circle and a blue star") or by a relation
  ("a red circle to the left of a blue star"), a phrasing the paired alt-text never uses.
- **drawn, by what the objects share**: the same images, scenes of two or more objects grouped by
  whether two of them share a shape, else a colour, else nothing. Eval A's scenes follow COCO's
  classes and the paired data a skewed web distribution, so a scene of two objects of one shape
  can be one the paired data almost never shows: a third table counts, per shape, the paired and
  the eval scenes that show two or more of it.
- **infill**: every object of the split's scenes of two or more objects, its whole grid cell
  masked in the scene's real tokens, the rest of the scene and the caption shown, filled in by
  one argmax pass of the generator: what the cell then shows. It asks the generator's
  conditional for one object given everything else, free of the sampler's order of decoding.
- **binding**: one object per caption, each shape in its held-out colours and in colours the
  paired data showed it in (`oracle_binding_*`'s scenes, 16 per shape and group instead of 4),
  drawn and put in the drawn table's classes.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter

import numpy as np
import torch

from synth2 import api
from synth2.configtools import apply_overrides
from synth2.data.arrays import load_pairs
from synth2.eval.generator import binding_captions, draw_eval_captions
from synth2.models.codes import join_ids
from synth2.stages.data import world_spec
from synth2.stages.generator import finished_generator
from synth2.report.build import markdown_table
from synth2.world.annotate import RELATIONS
from synth2.world.oracle import Oracle, scene_agreement
from synth2.world.scene import Obj, Scene

DRAWN = ("right", "fewer objects", "more objects", "wrong shape", "wrong colour", "wrong shape and colour", "wrong binding")
INFILL = ("right", "nothing", "a shown object again", "right colour, wrong shape", "right shape, wrong colour", "both wrong")
# a caption that joins two objects by one of the world's relations, not as a list
RELATION = r"\b(" + "|".join(RELATIONS) + r")\b"


def drawn_class(true: Scene, parsed: Scene) -> str:
    """One of DRAWN for an image read back as `parsed`, drawn for a caption of `true`."""
    agree = scene_agreement(true, parsed)
    if agree["objects"]:
        return "right"
    if not agree["count"]:
        return "fewer objects" if len(parsed.objects) < len(true.objects) else "more objects"
    if agree["shapes"]:
        return "wrong colour" if not agree["colours"] else "wrong binding"
    return "wrong shape" if agree["colours"] else "wrong shape and colour"


def infill_class(masked: Obj, shown: list[Obj], found: Obj | None) -> str:
    """One of INFILL for the object `found` in the masked object's cell (None: background)."""
    if found is None:
        return "nothing"
    if (found.shape, found.colour) == (masked.shape, masked.colour):
        return "right"
    if (found.shape, found.colour) in {(o.shape, o.colour) for o in shown}:
        return "a shown object again"
    if found.colour == masked.colour:
        return "right colour, wrong shape"
    return "right shape, wrong colour" if found.shape == masked.shape else "both wrong"


def table(title: str, classes: tuple[str, ...], counts: dict[str, Counter]) -> str:
    """Markdown: one row per group, the share of each class (percent) and the group's size."""
    body = [[group] + [f"{100 * counter[c] / sum(counter.values()):.0f}" for c in classes] + [str(sum(counter.values()))]
            for group, counter in counts.items()]
    return markdown_table([title, *classes, "n"], body)


def phrasing(prompt: str, scene: Scene) -> str:
    """A drawn table's group: objects named, and for two, whether a relation joins them."""
    group = f"{len(scene.objects)} named"
    if len(scene.objects) == 2:
        group += ", as a relation" if re.search(RELATION, prompt) else ", as a list"
    return group


def sharing(prompt: str, scene: Scene) -> str | None:
    """A group by what a scene's objects share: two of one shape, else of one colour, else nothing
    (None for a scene of one object)."""
    n = len(scene.objects)
    if n < 2:
        return None
    if len({o.shape for o in scene.objects}) < n:
        return f"{n} named, two of one shape"
    return f"{n} named, two of one colour" if len({o.colour for o in scene.objects}) < n else f"{n} named, all distinct"


def drawn_labels(gen, spec, pairs, scenes: list[Scene], seed: int) -> list[tuple[str, Scene, str]]:
    """Each caption drawn as the metrics draw it: (caption, scene, its DRAWN class)."""
    prompts, images = draw_eval_captions(gen, pairs, len(scenes), seed)
    oracle = Oracle(spec)
    return [(prompt, scene, drawn_class(scene, oracle.parse(image))) for prompt, scene, image in zip(prompts, scenes, images)]


def grouped(labels: list[tuple[str, Scene, str]], group) -> dict[str, Counter]:
    """DRAWN classes counted per `group(caption, scene)`, and over all the grouped captions (a
    caption whose group is None is left out)."""
    counts: dict[str, Counter] = {}
    for prompt, scene, label in labels:
        name = group(prompt, scene)
        for key in (name, "all") if name is not None else ():
            counts.setdefault(key, Counter())[label] += 1
    return dict(sorted(counts.items()))


def shapes_shown_twice(scenes: list[Scene]) -> Counter:
    """Per shape, how many of `scenes` show two or more objects of it."""
    return Counter(shape for scene in scenes for shape, n in Counter(o.shape for o in scene.objects).items() if n > 1)


def binding_errors(gen, spec, seed: int, per_shape: int = 16) -> dict[str, Counter]:
    oracle, counts = Oracle(spec), {}
    for group, (scenes, captions) in binding_captions(spec, spec.cfg.eval_styles[0], seed, per_shape).items():
        if not scenes:  # a world without held-out combinations
            continue
        _, images = gen.generate(captions, seed=seed + 99, pixels=True)
        counts[f"{group} colours"] = Counter(drawn_class(scene, oracle.parse(image)) for scene, image in zip(scenes, images))
    return counts


@torch.no_grad()
def infill_errors(gen, spec, pairs, scenes: list[Scene], batch_size: int = 64) -> dict[str, Counter]:
    h, w = gen.grid
    if h % spec.cfg.grid or w % spec.cfg.grid:
        raise SystemExit(f"the token grid {h}x{w} does not divide into the world's {spec.cfg.grid}x{spec.cfg.grid} cells")
    cell = h // spec.cfg.grid
    cases = [(i, obj) for i, scene in enumerate(scenes) if len(scene.objects) > 1 for obj in scene.objects]
    model, oracle, counts = gen.model, Oracle(spec), Counter()
    for start in range(0, len(cases), batch_size):
        batch = cases[start : start + batch_size]
        ids = torch.from_numpy(np.stack([pairs.tokens[i].astype(np.int64) for i, _ in batch])).view(len(batch), h, w)
        for b, (_, obj) in enumerate(batch):
            ids[b, obj.row * cell : (obj.row + 1) * cell, obj.col * cell : (obj.col + 1) * cell] = model.mask_id
        states, mask = gen.lm.encode_texts([gen.prompt(pairs.meta[i]["complete_caption"]) for i, _ in batch], model.cfg.text_layer)
        flat = ids.view(len(batch), -1)
        _, chosen = model(flat, states, mask, choose=lambda part, logits: logits.argmax(-1))
        filled = torch.where(flat == model.mask_id, join_ids(chosen, model.code_factors), flat).view(len(batch), h, w)
        for (i, obj), image in zip(batch, gen.pixels(filled)):
            found = {(o.row, o.col): o for o in oracle.parse(image).objects}.get((obj.row, obj.col))
            counts[infill_class(obj, [o for o in scenes[i].objects if o != obj], found)] += 1
    return {"all": counts}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a run whose generator is trained (`synth2 train t2i`)")
    parser.add_argument("--split", default="a", choices=("a", "b"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="sampler.KEY=VALUE",
                        help="a decoding setting for the drawn table (the run's config is not changed)")
    args = parser.parse_args(argv)
    if any(not o.startswith("sampler.") for o in args.overrides):
        raise SystemExit("--set takes sampler settings only (sampler.KEY=VALUE)")
    run = api.open_run(args.run)
    cfg = run.config
    spec = world_spec(run)
    if spec is None:
        raise SystemExit(f"{args.run}: not an embedded-world run; the oracle needs the world's scenes")
    gen, done = finished_generator(run, apply_overrides(cfg, args.overrides).sampler, also=("encode",))
    pairs = load_pairs(done["encode"]["splits"][f"eval_{args.split}"], images=False, tokens=True, limit=cfg.eval.max_images)
    scenes = [Scene.from_json(meta["scene"]) for meta in pairs.meta[: min(cfg.eval.generator_captions, len(pairs))]]
    labels = drawn_labels(gen, spec, pairs, scenes, cfg.seed)
    print(table(f"drawn, eval {args.split}", DRAWN, grouped(labels, phrasing)))
    print()
    print(table(f"drawn, eval {args.split}, by what the objects share", DRAWN, grouped(labels, sharing)))
    print()
    paired = [Scene.from_json(meta["scene"]) for meta in load_pairs(done["encode"]["splits"]["paired"], images=False).meta]
    twice = {"paired": shapes_shown_twice(paired), f"eval {args.split}": shapes_shown_twice(scenes)}
    shapes = sorted(set().union(*twice.values()), key=lambda s: -twice[f"eval {args.split}"][s])
    print(markdown_table(["scenes showing two or more of a shape", *shapes, "scenes"],
                         [[name, *(str(counts[s]) for s in shapes), str(n)] for (name, counts), n in zip(twice.items(), (len(paired), len(scenes)))]))
    print()
    print(table(f"infill, eval {args.split}", INFILL, infill_errors(gen, spec, pairs, scenes)))
    print()
    print(table("binding, one object", DRAWN[:-1], binding_errors(gen, spec, cfg.seed)))


if __name__ == "__main__":
    main()
