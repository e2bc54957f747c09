"""Two-object scenes composed from one-object paired scenes (t2i.composed_scenes)."""

import numpy as np
import pytest

from synth2.errors import UserError
from synth2.stages.generator import with_composed_scenes
from synth2.train.composed_scenes import composed_scenes, join_captions
from synth2.train.t2i import T2IStageConfig
from synth2.world.scene import Obj, Scene, WorldConfig, WorldSpec

CELL = 2  # tokens per cell side: a 2x2 grid of cells on 4x4 tokens
BACKGROUND = {"black": 0, "grey": 1}


def one_object_pair(shape: int, colour: str, background: str, row: int, col: int) -> tuple[np.ndarray, str, Scene]:
    """A token grid of `background`'s token with the object's block (its shape's token) in one cell."""
    grid = np.full((2 * CELL, 2 * CELL), BACKGROUND[background])
    grid[row * CELL : (row + 1) * CELL, col * CELL : (col + 1) * CELL] = 10 + shape
    name = ["circle", "star", "heart"][shape]
    return grid, f"{colour} {name} | {background} background", Scene((Obj(name, colour, "small", row, col),), background)


def data(rng):
    pairs = [one_object_pair(int(rng.integers(3)), str(rng.choice(["red", "blue"])), str(rng.choice(list(BACKGROUND))),
                             int(rng.integers(2)), int(rng.integers(2))) for _ in range(60)]
    two = Scene((Obj("circle", "red", "small", 0, 0), Obj("star", "blue", "small", 1, 1)), "black")
    pairs.append((np.zeros((4, 4), dtype=np.int64), "red circle, blue star", two))  # not one object: never drawn
    tokens, captions, scenes = zip(*pairs)
    return np.stack(tokens), list(captions), list(scenes)


def test_the_second_caption_s_object_joins_the_first_s_by_a_comma():
    assert join_captions("red circle | black background", "flat design blue star on dark") == "red circle, blue star | black background"
    assert join_captions("big red heart", "a small blue round dot") == "big red heart, a small blue round dot"
    assert join_captions("red circle, blue star", "green heart") is None  # two objects already
    assert join_captions("clipart | black background", "green heart") is None  # no object named


def test_a_composed_scene_is_two_one_object_scenes_on_one_background_in_different_cells():
    tokens, captions, scenes = data(np.random.default_rng(0))
    composed, texts = composed_scenes(tokens, captions, scenes, CELL, 200, seed=3)
    assert composed.shape == (200, 4, 4) and len(texts) == 200
    for grid, text in zip(composed, texts):
        blocks = {(r, c): grid[r * CELL : (r + 1) * CELL, c * CELL : (c + 1) * CELL] for r in range(2) for c in range(2)}
        background = np.bincount(grid.ravel()).argmax()
        objects = [block for block in blocks.values() if (block != background).any()]
        assert background in BACKGROUND.values() and len(objects) == 2  # one background, two cells drawn
        assert all(len(set(block.ravel())) == 1 for block in objects)  # each a whole block
        assert text.count(",") == 1 and text.endswith("background")  # "red circle, blue star | black background"
        names = [np.array(["circle", "star", "heart"])[block[0, 0] - 10] for block in objects]
        assert sorted(names) == sorted(w for w in text.replace(",", "").split() if w in ("circle", "star", "heart"))
    # shapes are drawn uniformly, so two of one shape come about a third of the time here
    same = sum(len({w for w in t.replace(",", "").split() if w in ("circle", "star", "heart")}) == 1 for t in texts)
    assert 40 < same < 100
    again, _ = composed_scenes(tokens, captions, scenes, CELL, 200, seed=3)
    assert (again == composed).all()  # seeded


def test_composing_needs_the_embedded_world_and_unweighted_data(capsys, monkeypatch):
    from synth2.progress import console

    monkeypatch.setattr(console, "width", 400)  # one line per message
    tokens, captions, scenes = data(np.random.default_rng(1))
    meta = [{"scene": s.to_json()} for s in scenes]
    spec = WorldSpec(WorldConfig(grid=2), seed=0)
    out_tokens, out_captions = with_composed_scenes(T2IStageConfig(composed_scenes=5), spec, tokens, captions, meta, seed=0)
    assert out_tokens.shape == (len(tokens) + 5, 4, 4) and out_captions[: len(captions)] == captions
    assert with_composed_scenes(T2IStageConfig(), None, tokens, captions, [{}] * len(captions), seed=0)[1] == captions  # off by default
    with pytest.raises(UserError, match="do not weigh"):
        with_composed_scenes(T2IStageConfig(composed_scenes=5, balance_classes=True), spec, tokens, captions, meta, seed=0)
    # a preset that composes still trains on data without the world's scenes or its cells, as it is
    for other_spec, other_meta, why in ((None, [{}] * len(captions), "does not have"), (WorldSpec(WorldConfig(grid=3), seed=0), meta, "whole tokens")):
        kept_tokens, kept_captions = with_composed_scenes(T2IStageConfig(composed_scenes=5), other_spec, tokens, captions, other_meta, seed=0)
        assert kept_tokens is tokens and kept_captions == captions
        assert why in capsys.readouterr().err
