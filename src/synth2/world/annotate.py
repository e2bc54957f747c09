"""Annotators: turn a scene into a caption the way a particular person would.

A *style* is a family of phrasings: the paper's datasets each have one (docs/world.md):
web alt-text as in Conceptual Captions (`noisy_alt`: terse, partial, keyword lists, web
boilerplate, some wrong attributes), high-quality alt-text as in WebLI (`clean_alt`), long
web descriptions as in LTIP (`long_description`), descriptive captions as in COCO (`coco`) and
Flickr30k (`flickr`), and the LLM's "This is an image of ..." paragraphs (`llm`). `alt` and
`ltip` are shorter web styles kept for older configurations. An *annotator* is one person
within a style: fixed synonym preferences, a habit of mentioning sizes, positions or the
background, an object order, and a chance of leaving an object out. Eval images get
references from several independent annotators of one style.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synth2.captions.prompts import CAPTION_OPENING
from synth2.world.scene import Obj, Scene
from synth2.world.vocab import BACKGROUND_WORDS, COLOUR_WORDS, SHAPE_DESCRIPTIONS, SHAPE_WORDS, SIZE_WORDS

NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def with_article(phrase: str) -> str:
    return f"{article(phrase)} {phrase}"


def position_phrase(obj: Obj, grid: int) -> str:
    def third(i: int) -> int:
        return min(int(3 * (i + 0.5) / grid), 2)

    r, c = third(obj.row), third(obj.col)
    vertical = ["top", "middle", "bottom"][r]
    horizontal = ["left", "middle", "right"][c]
    if r == 1 and c == 1:
        return "in the middle"
    if r == 1:
        return f"on the {horizontal}"
    if c == 1:
        return f"at the {vertical}"
    return f"in the {vertical} {horizontal} corner"


# how a caption places one object relative to another (`relation`)
RELATIONS = ("to the left of", "to the right of", "above", "below")


def relation(a: Obj, b: Obj) -> str:
    """Where `a` is relative to `b` (one of RELATIONS), along the axis that separates them most."""
    left, right, above, below = RELATIONS
    dr, dc = a.row - b.row, a.col - b.col
    if abs(dc) >= abs(dr):
        return left if dc < 0 else right
    return above if dr < 0 else below


@dataclass
class Annotator:
    style: str
    seed: int
    grid: int = 3
    # False for a careful annotator who names every object, rightly (the generator's eval prompts)
    omits: bool = True

    def __post_init__(self):
        rng = np.random.default_rng([self.seed, 101])
        # Habits drawn once per person.
        self.shape_word = {s: int(rng.integers(len(w))) if rng.random() < 0.35 else 0 for s, w in SHAPE_WORDS.items()}
        self.colour_word = {c: int(rng.integers(len(w))) if rng.random() < 0.3 else 0 for c, w in COLOUR_WORDS.items()}
        self.size_word = {s: int(rng.integers(len(w))) for s, w in SIZE_WORDS.items()}
        self.bg_word = {b: int(rng.integers(len(w))) for b, w in BACKGROUND_WORDS.items()}
        self.p_size = float(rng.uniform(0.3, 0.95))
        self.p_position = float(rng.uniform(0.1, 0.6))
        self.p_background = float(rng.uniform(0.1, 0.6))
        self.p_relation = float(rng.uniform(0.3, 0.9))
        self.p_omit = float(rng.uniform(0.0, 0.12))
        self.shuffle_order = bool(rng.random() < 0.4)
        self.template_bias = rng.dirichlet(np.ones(8) * 2.0)
        # web alt-text habits (noisy_alt), drawn last so that every earlier habit stays as it was
        self.p_drop = float(rng.uniform(0.1, 0.35))  # each object after the first left out
        self.p_wrong_colour = float(rng.uniform(0.02, 0.08))  # an object's colour named wrong
        self.p_generic = float(rng.uniform(0.0, 0.15))  # "shape" or "icon" for the class name
        self.p_boilerplate = float(rng.uniform(0.3, 0.8))  # irrelevant web words

    # words ---------------------------------------------------------------
    def shape(self, s: str) -> str:
        words = SHAPE_WORDS[s]
        return words[self.shape_word[s] % len(words)]

    def colour(self, c: str) -> str:
        words = COLOUR_WORDS[c]
        return words[self.colour_word[c] % len(words)]

    def size(self, s: str) -> str:
        words = SIZE_WORDS[s]
        return words[self.size_word[s] % len(words)]

    def background(self, b: str) -> str:
        words = BACKGROUND_WORDS[b]
        return words[self.bg_word[b] % len(words)]

    def noun(self, obj: Obj, rng: np.random.Generator, size: bool | None = None) -> str:
        use_size = rng.random() < self.p_size if size is None else size
        parts = ([self.size(obj.size)] if use_size else []) + [self.colour(obj.colour), self.shape(obj.shape)]
        return " ".join(parts)

    def pick(self, rng: np.random.Generator, n: int) -> int:
        """One of n templates, by this annotator's preferences."""
        cumulative = np.cumsum(self.template_bias[:n])
        return min(int(np.searchsorted(cumulative, rng.random() * cumulative[-1])), n - 1)

    def ordered(self, scene: Scene, rng: np.random.Generator, allow_omit: bool = True) -> list[Obj]:
        objs = list(scene.objects)
        if self.shuffle_order:
            objs = [objs[i] for i in rng.permutation(len(objs))]
        if allow_omit and self.omits and len(objs) == 3 and rng.random() < self.p_omit:
            objs.pop(int(rng.integers(3)))
        return objs

    def describe(self, scene: Scene, rng: np.random.Generator) -> str:
        return STYLES[self.style](self, scene, rng)


