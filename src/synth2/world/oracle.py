"""The oracle: parse an image of the world back into its objects.

Analysis by synthesis: the background is the palette colour covering most pixels;
in each grid cell the foreground colour is the palette colour nearest to the most
saturated pixels, and the shape and size are the template whose coverage best
explains the per-pixel blend between background and that colour. Coverage and
templates are compared after the same Gaussian blur (sigma = resolution / 64 px):
on clean renders this still inverts `render` exactly, and on reconstructed or
generated images, which are never pixel-sharp, it reads shapes by their mass
rather than their edges (a blurred ring is still closer to a ring than to a disc).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from synth2.world.render import template
from synth2.world.scene import Obj, Scene, WorldSpec
from synth2.world.vocab import BACKGROUNDS, COLOURS

# A pixel belongs to the foreground when it is this far (L2, 0..441) from the background.
FOREGROUND_DISTANCE = 60.0
# A cell holds an object when its foreground covers this share of the smallest template.
MIN_COVERAGE = 0.35


class Oracle:
    def __init__(self, spec: WorldSpec, resolution: int | None = None):
        self.spec = spec
        self.resolution = resolution or spec.cfg.resolution
        self.grid = spec.cfg.grid
        self._backgrounds = np.array([BACKGROUNDS[b] for b in spec.backgrounds], dtype=np.float32)
        self._colours = np.array([COLOURS[c] for c in spec.colours], dtype=np.float32)
        self.sigma = self.resolution / 64
        self._cells = [self._cell_candidates(r, c) for r in range(self.grid) for c in range(self.grid)]

    def _cell_candidates(self, row: int, col: int):
        """Cell bounds plus every (shape, size) template placed inside them."""
        cell = self.resolution / self.grid
        y0, y1 = int(np.floor(row * cell)), min(int(np.ceil((row + 1) * cell)), self.resolution)
        x0, x1 = int(np.floor(col * cell)), min(int(np.ceil((col + 1) * cell)), self.resolution)
        labels, stack = [], []
        for shape in self.spec.shapes:
            for size in self.spec.sizes:
                t = template(shape, size, row, col, self.resolution, self.grid)
                canvas = np.zeros((y1 - y0, x1 - x0), dtype=np.float32)
                h, w = t.alpha.shape
                ty0, tx0 = t.y0 - y0, t.x0 - x0
                # clip the template to the cell
                sy0, sx0 = max(0, -ty0), max(0, -tx0)
                dy0, dx0 = max(0, ty0), max(0, tx0)
                hh = min(h - sy0, canvas.shape[0] - dy0)
                ww = min(w - sx0, canvas.shape[1] - dx0)
                canvas[dy0 : dy0 + hh, dx0 : dx0 + ww] = t.alpha[sy0 : sy0 + hh, sx0 : sx0 + ww]
                labels.append((shape, size))
                stack.append(gaussian_filter(canvas, self.sigma).reshape(-1))
        stack = np.stack(stack)
        min_area = float(stack.sum(axis=1).min())
        return (row, col, y0, y1, x0, x1, labels, stack, min_area)

    def background(self, image: np.ndarray) -> int:
        step = max(1, self.resolution // 64)  # a 64x64 lattice of pixels is plenty to vote
        pixels = image[::step, ::step].reshape(-1, 3).astype(np.float32)
        dist = np.linalg.norm(pixels[:, None, :] - self._backgrounds[None, :, :], axis=2)
        return int(np.argmax((dist < 25.0).sum(axis=0)))

    def parse(self, image: np.ndarray) -> Scene:
        if image.shape != (self.resolution, self.resolution, 3):
            raise ValueError(f"oracle expects ({self.resolution}, {self.resolution}, 3) images, got {image.shape}")
        bg_index = self.background(image)
        bg = self._backgrounds[bg_index]
        img = image.astype(np.float32)
        objects = []
        for row, col, y0, y1, x0, x1, labels, stack, min_area in self._cells:
            patch = img[y0:y1, x0:x1].reshape(-1, 3) - bg
            dist = np.linalg.norm(patch, axis=1)
            foreground = dist > FOREGROUND_DISTANCE
            if foreground.sum() < MIN_COVERAGE * min_area:
                continue
            core = dist >= 0.8 * dist.max()
            colour_estimate = patch[core].mean(axis=0) + bg
            colour_index = int(np.argmin(np.linalg.norm(self._colours - colour_estimate, axis=1)))
            direction = self._colours[colour_index] - bg
            alpha = np.clip(patch @ direction / float(direction @ direction), 0.0, 1.0)
            alpha = gaussian_filter(alpha.reshape(y1 - y0, x1 - x0), self.sigma).reshape(-1)
            errors = ((stack - alpha[None, :]) ** 2).sum(axis=1)
            shape, size = labels[int(np.argmin(errors))]
            objects.append(Obj(shape, self.spec.colours[colour_index], size, row, col))
        return Scene(tuple(objects), self.spec.backgrounds[bg_index])


def object_accuracy(true: Scene, parsed: Scene) -> tuple[int, int]:
    """(objects right in shape, colour, size and cell; objects in either scene).

    Spurious objects in `parsed` count against it through the union.
    """
    truth, found = set(true.objects), set(parsed.objects)
    return len(truth & found), len(truth | found)


# Why a grid cell is wrong, in the order reports list them.
ERROR_CAUSES = ("shape", "colour", "size", "missed", "spurious")


def object_errors(true: Scene, parsed: Scene) -> dict[str, int]:
    """Per grid cell, what the parse got wrong (a cell with a wrong object counts once here,
    twice in `object_accuracy`'s union).

    Keys: "right"; "shape", "colour", "size" (an object found in the right cell with that
    attribute wrong; one object can count under several); "missed" (no object found where one
    is); "spurious" (an object found in an empty cell); "cells" (cells with an object in
    either scene).
    """
    truth = {(o.row, o.col): o for o in true.objects}
    found = {(o.row, o.col): o for o in parsed.objects}
    counts = dict.fromkeys(("right",) + ERROR_CAUSES, 0)
    for cell in truth.keys() | found.keys():
        t, f = truth.get(cell), found.get(cell)
        if f is None:
            counts["missed"] += 1
        elif t is None:
            counts["spurious"] += 1
        elif t == f:
            counts["right"] += 1
        else:
            for attribute in ("shape", "colour", "size"):
                counts[attribute] += getattr(t, attribute) != getattr(f, attribute)
    counts["cells"] = len(truth.keys() | found.keys())
    return counts


def hits_by_shape(true: Scene, parsed: Scene) -> list[tuple[str, bool]]:
    """(shape, read right in its cell) for every object of `true`: per-class recall."""
    found = {(o.row, o.col): o for o in parsed.objects}
    return [(o.shape, found.get((o.row, o.col)) == o) for o in true.objects]


# The parts of a scene that `scene_agreement` checks on their own, in the order reports list them.
AGREEMENT_PARTS = ("count", "colours", "shapes", "present")


def scene_agreement(true: Scene, parsed: Scene) -> dict[str, bool]:
    """What a generated image gets right of its caption's scene, positions and sizes free.

    "objects": exactly the caption's (shape, colour) multiset (the generator's oracle
    accuracy); "count", "colours", "shapes": the object count and the colour and shape
    multisets on their own, which say which part a wrong image misses; "present": every
    caption object is drawn, extra objects allowed (a wrong image that only adds objects).
    """
    parsed_left = list(parsed.combos())
    present = True
    for combo in true.combos():
        if combo in parsed_left:
            parsed_left.remove(combo)
        else:
            present = False
    return {
        "objects": sorted(true.combos()) == sorted(parsed.combos()),
        "count": len(true.objects) == len(parsed.objects),
        "colours": sorted(o.colour for o in true.objects) == sorted(o.colour for o in parsed.objects),
        "shapes": sorted(o.shape for o in true.objects) == sorted(o.shape for o in parsed.objects),
        "present": present,
    }
