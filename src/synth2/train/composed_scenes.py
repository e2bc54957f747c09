"""Two-object scenes composed from one-object paired scenes, added to the generator's training data.

Eval A's classes follow COCO's order and the paired data's CCv2's, so many of A's scenes hold two
objects of a shape the paired data almost never shows twice (on small, 9 of 12,000 paired scenes
show two circles), and the generator draws them as one (docs/generator/small.md, "What A's seen
scenes miss"). On the embedded world's grid-aligned cells an object fills one cell's token block,
so two one-object scenes on one background, with their objects in different cells, compose a
two-object scene: the second's block copied into the first's grid. Its caption is the first
caption with the second's object phrase joined after its object by a comma, as alt-text joins
objects. Each object is drawn by a shape chosen uniformly, then a one-object scene of that shape,
so every pair of shapes is composed about equally often. Not the paper's recipe, which trains on
the paired data as it is; it needs the embedded world's scenes and its words for objects.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from synth2.train.join_phrases import objects
from synth2.world.scene import Scene


def join_captions(first: str, second: str) -> str | None:
    """`first` with the object phrase of `second` after its own object, joined by a comma (None
    unless each names exactly one object in the world's words)."""
    own, other = objects(first.lower()), objects(second.lower())
    if len(own) != 1 or len(other) != 1:
        return None
    end = own[0][1]
    return f"{first[:end]}, {second[other[0][0]:other[0][1]]}{first[end:]}"


def composed_scenes(tokens: np.ndarray, captions: list[str], scenes: list[Scene], cell: int, count: int, seed: int,
                    max_draws: int = 100) -> tuple[np.ndarray, list[str]]:
    """`count` token grids (count, H, W) and captions, each composed from two of the one-object
    scenes among `scenes` (whose grids `tokens` (N, H, W) are, in cells of `cell` x `cell` tokens,
    and whose captions name one object): the first drawn by a uniform shape, the second by a
    uniform shape among those with a one-object scene on the first's background in another cell."""
    singles: dict[str, list[int]] = defaultdict(list)  # shape -> one-object scenes
    by_place: dict[tuple[str, str], list[int]] = defaultdict(list)  # (shape, background) -> the same
    for i, (scene, caption) in enumerate(zip(scenes, captions)):
        if len(scene.objects) == 1 and len(objects(caption.lower())) == 1:
            singles[scene.objects[0].shape].append(i)
            by_place[scene.objects[0].shape, scene.background].append(i)
    shapes = sorted(singles)
    if not shapes:
        raise ValueError("no paired scene shows one object named by its caption: nothing to compose")
    rng = np.random.default_rng(seed)
    out_tokens, out_captions = [], []
    while len(out_captions) < count:
        for _ in range(max_draws):
            first = int(rng.choice(singles[shapes[int(rng.integers(len(shapes)))]]))
            place = scenes[first].objects[0]
            pool = [j for j in by_place[shapes[int(rng.integers(len(shapes)))], scenes[first].background]
                    if (scenes[j].objects[0].row, scenes[j].objects[0].col) != (place.row, place.col)]
            if pool:
                break
        else:
            raise ValueError(f"no two one-object paired scenes share a background with their objects in different cells ({max_draws} draws)")
        second = int(rng.choice(pool))
        obj = scenes[second].objects[0]
        block = (slice(obj.row * cell, (obj.row + 1) * cell), slice(obj.col * cell, (obj.col + 1) * cell))
        grid = tokens[first].copy()
        grid[block] = tokens[second][block]
        out_tokens.append(grid)
        out_captions.append(join_captions(captions[first], captions[second]))
    return np.stack(out_tokens), out_captions