def join_list(items: list[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


# --- styles -------------------------------------------------------------------


def coco_style(a: Annotator, scene: Scene, rng: np.random.Generator) -> str:
    objs = a.ordered(scene, rng)
    nps = [with_article(a.noun(o, rng)) for o in objs]
    bg = f" on {with_article(a.background(scene.background))} background" if rng.random() < a.p_background else ""
    if len(objs) == 1:
        pos = f" {position_phrase(objs[0], a.grid)}" if rng.random() < a.p_position else ""
        options = [f"{nps[0]}{pos}{bg}", f"there is {nps[0]}{pos}{bg}", f"{nps[0]} by itself{bg}", f"a picture of {nps[0]}{pos}"]
    elif len(objs) == 2 and rng.random() < a.p_relation:
        rel = relation(objs[0], objs[1])
        options = [f"{nps[0]} {rel} {nps[1]}{bg}", f"there is {nps[0]} {rel} {nps[1]}", f"{nps[0]} sitting {rel} {nps[1]}"]
    else:
        count = NUMBER_WORDS[len(objs)]
        options = [f"{join_list(nps)}{bg}", f"{count} shapes, {join_list(nps)}", f"there are {join_list(nps)}{bg}"]
    return options[a.pick(rng, len(options))]


def flickr_style(a: Annotator, scene: Scene, rng: np.random.Generator) -> str:
    objs = a.ordered(scene, rng)
    nps = [with_article(a.noun(o, rng)) for o in objs]
    bg_word = a.background(scene.background)
    n = len(objs)
    shapes_word = "shape" if n == 1 else "shapes"
    if n == 2 and rng.random() < a.p_relation:
        rel = relation(objs[0], objs[1])
        options = [
            f"{nps[0].capitalize()} is placed {rel} {nps[1]} against {with_article(bg_word)} backdrop.",
            f"The picture shows {nps[0]} {rel} {nps[1]}.",
            f"Against {with_article(bg_word)} backdrop, {nps[0]} appears {rel} {nps[1]}.",
        ]
    else:
        options = [
            f"{NUMBER_WORDS[n].capitalize()} {shapes_word} on {with_article(bg_word)} backdrop: {join_list(nps)}.",
            f"The picture shows {join_list(nps)}.",
            f"Against {with_article(bg_word)} backdrop we see {join_list(nps)}.",
        ]
    return options[a.pick(rng, len(options))]


def ltip_style(a: Annotator, scene: Scene, rng: np.random.Generator) -> str:
    objs = a.ordered(scene, rng)
    nps = [with_article(a.noun(o, rng, size=False)) for o in objs]
    options = [f"image of {join_list(nps)}", f"{join_list(nps)} on {a.background(scene.background)}", f"illustration with {join_list(nps)}"]
    return options[a.pick(rng, len(options))]


def alt_style(a: Annotator, scene: Scene, rng: np.random.Generator) -> str:
    objs = a.ordered(scene, rng)
    words = [a.noun(o, rng) for o in objs]
    bg = a.background(scene.background)
    options = [
        f"{', '.join(words)} | {bg} background",
        f"stock graphic: {' and '.join(words)}",
        f"{' + '.join(words)} icon on {bg}",
    ]
    return options[a.pick(rng, len(options))]


WEB_BOILERPLATE = ["vector", "clipart", "free download", "hd wallpaper", "png", "illustration", "stock image",
                   "isolated", "flat design", "logo template", "icon set", "royalty free"]
GENERIC_SHAPE_WORDS = ["shape", "icon", "symbol"]


def noisy_alt_style(a: Annotator, scene: Scene, rng: np.random.Generator) -> str:
    """Conceptual Captions' web alt-text: keyword lists, objects left out, web boilerplate, the odd
    wrong colour or a generic word for the class, no articles."""
    objs = list(scene.objects)
    if a.shuffle_order:
        objs = [objs[i] for i in rng.permutation(len(objs))]
    careful = not a.omits  # names every object by its own colour and class word
    if not careful:
        objs = objs[:1] + [o for o in objs[1:] if rng.random() >= a.p_drop]
    words = []
    for o in objs:
        colour = o.colour if careful or rng.random() >= a.p_wrong_colour else str(rng.choice([c for c in COLOUR_WORDS if c != o.colour]))
        shape = a.shape(o.shape) if careful or rng.random() >= a.p_generic else GENERIC_SHAPE_WORDS[int(rng.integers(len(GENERIC_SHAPE_WORDS)))]
        size = [a.size(o.size)] if rng.random() < a.p_size * 0.5 else []
        words.append(" ".join(size + [a.colour(colour), shape]))
    bg = a.background(scene.background)
    options = [
        f"{', '.join(words)} | {bg} background",
        f"{' and '.join(words)}",
        f"{' + '.join(words)} on {bg}",
        f"{', '.join(words)}, {bg}",
    ]
    text = options[a.pick(rng, len(options))]
    if rng.random() < a.p_boilerplate:
        noise = WEB_BOILERPLATE[int(rng.integers(len(WEB_BOILERPLATE)))]
        text = f"{noise} {text}" if rng.random() < 0.4 else f"{text} {noise}"
    return text


def clean_alt_style(a: Annotator, scene: Scene, rng: np.random.Generator) -> str:
    """WebLI's high-quality alt-text: every object, right attributes, short noun phrases."""
    objs = a.ordered(scene, rng, allow_omit=False)
    nps = [a.noun(o, rng) for o in objs]
    if rng.random() < 0.5:
        nps = [with_article(n) for n in nps]
    bg = a.background(scene.background)
    options = [f"{join_list(nps)} on {with_article(bg)} background", f"{join_list(nps)}", f"{join_list(nps)} against {bg}"]
    return options[a.pick(rng, len(options))]


DESCRIPTION_FILLERS = [
    "It works well as a simple graphic for presentations.",
    "The design is minimal and clean.",
    "Suitable for printing or for use on a website.",
    "A simple composition with bold colours.",
]


def long_description_style(a: Annotator, scene: Scene, rng: np.random.Generator) -> str:
    """LTIP's long web descriptions: several sentences with relations, sizes and positions, and web filler."""
    objs = a.ordered(scene, rng)
    nps = [with_article(a.noun(o, rng, size=True)) for o in objs]
    bg = a.background(scene.background)
    opening = ["This graphic shows", "Here we see", "The picture contains"][a.pick(rng, 3)]
    sentences = [f"{opening} {join_list(nps)} on {with_article(bg)} background."]
    if len(objs) >= 2:
        sentences.append(f"The {a.colour(objs[0].colour)} {a.shape(objs[0].shape)} is {relation(objs[0], objs[1])} the {a.colour(objs[1].colour)} {a.shape(objs[1].shape)}.")
    placed = objs[int(rng.integers(len(objs)))]
    sentences.append(f"The {a.shape(placed.shape)} sits {position_phrase(placed, a.grid)}.")
    sentences.append(DESCRIPTION_FILLERS[int(rng.integers(len(DESCRIPTION_FILLERS)))])
    return " ".join(sentences)


LLM_FILLERS = [
    "No other objects are visible in the scene.",
    "The background is plain and uniform, without any texture.",
    "The edges of every shape are sharp and clearly defined.",
    "The shapes do not overlap or touch each other.",
    "The image contains no text, people or animals.",
    "The lighting is even across the whole frame.",
]


def llm_style(a: Annotator, scene: Scene, rng: np.random.Generator, min_words: int = 30, max_words: int = 40, focus: str | None = None) -> str:
    """A factual 30-40 word paragraph beginning "This is an image of", as the paper's prompt asks.

    Like an LLM prompted with a class, it elaborates on the `focus` class's look.
    """
    objs = list(scene.objects)
    if a.shuffle_order:
        objs = [objs[i] for i in rng.permutation(len(objs))]
    bg = a.background(scene.background)
    nps = [with_article(a.noun(o, rng, size=True)) for o in objs]
    sentences = [f"{CAPTION_OPENING} {join_list(nps)} on {with_article(bg)} background."]
    if focus is not None:
        options = SHAPE_DESCRIPTIONS[focus]
        sentences.append(f"The {a.shape(focus)} {options[int(rng.integers(len(options)))]}.")
    for o in objs:
        sentences.append(f"The {a.shape(o.shape)} is {a.colour(o.colour)} and sits {position_phrase(o, a.grid)}.")
    if len(objs) >= 2:
        first, second = (f"{a.colour(o.colour)} {a.shape(o.shape)}" for o in objs[:2])
        sentences.append(f"The {first} is {relation(objs[0], objs[1])} the {second}.")
    fillers = [LLM_FILLERS[i] for i in rng.permutation(len(LLM_FILLERS))]
    while sum(len(s.split()) for s in sentences) < min_words and fillers:
        sentences.append(fillers.pop())
    while sum(len(s.split()) for s in sentences) > max_words and len(sentences) > 1:
        sentences.pop(-1)
    return " ".join(sentences)


STYLES = {
    "coco": coco_style,
    "flickr": flickr_style,
    "noisy_alt": noisy_alt_style,
    "clean_alt": clean_alt_style,
    "long_description": long_description_style,
    "ltip": ltip_style,
    "alt": alt_style,
    "llm": llm_style,
}


def annotators(style: str, count: int, seed: int, grid: int) -> list[Annotator]:
    if style not in STYLES:
        raise ValueError(f"unknown caption style {style!r}; known: {sorted(STYLES)}")
    return [Annotator(style, seed * 1000 + i, grid) for i in range(count)]
