"""Deterministic, anti-aliased rendering of scenes at 32, 64, 128 or 256 px.

Each (shape, size, cell) has a cached coverage template (alpha in [0, 1], 4x4
supersampled), so rendering is a handful of slice blends per image and the oracle
can parse images by matching against exactly the same templates.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from synth2.world.scene import Scene, WorldSpec
from synth2.world.vocab import BACKGROUNDS, COLOURS, SHAPE_FUNCTIONS, SIZES

SUPERSAMPLE = 4


@dataclass(frozen=True)
class Template:
    y0: int
    x0: int
    alpha: np.ndarray  # (h, w) float32 coverage


@lru_cache(maxsize=None)
def template(shape: str, size: str, row: int, col: int, resolution: int, grid: int) -> Template:
    cell = resolution / grid
    cy, cx = (row + 0.5) * cell, (col + 0.5) * cell
    radius = SIZES[size] * cell / 2
    y0, x0 = max(int(np.floor(cy - radius)) - 1, 0), max(int(np.floor(cx - radius)) - 1, 0)
    y1 = min(int(np.ceil(cy + radius)) + 1, resolution)
    x1 = min(int(np.ceil(cx + radius)) + 1, resolution)
    offsets = (np.arange(SUPERSAMPLE) + 0.5) / SUPERSAMPLE
    ys = (np.arange(y0, y1)[:, None] + offsets[None, :]).reshape(-1)
    xs = (np.arange(x0, x1)[:, None] + offsets[None, :]).reshape(-1)
    v, u = np.meshgrid((ys - cy) / radius, (xs - cx) / radius, indexing="ij")
    inside = SHAPE_FUNCTIONS[shape](u, v).astype(np.float32)
    h, w = y1 - y0, x1 - x0
    alpha = inside.reshape(h, SUPERSAMPLE, w, SUPERSAMPLE).mean(axis=(1, 3))
    alpha.setflags(write=False)
    return Template(y0, x0, alpha)


@lru_cache(maxsize=4096)
def _blended(shape: str, size: str, row: int, col: int, colour: str, background: str, resolution: int, grid: int):
    """The object's pixels over the background, and where it covers anything (cached)."""
    t = template(shape, size, row, col, resolution, grid)
    a = t.alpha[:, :, None]
    patch = np.rint(np.asarray(BACKGROUNDS[background], np.float32) * (1.0 - a) + np.asarray(COLOURS[colour], np.float32) * a)
    patch = patch.astype(np.uint8)
    covered = np.broadcast_to(a > 0, patch.shape)
    return t.y0, t.x0, patch, covered


def render(scene: Scene, resolution: int, grid: int) -> np.ndarray:
    """Render `scene` to a (resolution, resolution, 3) uint8 RGB array."""
    image = np.empty((resolution, resolution, 3), dtype=np.uint8)
    image[:] = BACKGROUNDS[scene.background]
    for obj in scene.objects:
        y0, x0, patch, covered = _blended(obj.shape, obj.size, obj.row, obj.col, obj.colour, scene.background, resolution, grid)
        h, w = patch.shape[:2]
        # objects sit in distinct cells, so only anti-aliased fringes could meet; `where` keeps them
        np.copyto(image[y0 : y0 + h, x0 : x0 + w], patch, where=covered)
    return image


class Renderer:
    """Renders scenes of one world at one resolution."""

    def __init__(self, spec: WorldSpec, resolution: int | None = None):
        self.spec = spec
        self.resolution = resolution or spec.cfg.resolution
        self.grid = spec.cfg.grid

    def __call__(self, scene: Scene) -> np.ndarray:
        return render(scene, self.resolution, self.grid)
