import hashlib
import json

import numpy as np
import pytest

from synth2.data.shards import read_pairs
from synth2.world.annotate import Annotator, annotators
from synth2.world.llm import UnknownClass, WorldLLM
from synth2.world.oracle import Oracle, hits_by_shape, object_accuracy, object_errors, scene_agreement
from synth2.world.render import render
from synth2.world.scene import Obj, Scene, WorldConfig, WorldSpec, sample_scene
from synth2.world.splits import build_world
from synth2.world.vocab import SHAPE_WORDS

PAPER_PROMPT = (
    "Make up a human-annotated description of an image that contains the following object: {}. "
    "The caption should be around 30-40 words long. Describing the different components of the scene in an "
    "objective and unbiased way. Do not add subjective judgments about the image, it should be as factual as "
    'possible. Do not use fluffy, poetic language. Respond only with the caption itself, beginning with "This is an image of".'
)


@pytest.mark.parametrize("resolution", [32, 64, 256])
def test_oracle_parses_clean_renders(resolution):
    spec = WorldSpec(WorldConfig(sizes=["small", "medium", "large"]), seed=3)
    oracle = Oracle(spec, resolution)
    rng = np.random.default_rng(resolution)
    right = total = 0
    for _ in range(2000):
        scene = sample_scene(rng, spec)
        a, b = object_accuracy(scene, oracle.parse(render(scene, resolution, spec.cfg.grid)))
        right, total = right + a, total + b
    assert right / total >= 0.995


def test_render_is_deterministic_and_sized():
    spec = WorldSpec(WorldConfig(), seed=0)
    scene = sample_scene(np.random.default_rng(1), spec)
    for res in (32, 64, 256):
        a, b = render(scene, res, spec.cfg.grid), render(scene, res, spec.cfg.grid)
        assert a.shape == (res, res, 3) and a.dtype == np.uint8
        assert np.array_equal(a, b)


def test_oracle_counts_a_wrong_colour_as_wrong():
    spec = WorldSpec(WorldConfig(), seed=0)
    scene = sample_scene(np.random.default_rng(2), spec)
    parsed = Oracle(spec).parse(render(scene, 32, spec.cfg.grid))
    obj = scene.objects[0]
    other = next(c for c in spec.colours if c != obj.colour)
    wrong = type(scene)((type(obj)(obj.shape, other, obj.size, obj.row, obj.col),) + scene.objects[1:], scene.background)
    right, total = object_accuracy(wrong, parsed)
    assert right == len(scene.objects) - 1 and total == len(scene.objects) + 1


def test_oracle_errors_name_the_cause_per_cell():
    spec = WorldSpec(WorldConfig(), seed=0)
    scene = next(s for s in (sample_scene(np.random.default_rng(i), spec) for i in range(50)) if len(s.objects) >= 2)
    first = scene.objects[0]
    other_shape = next(x for x in spec.shapes if x != first.shape)
    free = next((r, c) for r in range(3) for c in range(3) if all((o.row, o.col) != (r, c) for o in scene.objects))
    extra = type(first)(first.shape, first.colour, first.size, *free)
    # the parse: first object's shape wrong, second object missing, one object in an empty cell
    parsed = type(scene)((first.__class__(other_shape, first.colour, first.size, first.row, first.col), extra) + scene.objects[2:], scene.background)
    errors = object_errors(scene, parsed)
    assert errors == {"right": len(scene.objects) - 2, "shape": 1, "colour": 0, "size": 0, "missed": 1, "spurious": 1, "cells": len(scene.objects) + 1}
    assert errors["cells"] == object_accuracy(scene, parsed)[1] - 1  # the wrong-shape cell counts twice in the union


