"""The world LLM: answers the paper's class-based prompt inside the embedded world.

Given the filled-in prompt ("... contains the following object: heart. ..."), it
finds the class, imagines a plausible scene containing it (other objects and
colours drawn from the whole world, held-out combinations included: an LLM knows
about purple hearts even if the paired data never showed one) and describes it in
the LLM style, within the word range the prompt asks for. Like a real LLM it
sometimes misbehaves (a chatty preamble, a too-short answer, a stock answer it
gives again and again), at a rate set by `noise`, so validation has work to do.
"""

from __future__ import annotations

import re

import numpy as np

from synth2.captions.prompts import fill
from synth2.data.text import first_sentence
from synth2.world.annotate import Annotator, llm_style
from synth2.world.scene import Scene, WorldSpec, sample_scene
from synth2.world.vocab import SHAPE_WORDS

_WORD_RANGE = re.compile(r"(\d+)\s*-\s*(\d+)\s+words")


class UnknownClass(ValueError):
    pass


class WorldLLM:
    name = "world"

    def __init__(self, spec: WorldSpec, noise: float = 0.05, annotators: int = 8):
        self.spec = spec
        self.noise = noise
        self._people = [Annotator("llm", 900_000 + i, spec.cfg.grid) for i in range(annotators)]
        # class words to canonical class, longest first so "hollow square" wins over "square"
        pairs = [(w, s) for s in spec.shapes for w in SHAPE_WORDS[s]]
        self._words = sorted(pairs, key=lambda p: -len(p[0]))

    def find_class(self, prompt: str) -> str:
        lowered = prompt.lower()
        anchor = lowered.find("object:")
        text = lowered[anchor:] if anchor >= 0 else lowered
        for word, shape in self._words:
            if re.search(rf"\b{re.escape(word)}s?\b", text):
                return shape
        raise UnknownClass(f"the world LLM knows only the world's classes {self.spec.shapes}; prompt: {prompt[:120]!r}")

    def complete(self, prompt: str, seed: int) -> str:
        return self.answer(prompt, seed)[0]

    def answer(self, prompt: str, seed: int) -> tuple[str, Scene]:
        """The answer and the scene it describes (the ground truth a synthetic image is checked against)."""
        shape = self.find_class(prompt)
        rng = np.random.default_rng([seed, 4242])
        low, high = 30, 40
        match = _WORD_RANGE.search(prompt)
        if match:
            low, high = int(match.group(1)), int(match.group(2))
        scene = sample_scene(rng, self.spec, must_include=shape)
        caption = self._write(scene, rng, low, high, focus=shape)
        roll = rng.random()
        if roll < self.noise * 0.4:
            return "Sure! Here is a factual caption: " + caption, scene
        if roll < self.noise * 0.7:
            return first_sentence(caption), scene  # the first sentence lists every object
        if roll < self.noise:
            # a stock answer for this class, repeated across seeds (near-duplicates)
            stock = sample_scene(np.random.default_rng([7, len(shape)]), self.spec, must_include=shape)
            return llm_style(self._people[0], stock, np.random.default_rng(0), low, high, focus=shape), stock
        return caption, scene

    def describe(self, scene: Scene, seed: int, low: int = 30, high: int = 40) -> str:
        """A caption of a given scene in this LLM's style, as if prompted with its first object's class."""
        return self._write(scene, np.random.default_rng([seed, 4243]), low, high, focus=scene.objects[0].shape)

    def _write(self, scene: Scene, rng: np.random.Generator, low: int, high: int, focus: str) -> str:
        person = self._people[int(rng.integers(len(self._people)))]
        return llm_style(person, scene, rng, min_words=low, max_words=high, focus=focus)

    def described_scenes(self, records: list[dict], template: str) -> list[Scene | None]:
        """The scene behind each caption record ({"caption", "class", "seed"}, as `synth2 captions`
        writes them), regenerated from its class and seed; None where this LLM would not have
        written that caption (another backend, template or noise level)."""
        scenes: list[Scene | None] = []
        for record in records:
            text, scene = self.answer(fill(template, record["class"]), int(record["seed"]))
            scenes.append(scene if text.strip() == record["caption"] else None)
        return scenes
