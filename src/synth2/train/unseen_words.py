"""Words the generator has no images for, inserted into its training captions.

The generator learns from the paired captions only, so a word they never use (an article, a
preposition, a phrase of another caption style) means nothing to it, and at sampling time such
words in the benchmark's or the LLM's captions cost it what it could otherwise draw
(docs/generator.md). Training it on paired captions with such words inserted teaches it to pass
over them. The words come from the text-only corpora, which the method has anyway; no image and
no eval caption is involved. Not the paper's recipe, which trains on the paired captions as they are.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

import numpy as np

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def words_of(text: str) -> list[str]:
    """Lower-cased words of `text`, punctuation and digits dropped."""
    return _WORD.findall(text.lower())


def unseen_words(paired: Iterable[str], corpora: Iterable[str]) -> tuple[list[str], np.ndarray]:
    """The word types of `corpora` that no paired caption uses, and the probability of each by
    its running frequency in the corpora (sorted by word, so the result does not depend on the
    corpora's order)."""
    seen = {w for caption in paired for w in words_of(caption)}
    counts = Counter(w for text in corpora for w in words_of(text) if w not in seen)
    words = sorted(counts)
    frequency = np.array([counts[w] for w in words], dtype=np.float64)
    return words, frequency / max(frequency.sum(), 1.0)


def insert_words(caption: str, words: list[str], probabilities: np.ndarray, max_words: int, rng: np.random.Generator) -> str:
    """`caption` with 1 to `max_words` words drawn by `probabilities`, each at a random word boundary."""
    tokens = caption.split()
    for _ in range(int(rng.integers(1, max_words + 1))):
        tokens.insert(int(rng.integers(0, len(tokens) + 1)), words[int(rng.choice(len(words), p=probabilities))])
    return " ".join(tokens)


def caption_variants(captions: list[str], words: list[str], probabilities: np.ndarray, variants: int, max_words: int, seed: int) -> list[list[str]]:
    """`variants` lists, each holding every caption with its own inserted words."""
    if not words:
        raise ValueError("no word of the text-only corpora is missing from the paired captions: nothing to insert")
    rng = np.random.default_rng(seed)
    return [[insert_words(c, words, probabilities, max_words, rng) for c in captions] for _ in range(variants)]