def test_scene_agreement_and_hits_by_shape_say_what_a_parse_gets_wrong():
    red_heart, blue_star = Obj("heart", "red", "small", 0, 0), Obj("star", "blue", "large", 1, 1)
    true = Scene((red_heart, blue_star), "black")
    moved = Scene((Obj("heart", "red", "large", 2, 2), blue_star), "grey")  # positions, sizes, background free
    assert scene_agreement(true, moved) == {"objects": True, "count": True, "colours": True, "shapes": True, "present": True}
    swapped = Scene((Obj("heart", "blue", "small", 0, 0), Obj("star", "red", "large", 1, 1)), "black")
    assert scene_agreement(true, swapped) == {"objects": False, "count": True, "colours": True, "shapes": True, "present": False}
    extra = Scene((red_heart, blue_star, Obj("heart", "red", "small", 2, 0)), "black")
    assert scene_agreement(true, extra) == {"objects": False, "count": False, "colours": False, "shapes": False, "present": True}
    assert hits_by_shape(true, swapped) == [("heart", False), ("star", False)]
    assert hits_by_shape(true, extra) == [("heart", True), ("star", True)]


def test_world_splits_show_skew_and_heldout(tiny_world):
    out, summary, cfg = tiny_world
    splits = summary["splits"]
    assert set(splits) == {"paired", "ltip", "webli", "eval_a", "eval_b", "images"}
    assert summary["lm_text"]["captions"] == cfg.world.lm_text
    assert splits["paired"]["heldout_combination_objects"] == 0
    assert splits["eval_a"]["heldout_combination_objects"] > 0
    assert splits["eval_b"]["heldout_combination_objects"] > 0
    assert splits["paired"]["top3_class_share"] > splits["eval_a"]["top3_class_share"] + 0.15
    world = json.loads((out / "world.json").read_text())
    assert len(world["vocabulary"]["heldout_combinations"]) == len(cfg.world.shapes) * cfg.world.heldout_per_shape


def test_vq_images_split_is_balanced_and_is_no_text_corpus(tiny_world):
    out, summary, cfg = tiny_world
    images = summary["splits"]["images"]
    assert images["images"] == cfg.world.images
    assert images["top3_class_share"] < summary["splits"]["paired"]["top3_class_share"] - 0.15
    assert images["heldout_combination_objects"] > 0  # a pre-trained tokenizer has seen every kind of image
    assert not (out / "images" / "captions.jsonl").exists()


def test_no_text_corpus_may_take_the_images_split_name():
    from synth2.world.scene import TextCorpusConfig
    from synth2.world.splits import plan_splits

    with pytest.raises(ValueError, match="'images'"):
        plan_splits(WorldSpec(WorldConfig(text_only={"images": TextCorpusConfig()}), 0))


def test_paired_shards_never_contain_heldout_combinations(tiny_world):
    out, summary, _ = tiny_world
    heldout = {tuple(c) for c in json.loads((out / "world.json").read_text())["vocabulary"]["heldout_combinations"]}
    for pair in read_pairs(out / "paired", decode_images=False):
        assert not {(o["shape"], o["colour"]) for o in pair.meta["scene"]["objects"]} & heldout


def test_eval_images_have_independent_references(tiny_world):
    out, _, cfg = tiny_world
    pairs = list(read_pairs(out / "eval_a", decode_images=False))
    assert all(len(p.meta["references"]) == cfg.world.references for p in pairs)
    distinct = np.mean([len(set(p.meta["references"])) for p in pairs])
    assert distinct > 2.5  # several phrasings, not five copies


def test_world_is_byte_identical_for_a_seed(tmp_path):
    cfg = WorldConfig(paired=50, eval=10, text_only={})

    def digest(path):
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*.tar"))}

    build_world(cfg, 7, tmp_path / "a")
    build_world(cfg, 7, tmp_path / "b")
    build_world(cfg, 8, tmp_path / "c")
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")


def test_annotator_styles_differ():
    spec = WorldSpec(WorldConfig(), seed=0)
    scene = sample_scene(np.random.default_rng(4), spec)
    rng = np.random.default_rng(0)
    texts = {style: annotators(style, 1, 0, 3)[0].describe(scene, rng) for style in ("coco", "flickr", "ltip", "alt", "llm")}
    assert len(set(texts.values())) == 5
    assert texts["llm"].startswith("This is an image of")


