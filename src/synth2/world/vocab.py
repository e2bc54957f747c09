"""The embedded world's vocabulary: shape classes, colours, sizes, backgrounds, and their words.

Each shape is an implicit function over object-local coordinates (u, v) in [-1, 1]
(v grows downwards) that is True inside the shape. They are chosen to stay
distinguishable at 32 px, where a small object is about six pixels wide.
"""

from __future__ import annotations

import numpy as np

Mask = np.ndarray


def _circle(u, v):
    return u * u + v * v <= 1.0


def _square(u, v):
    return np.maximum(np.abs(u), np.abs(v)) <= 0.82


def _triangle(u, v):
    # apex at the top, flat base at the bottom
    return (v <= 0.85) & (np.abs(u) <= (v + 0.95) * 0.53)


def _diamond(u, v):
    return np.abs(u) + np.abs(v) <= 1.0


def _cross(u, v):
    arm = 0.34
    return ((np.abs(u) <= arm) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= arm) & (np.abs(u) <= 1.0))


def _ring(u, v):
    r2 = u * u + v * v
    return (r2 <= 1.0) & (r2 >= 0.5 * 0.5)


def _heart(u, v):
    # the curve spans x in [-1.14, 1.14], y in [-1.0, 1.25]; centre and scale it into the unit box
    x, y = 1.15 * u, 0.125 - 1.12 * v
    return (x * x + y * y - 1.0) ** 3 - x * x * y**3 <= 0.0


def _star(u, v):
    # five-pointed star: inside if the radius is below the star's boundary at that angle
    theta = np.arctan2(u, -v)  # 0 points up
    sector = np.mod(theta, 2 * np.pi / 5) - np.pi / 5
    outer, inner = 1.0, 0.42
    t = np.abs(sector) / (np.pi / 5)
    boundary = inner + (outer - inner) * t
    return np.sqrt(u * u + v * v) <= boundary


def _crescent(u, v):
    return (u * u + v * v <= 1.0) & ((u - 0.5) ** 2 + (v + 0.15) ** 2 > 0.72**2)


def _bar(u, v):
    return (np.abs(u) <= 1.0) & (np.abs(v) <= 0.42)


def _frame(u, v):
    m = np.maximum(np.abs(u), np.abs(v))
    return (m <= 0.9) & (m >= 0.45)


def _column(u, v):
    return (np.abs(v) <= 1.0) & (np.abs(u) <= 0.42)


SHAPE_FUNCTIONS = {
    "circle": _circle,
    "square": _square,
    "triangle": _triangle,
    "diamond": _diamond,
    "cross": _cross,
    "ring": _ring,
    "heart": _heart,
    "star": _star,
    "crescent": _crescent,
    "bar": _bar,
    "frame": _frame,
    "column": _column,
}

# Words annotators may use for each class; the first is the canonical class name.
SHAPE_WORDS = {
    "circle": ["circle", "disc", "round dot"],
    "square": ["square", "block"],
    "triangle": ["triangle"],
    "diamond": ["diamond", "rhombus"],
    "cross": ["cross", "plus sign"],
    "ring": ["ring", "hoop", "donut"],
    "heart": ["heart"],
    "star": ["star"],
    "crescent": ["crescent", "moon"],
    "bar": ["bar", "stripe"],
    "frame": ["frame", "hollow square"],
    "column": ["column", "pillar"],
}

# How an LLM asked about an object elaborates on it (its prompted class gets one of these).
SHAPE_DESCRIPTIONS = {
    "circle": ["is perfectly round, with a smooth curved edge", "has no corners at all, only one smooth round outline"],
    "square": ["has four equal straight sides and sharp right-angled corners", "is a solid block with four even edges"],
    "triangle": ["points upwards, with three straight edges and a flat base", "has a pointed top and a flat bottom edge"],
    "diamond": ["is balanced on one of its four corners, with slanted sides", "stands on its tip like a rhombus"],
    "cross": ["is made of two thick bars meeting at right angles", "has four equal arms like a plus sign"],
    "ring": ["is a hollow circle with an empty centre", "is a round loop with a hole in the middle"],
    "heart": ["has two rounded lobes at the top and a point at the bottom", "has curved upper lobes that meet in a point below"],
    "star": ["has five sharp points radiating from its centre", "has five narrow spikes around a small centre"],
    "crescent": ["is a curved sliver shaped like a new moon", "is a thin arc that bends to one side like a moon"],
    "bar": ["is a long flat rectangle lying on its side", "is wide and short, like a horizontal stripe"],
    "frame": ["is a square outline with a hollow middle", "is an empty square border with thick sides"],
    "column": ["is a tall narrow upright rectangle", "stands upright like a thin pillar"],
}

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 90, 230),
    "yellow": (240, 215, 40),
    "purple": (140, 60, 200),
    "orange": (250, 140, 30),
    "pink": (250, 140, 200),
    "cyan": (40, 210, 220),
    "white": (245, 245, 245),
    "brown": (130, 80, 40),
}

COLOUR_WORDS = {
    "red": ["red"],
    "green": ["green"],
    "blue": ["blue"],
    "yellow": ["yellow"],
    "purple": ["purple", "violet"],
    "orange": ["orange"],
    "pink": ["pink"],
    "cyan": ["cyan", "turquoise"],
    "white": ["white"],
    "brown": ["brown"],
}

BACKGROUNDS = {
    "black": (18, 18, 18),
    "grey": (115, 115, 115),
    "beige": (200, 190, 160),
    "navy": (20, 28, 70),
}

BACKGROUND_WORDS = {
    "black": ["black", "dark"],
    "grey": ["grey", "gray"],
    "beige": ["beige", "sand-coloured"],
    "navy": ["navy", "dark blue"],
}

# Radius as a fraction of half a grid cell.
SIZES = {"small": 0.6, "medium": 0.75, "large": 0.9}

SIZE_WORDS = {
    "small": ["small", "little", "tiny"],
    "medium": ["medium-sized", "mid-sized"],
    "large": ["large", "big"],
}


def validate_vocabulary(shapes: list[str], colours: list[str], sizes: list[str], backgrounds: list[str]) -> None:
    """Raise ValueError naming any word the world does not know."""
    for kind, chosen, known in (
        ("shape", shapes, SHAPE_FUNCTIONS),
        ("colour", colours, COLOURS),
        ("size", sizes, SIZES),
        ("background", backgrounds, BACKGROUNDS),
    ):
        unknown = [c for c in chosen if c not in known]
        if unknown:
            raise ValueError(f"unknown {kind}(s) {unknown}; the world knows {sorted(known)}")
        if len(set(chosen)) != len(chosen):
            raise ValueError(f"repeated {kind} in {chosen}")
