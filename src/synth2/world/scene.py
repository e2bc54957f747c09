"""Scenes of the embedded world and the samplers that draw them.

A scene is 1..max_objects objects on a grid of positions (one object per cell) on a
coloured background. Samplers differ in how they weight shape classes (long-tailed
for the paired split, balanced for eval) and in which (shape, colour) combinations
they may use (the paired split never shows the held-out ones).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from synth2.world.vocab import COLOURS, SHAPE_FUNCTIONS, validate_vocabulary


@dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    size: str
    row: int
    col: int


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]
    background: str

    def to_json(self) -> dict:
        objects = [{"shape": o.shape, "colour": o.colour, "size": o.size, "row": o.row, "col": o.col} for o in self.objects]
        return {"background": self.background, "objects": objects}

    @staticmethod
    def from_json(data: dict) -> "Scene":
        return Scene(tuple(Obj(**o) for o in data["objects"]), data["background"])

    def combos(self) -> list[tuple[str, str]]:
        return [(o.shape, o.colour) for o in self.objects]


@dataclass
class TextCorpusConfig:
    """A text-only corpus (the paper's LTIP / WebLI): its own caption style and class skew."""

    style: str = "ltip"
    size: int = 2000
    skew: float = 1.5


@dataclass
class WorldConfig:
    """The paper's data regime (docs/world.md): the paired split is web alt-text like CCv2, the
    text-only corpora are high-quality alt-text (WebLI) and long web descriptions (LTIP), and
    evaluation is zero-shot on descriptive captions (COCO, Flickr30k) by other annotators."""

    resolution: int = 32
    # Cells per side. With 32 px and 2 cells, a cell is 16 px: a whole number of the tokenizer's
    # 4-px patches, so an object has the same token pattern in every cell.
    grid: int = 2
    shapes: list[str] = field(default_factory=lambda: list(SHAPE_FUNCTIONS)[:10])
    colours: list[str] = field(default_factory=lambda: list(COLOURS)[:8])
    sizes: list[str] = field(default_factory=lambda: ["small", "large"])
    backgrounds: list[str] = field(default_factory=lambda: ["black", "grey"])
    max_objects: int = 3
    # Zipf exponent of the paired split's shape-class frequencies (0 = balanced).
    skew: float = 1.3
    # (shape, colour) combinations per shape that the paired split never shows.
    heldout_per_shape: int = 1
    paired: int = 4000
    paired_style: str = "noisy_alt"
    text_only: dict[str, TextCorpusConfig] = field(
        default_factory=lambda: {
            "ltip": TextCorpusConfig(style="long_description", size=8000, skew=2.2),
            "webli": TextCorpusConfig(style="clean_alt", size=8000, skew=1.1),
        }
    )
    eval: int = 300
    # Zipf exponent of eval split A's shape classes, in an order of its own (COCO's objects are
    # long-tailed too, but not in CCv2's order); split B is balanced. Both show held-out combinations.
    eval_skew: float = 0.8
    # Unlabelled images for pre-training the VQ (the `images` split): balanced classes, every
    # combination, as a pre-trained VQ-GAN has seen broad image data rather than the paired split.
    # 0 = the VQ trains on the paired images, and codes for rare classes starve.
    images: int = 0
    eval_styles: list[str] = field(default_factory=lambda: ["coco", "flickr"])
    references: int = 5
    annotators_per_style: int = 12
    # Web text the embedded LM reads besides the training captions (`lm_text`, no images): scenes
    # of its own described in these styles by annotators of its own, never the eval references.
    lm_text: int = 4000
    lm_text_styles: list[str] = field(default_factory=lambda: ["coco", "flickr", "noisy_alt", "clean_alt", "long_description"])
    shard_size: int = 2000


class WorldSpec:
    """The world's vocabulary and knobs, with the derived held-out combinations."""

    def __init__(self, cfg: WorldConfig, seed: int):
        validate_vocabulary(cfg.shapes, cfg.colours, cfg.sizes, cfg.backgrounds)
        if cfg.resolution not in (32, 64, 128, 256):
            raise ValueError(f"world.resolution must be 32, 64, 128 or 256, got {cfg.resolution}")
        if not 1 <= cfg.max_objects <= cfg.grid * cfg.grid:
            raise ValueError(f"world.max_objects must be in 1..grid^2 = {cfg.grid**2}")
        if not 0 <= cfg.heldout_per_shape < len(cfg.colours):
            raise ValueError("world.heldout_per_shape must leave every shape at least one colour")
        self.cfg = cfg
        self.seed = seed
        self.shapes = list(cfg.shapes)
        self.colours = list(cfg.colours)
        self.sizes = list(cfg.sizes)
        self.backgrounds = list(cfg.backgrounds)
        self.heldout = self._choose_heldout(np.random.default_rng([seed, 17]))
        self.allowed_colours = {s: [c for c in self.colours if (s, c) not in self.heldout] for s in self.shapes}

    def _choose_heldout(self, rng: np.random.Generator) -> frozenset[tuple[str, str]]:
        # A Latin-square assignment: every colour is held out about equally often,
        # so each shape and each colour still appears in the paired split.
        offset = int(rng.integers(len(self.colours)))
        held = set()
        for i, shape in enumerate(self.shapes):
            for k in range(self.cfg.heldout_per_shape):
                colour = self.colours[(i + offset + k * 3) % len(self.colours)]
                held.add((shape, colour))
        return frozenset(held)

    def zipf_probs(self, skew: float, order_seed: int) -> np.ndarray:
        """Long-tailed class probabilities over `self.shapes` in a seeded order."""
        ranks = np.random.default_rng([self.seed, order_seed]).permutation(len(self.shapes))
        weights = 1.0 / (ranks + 1.0) ** skew
        return weights / weights.sum()

    def to_json(self) -> dict:
        return {
            "shapes": self.shapes,
            "colours": self.colours,
            "sizes": self.sizes,
            "backgrounds": self.backgrounds,
            "grid": self.cfg.grid,
            "resolution": self.cfg.resolution,
            "max_objects": self.cfg.max_objects,
            "heldout_combinations": sorted([list(c) for c in self.heldout]),
        }


def sample_scene(
    rng: np.random.Generator,
    spec: WorldSpec,
    shape_probs: np.ndarray | None = None,
    exclude_heldout: bool = False,
    must_include: str | None = None,
) -> Scene:
    """Draw one scene. `must_include` forces one object of that class (the world LLM's prompt)."""
    cfg = spec.cfg
    # One vectorised draw per scene: scalar Generator calls dominate the cost otherwise.
    u = rng.random(2 + 3 * cfg.max_objects)
    num = 1 + min(int(u[0] * cfg.max_objects), cfg.max_objects - 1)
    cells = rng.permutation(cfg.grid * cfg.grid)[:num]
    cumulative = None if shape_probs is None else np.cumsum(shape_probs)
    objects = []
    for i, cell in enumerate(cells.tolist()):
        a, b, c = u[2 + 3 * i : 5 + 3 * i]
        if i == 0 and must_include is not None:
            shape = must_include
        elif cumulative is None:
            shape = spec.shapes[int(a * len(spec.shapes))]
        else:
            shape = spec.shapes[min(int(np.searchsorted(cumulative, a * cumulative[-1])), len(spec.shapes) - 1)]
        colours = spec.allowed_colours[shape] if exclude_heldout else spec.colours
        colour = colours[int(b * len(colours))]
        size = spec.sizes[int(c * len(spec.sizes))]
        objects.append(Obj(shape, colour, size, cell // cfg.grid, cell % cfg.grid))
    # Reading order (top-to-bottom, left-to-right) makes scenes canonical.
    objects.sort(key=lambda o: (o.row, o.col))
    background = spec.backgrounds[int(u[1] * len(spec.backgrounds))]
    return Scene(tuple(objects), background)