def test_world_llm_answers_the_class_based_prompt():
    spec = WorldSpec(WorldConfig(), seed=0)
    llm = WorldLLM(spec, noise=0.0)
    for shape in spec.shapes:
        caption = llm.complete(PAPER_PROMPT.format(shape), seed=1)
        assert caption.startswith("This is an image of")
        assert 30 <= len(caption.split()) <= 40, caption
        assert any(word in caption for word in SHAPE_WORDS[shape])
    assert llm.complete(PAPER_PROMPT.format("heart"), 1) == llm.complete(PAPER_PROMPT.format("heart"), 1)
    assert llm.complete(PAPER_PROMPT.format("heart"), 1) != llm.complete(PAPER_PROMPT.format("heart"), 2)


def test_world_llm_refuses_unknown_classes():
    llm = WorldLLM(WorldSpec(WorldConfig(), seed=0))
    with pytest.raises(UnknownClass, match="tabby cat"):
        llm.complete(PAPER_PROMPT.format("tabby cat"), seed=0)


def test_world_llm_noise_produces_rejectable_answers():
    llm = WorldLLM(WorldSpec(WorldConfig(), seed=0), noise=0.5)
    answers = [llm.complete(PAPER_PROMPT.format("star"), seed=s) for s in range(200)]
    bad_prefix = sum(not a.startswith("This is an image of") for a in answers)
    short = sum(len(a.split()) < 30 for a in answers)
    assert 20 < bad_prefix < 80 and short > 20


def test_world_llm_records_give_back_the_scenes_they_describe(tmp_path):
    """`described_scenes` regenerates each caption's scene from its class and seed, re-asked and
    misbehaving answers included, and refuses a caption the LLM did not write."""
    from synth2.captions.backends import WorldBackend
    from synth2.captions.generate import CaptionsConfig, generate_captions
    from synth2.data.corpus import read_captions
    from synth2.eval.diversity import embed_with_world_concepts

    spec = WorldSpec(WorldConfig(), seed=0)
    llm = WorldLLM(spec, noise=0.3)
    cfg = CaptionsConfig(n=60)
    generate_captions(WorldBackend(llm), spec.shapes, cfg, tmp_path / "llm.jsonl", seed=0)
    records = read_captions(tmp_path / "llm.jsonl")
    scenes = llm.described_scenes(records, cfg.prompt)
    assert len(records) > 40 and all(s is not None for s in scenes)
    mentioned = embed_with_world_concepts([r["caption"] for r in records], spec.shapes, spec.colours) > 0
    for record, scene, row in zip(records, scenes, mentioned):
        assert record["class"] in {o.shape for o in scene.objects}
        # the caption names every shape and colour of the scene (its explanations may name more: "a hollow circle")
        assert {spec.shapes[i] for i in np.flatnonzero(row[: len(spec.shapes)])} >= {o.shape for o in scene.objects}, record
        assert {spec.colours[i] for i in np.flatnonzero(row[len(spec.shapes) :])} >= {o.colour for o in scene.objects}, record
    edited = [{**records[0], "caption": records[0]["caption"] + " It is raining."}]
    assert llm.described_scenes(edited, cfg.prompt) == [None]


def test_world_llm_describes_a_given_scene_in_its_style():
    spec = WorldSpec(WorldConfig(), seed=0)
    llm = WorldLLM(spec, noise=0.0)
    scene = sample_scene(np.random.default_rng(3), spec)
    text = llm.describe(scene, seed=5)
    assert text.startswith("This is an image of") and 30 <= len(text.split()) <= 40
    assert all(any(word in text for word in SHAPE_WORDS[o.shape]) for o in scene.objects)
    assert text == llm.describe(scene, seed=5) != llm.describe(scene, seed=6)


