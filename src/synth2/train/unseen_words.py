"""Words the generator has no images for, inserted into its training captions.

The generator learns from the paired captions only, so a word they never use (an article, a
preposition, a phrase of another caption style) means nothing to it, and at sampling time such
words in the benchmark's or the LLM's captions cost it what it could otherwise draw
(docs/generator/errors.md). Training it on paired captions with such words inserted teaches it to pass
over them. The words come from the text-only corpora, which the method has anyway; no image and
no eval caption is involved. Not the paper's recipe, which trains on the paired captions as they are.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

import numpy as np

from synth2.train.join_phrases import JoinPhrases

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


# Words and marks that join the items of a list ("red circle, blue star and green heart"). Alt-text
# joins every object it names with one, so a generator trained on it can learn to count the joins
# rather than the objects, and then draws one object for "a red circle to the left of a blue star".
CONNECTIVES = frozenset({"and", "&", "+", "plus", "with", "|", "/", ",", ";"})


def _word(words: list[str], probabilities: np.ndarray, rng: np.random.Generator) -> str:
    return words[int(rng.choice(len(words), p=probabilities))]


def _draw(words: list[str], probabilities: np.ndarray, max_words: int, rng: np.random.Generator) -> list[str]:
    """1 to `max_words` words drawn by `probabilities`."""
    return [_word(words, probabilities, rng) for _ in range(int(rng.integers(1, max_words + 1)))]


def replace_connectives(tokens: list[str], words: list[str], probabilities: np.ndarray, max_words: int, p: float,
                        rng: np.random.Generator) -> list[str]:
    """`tokens` with each connective (a CONNECTIVES word, or a word's trailing comma or semicolon)
    replaced, with probability `p`, by 1 to `max_words` drawn words."""
    out = []
    for token in tokens:
        word, mark = (token[:-1], token[-1]) if len(token) > 1 and token[-1] in ",;" else (token, "")
        if (mark or word.lower() in CONNECTIVES) and rng.random() < p:
            out += ([word] if mark else []) + _draw(words, probabilities, max_words, rng)
        else:
            out.append(token)
    return out


def insert_words(caption: str, words: list[str], probabilities: np.ndarray, max_words: int, rng: np.random.Generator,
                 connective_p: float = 0.0) -> str:
    """`caption` with 1 to `max_words` words drawn by `probabilities`, each at a random word
    boundary, after its connectives are each replaced by drawn words with probability `connective_p`."""
    tokens = caption.split()
    if connective_p > 0:
        tokens = replace_connectives(tokens, words, probabilities, max_words, connective_p, rng)
    for _ in range(int(rng.integers(1, max_words + 1))):
        tokens.insert(int(rng.integers(0, len(tokens) + 1)), _word(words, probabilities, rng))
    return " ".join(tokens)


def caption_variants(captions: list[str], words: list[str], probabilities: np.ndarray, variants: int, max_words: int, seed: int,
                     connective_p: float = 0.0, joins: JoinPhrases | None = None) -> list[list[str]]:
    """`variants` lists, each holding every caption with its own inserted words (`insert_words`),
    after its joins are reworded by `joins`, if given."""
    if not words:
        raise ValueError("no word of the text-only corpora is missing from the paired captions: nothing to insert")
    rng = np.random.default_rng(seed)

    def variant(caption: str) -> str:
        return insert_words(joins.reword(caption, rng) if joins else caption, words, probabilities, max_words, rng, connective_p)

    return [[variant(c) for c in captions] for _ in range(variants)]
