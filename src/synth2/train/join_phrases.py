"""The phrases that join two named objects in the text-only corpora, put in place of the joins of
the paired captions.

Alt-text joins the objects it names with a comma, "and" or "+", and a generator trained on it
learns that those joins, not a relation ("a red circle to the left of a blue star"), announce a
second object (docs/generator/presets-codes.md, "The generator counts a list's joins"). The text-only corpora
join named objects in more ways ("and", "is below"). Training captions whose joins are
sometimes one of those phrases keep a join between every two objects, as the paired captions do,
but in the wordings the corpora use. Not the paper's recipe, which trains on the paired captions
as they are. An object is found by the embedded world's words for sizes, colours and shapes
(`world/vocab.py`), so the lever is for the embedded world's captions.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from synth2.world.annotate import GENERIC_SHAPE_WORDS
from synth2.world.vocab import COLOUR_WORDS, SHAPE_WORDS, SIZE_WORDS

# A named object: an article, size and colour words, then the word that names its shape ("a small
# red round dot"). The article belongs to the object, not to the join: with "and a" and ", a" as
# joins, the generator drew a second object for every "a", as in "one shape on a dark backdrop: a
# blue star" (docs/generator/small.md, "Joins in the corpora's wordings on small").
_MODIFIERS = sorted({w for words in (*SIZE_WORDS.values(), *COLOUR_WORDS.values()) for w in words})
_NOUNS = sorted({w for words in SHAPE_WORDS.values() for w in words} | set(GENERIC_SHAPE_WORDS), key=lambda w: (-len(w), w))
_OBJECT = re.compile(r"\b(?:(?:a|an|the)\s+)?(?:(?:%s)\s+)*(?:%s)\b" % ("|".join(map(re.escape, _MODIFIERS)), "|".join(map(re.escape, _NOUNS))))
_SENTENCE_END = re.compile(r"[.!?]")
_TOKEN = re.compile(r"[a-z]+(?:[-'][a-z]+)*|[,;:+&|/]")


def objects(text: str) -> list[tuple[int, int]]:
    """Start and end of each object `text` names, in order (lower-cased text)."""
    return [m.span() for m in _OBJECT.finditer(text)]


def _joins(text: str) -> list[tuple[int, int, list[str]]]:
    """Each stretch between two consecutive objects of `text` (lower-cased): its start, its end
    and its words and marks."""
    spans = objects(text)
    return [(end, start, _TOKEN.findall(text[end:start])) for (_, end), (start, _) in zip(spans, spans[1:])]


def _render(tokens: list[str]) -> str:
    """Tokens as text, a comma, semicolon or colon against the word before it."""
    return re.sub(r" ([,;:])", r"\1", " ".join(tokens))


def join_phrases(corpora: Iterable[str], max_words: int = 6) -> tuple[list[str], np.ndarray]:
    """Every phrase of 1 to `max_words` words and marks that stands between two named objects of
    one sentence of `corpora`, and the probability of each by its frequency there (sorted by
    phrase, so the result does not depend on the corpora's order)."""
    counts: Counter[str] = Counter()
    for text in corpora:
        for sentence in _SENTENCE_END.split(text.lower()):
            for _, _, tokens in _joins(sentence):
                if 1 <= len(tokens) <= max_words:
                    counts[_render(tokens)] += 1
    phrases = sorted(counts)
    frequency = np.array([counts[p] for p in phrases], dtype=np.float64)
    return phrases, frequency / max(frequency.sum(), 1.0)


@dataclass(frozen=True)
class JoinPhrases:
    """Phrases to put in place of a caption's joins, drawn by `probabilities`, each join replaced
    with probability `p`."""

    phrases: list[str]
    probabilities: np.ndarray
    p: float

    def reword(self, caption: str, rng: np.random.Generator) -> str:
        """`caption` with each join between two of its named objects replaced, with probability
        `p`, by a drawn phrase; everything else as it was."""
        pieces, last = [], 0
        for end, start, tokens in _joins(caption.lower()):
            if not tokens or rng.random() >= self.p:
                continue
            phrase = self.phrases[int(rng.choice(len(self.phrases), p=self.probabilities))]
            pieces += [caption[last:end], phrase if phrase[0] in ",;:" else f" {phrase}", " "]
            last = start
        return "".join(pieces) + caption[last:]