def test_generator_oracle_groups_scenes_into_seen_heldout_and_novel_composition():
    from synth2.eval.generator import OracleContext, by_group, oracle_agreements

    spec = WorldSpec(WorldConfig(), seed=0)
    shape, colour = sorted(spec.heldout)[0]
    seen_colour = spec.allowed_colours[shape][0]
    other = next(s for s in spec.shapes if s != shape)
    other_colour = spec.allowed_colours[other][0]
    heldout_scene = Scene((Obj(shape, colour, "large", 0, 0),), "black")
    seen_scene = Scene((Obj(shape, seen_colour, "large", 1, 1),), "grey")
    together = Scene((Obj(shape, seen_colour, "large", 0, 0), Obj(other, other_colour, "small", 1, 0)), "black")
    # the paired data showed both objects, but never in one scene
    context = OracleContext.from_paired(spec, [seen_scene, Scene((Obj(other, other_colour, "large", 0, 1),), "black")])
    assert [context.group(s) for s in (heldout_scene, seen_scene, together)] == ["heldout", "familiar", "composition"]
    scenes = [heldout_scene, seen_scene, together, seen_scene]
    # the last image shows another scene's object, so only it is wrong
    images = np.stack([render(s, 32, spec.cfg.grid) for s in (heldout_scene, seen_scene, together, heldout_scene)])
    right = [a["objects"] for a in oracle_agreements(spec, scenes, images)]
    assert right == [True, True, True, False]
    assert by_group(context, scenes, right, "oracle") == {
        "oracle_seen": 2 / 3, "oracle_seen_count": 3, "oracle_heldout": 1.0, "oracle_heldout_count": 1,
        "oracle_composition": 1.0, "oracle_composition_count": 1,
    }
    # a scene of the paired data itself is familiar
    assert OracleContext.from_paired(spec, [together]).group(together) == "familiar"


def test_a_careful_web_alt_text_annotator_names_every_object_rightly():
    """The generator's paired-style eval prompts: every object by its own colour and class word,
    where the same people writing the paired data leave objects out and name wrong colours."""
    spec = WorldSpec(WorldConfig(), seed=0)
    rng = np.random.default_rng(3)
    scenes = [sample_scene(rng, spec) for _ in range(300)]

    def names_everything(annotator, scene) -> bool:
        text = annotator.describe(scene, rng)
        return all(f"{annotator.colour(o.colour)} {annotator.shape(o.shape)}" in text for o in scene.objects)

    careful = [Annotator("noisy_alt", 100 + i, spec.cfg.grid, omits=False) for i in range(10)]
    assert all(names_everything(careful[i % 10], scene) for i, scene in enumerate(scenes))
    usual = [Annotator("noisy_alt", 100 + i, spec.cfg.grid) for i in range(10)]
    assert sum(not names_everything(usual[i % 10], scene) for i, scene in enumerate(scenes)) > 30


def test_generator_accuracy_by_objects_named_groups_three_and_more():
    from synth2.eval.generator import by_objects_named

    spec = WorldSpec(WorldConfig(max_objects=4), seed=0)
    rng = np.random.default_rng(5)
    scenes = [sample_scene(rng, spec) for _ in range(200)]
    right = [len(s.objects) % 2 == 0 for s in scenes]  # every 2- and 4-object scene right
    by = by_objects_named(scenes, right)
    threes = sum(len(s.objects) == 3 for s in scenes)
    fours = sum(len(s.objects) == 4 for s in scenes)
    assert (by["oracle_objects_1"], by["oracle_objects_2"]) == (0.0, 1.0)
    assert by["oracle_objects_3plus"] == pytest.approx(fours / (threes + fours))


def test_binding_scenes_isolate_held_out_combinations_one_object_at_a_time():
    from synth2.eval.generator import binding_scenes

    spec = WorldSpec(WorldConfig(), seed=0)
    groups = binding_scenes(spec, seed=1)
    assert len(groups["heldout"]) == len(groups["seen"]) == 4 * len(spec.shapes)
    assert all(len(scene.objects) == 1 for scenes in groups.values() for scene in scenes)
    assert all(scene.combos()[0] in spec.heldout for scene in groups["heldout"])
    assert not any(scene.combos()[0] in spec.heldout for scene in groups["seen"])
    # every shape appears in both groups, and the draw follows the seed
    assert {s.objects[0].shape for s in groups["heldout"]} == {s.objects[0].shape for s in groups["seen"]} == set(spec.shapes)
    assert binding_scenes(spec, seed=1) == groups != binding_scenes(spec, seed=2)


def test_training_sources_share_no_style_or_annotator_with_the_eval_references(tiny_world):
    """The paper's regime: every training source (paired, text-only corpora, the LM's web text,
    the world LLM) is written in another style, by other people, than the eval references."""
    from synth2.data.corpus import read_captions

    out, _, cfg = tiny_world

    def writers(split):
        metas = [p.meta for p in read_pairs(out / split, decode_images=False, split=False)]
        return {m["style"] for m in metas}, {a for m in metas for a in m["annotators"]}

    eval_styles, eval_people = set(), set()
    for split in ("eval_a", "eval_b"):
        styles, people = writers(split)
        eval_styles |= styles
        eval_people |= people
    assert eval_styles == set(cfg.world.eval_styles) and len(eval_people) >= cfg.world.annotators_per_style
    sources = {name: writers(name) for name in ("paired", *cfg.world.text_only)}
    lm_text = read_captions(out / "lm_text" / "captions.jsonl")
    # the LM reads the eval styles too (an LLM has read the web), but from writers of its own
    sources["lm_text"] = (set(), {r["annotator"] for r in lm_text})
    sources["llm"] = ({"llm"}, {p.seed for p in WorldLLM(WorldSpec(cfg.world, cfg.seed))._people})
    for name, (styles, people) in sources.items():
        assert people and not people & eval_people, name
        assert not styles & eval_styles, name
    assert {r["style"] for r in lm_text} == set(cfg.world.lm_text_styles)


def test_each_object_has_one_token_pattern_in_every_cell():
    """The golden geometry: cells are whole multiples of the tokenizer's patches, so an object
    renders to the same pixels, and encodes to the same tokens, whichever cell it sits in."""
    import torch

    from synth2.config import quick
    from synth2.models.vq import VQModel, to_model_pixels

    cfg = quick()
    spec = WorldSpec(cfg.world, seed=0)
    resolution, grid, patch = cfg.world.resolution, spec.cfg.grid, cfg.vq.model.patch_size
    cell = resolution // grid
    assert resolution % grid == 0 and cell % patch == 0
    torch.manual_seed(0)
    vq = VQModel(cfg.vq.model).eval()  # untrained: its tokens are still a function of the patch alone
    per_token = cell // patch
    for shape in spec.shapes:
        for size in spec.cfg.sizes:
            colour = spec.allowed_colours[shape][0]
            scenes = [Scene((Obj(shape, colour, size, row, col),), "black") for row in range(grid) for col in range(grid)]
            images = np.stack([render(s, resolution, grid) for s in scenes])
            with torch.no_grad():
                tokens = vq.encode(to_model_pixels(torch.from_numpy(images))).numpy()
            crops = [images[i, o.row * cell : (o.row + 1) * cell, o.col * cell : (o.col + 1) * cell] for i, o in enumerate(s.objects[0] for s in scenes)]
            codes = [tokens[i, o.row * per_token : (o.row + 1) * per_token, o.col * per_token : (o.col + 1) * per_token] for i, o in enumerate(s.objects[0] for s in scenes)]
            assert all(np.array_equal(crops[0], c) for c in crops[1:]), (shape, size)
            assert all(np.array_equal(codes[0], c) for c in codes[1:]), (shape, size)
            # and the empty cells hold one background pattern
            assert len({tokens[0, -per_token:, -per_token:].tobytes(), tokens[-1, :per_token, :per_token].tobytes()}) == 1
