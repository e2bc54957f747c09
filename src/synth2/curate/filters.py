"""Caption-pool filters in the spirit of Data-Juicer's text operators (SynthVLM appendix).

Each rule keeps or rejects a caption by one statistic; rejects are counted per rule
(a caption can fail several). Perplexity under the frozen LM is computed in batches.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from synth2.models.device import device_of


@dataclass
class FilterConfig:
    min_alphanumeric_ratio: float = 0.7
    max_char_repetition_ratio: float = 0.5  # share of repeated character 10-grams
    max_word_repetition_ratio: float = 0.4  # share of repeated word 3-grams
    max_special_char_ratio: float = 0.15
    min_words: int = 5
    max_words: int = 80
    flagged_words: list[str] = field(default_factory=lambda: ["nsfw", "porn", "xxx", "nude", "gore"])
    max_perplexity: float = 0.0  # 0 = off; else reject captions the LM finds more surprising


_SPECIAL = re.compile(r"[^\w\s]", re.UNICODE)


def alphanumeric_ratio(text: str) -> float:
    return sum(c.isalnum() for c in text) / max(len(text), 1)


def special_char_ratio(text: str) -> float:
    return len(_SPECIAL.findall(text)) / max(len(text), 1)


def _repetition(items: list, n: int) -> float:
    grams = [tuple(items[i : i + n]) for i in range(len(items) - n + 1)]
    if not grams:
        return 0.0
    counts = Counter(grams)
    return sum(c for c in counts.values() if c > 1) / len(grams)


def char_repetition_ratio(text: str, n: int = 10) -> float:
    return _repetition(list(text), n)


def word_repetition_ratio(text: str, n: int = 3) -> float:
    return _repetition(text.lower().split(), n)


def rule_failures(text: str, cfg: FilterConfig) -> list[str]:
    """Names of the rules `text` fails (perplexity is checked separately, in batches)."""
    words = text.split()
    failed = []
    if alphanumeric_ratio(text.replace(" ", "")) < cfg.min_alphanumeric_ratio:
        failed.append("alphanumeric_ratio")
    if char_repetition_ratio(text) > cfg.max_char_repetition_ratio:
        failed.append("char_repetition")
    if word_repetition_ratio(text) > cfg.max_word_repetition_ratio:
        failed.append("word_repetition")
    if special_char_ratio(text) > cfg.max_special_char_ratio:
        failed.append("special_chars")
    if not cfg.min_words <= len(words) <= cfg.max_words:
        failed.append("length")
    flagged = {w.lower() for w in cfg.flagged_words}
    if any(w.lower().strip(".,;:!?\"'") in flagged for w in words):
        failed.append("flagged_words")
    return failed


def caption_perplexities(lm, captions: list[str], batch_size: int = 128) -> list[float]:
    out = []
    with torch.no_grad():
        for start in range(0, len(captions), batch_size):
            ids, mask = (t.to(device_of(lm)) for t in lm.tokenize(captions[start : start + batch_size], add_eos=True))
            logits = lm.model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            targets = ids[:, 1:].masked_fill(~mask[:, 1:], -100)
            nll = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=-100, reduction="none").sum(1)
            out += [math.exp(float(n) / max(int(m), 1)) for n, m in zip(nll, mask[:, 1:].sum(1))]
    return out


def filter_captions(captions: list[str], cfg: FilterConfig, lm=None) -> tuple[list[int], dict[str, int]]:
    """Indices of the captions that pass every rule, and reject counts per rule."""
    rejects: Counter = Counter()
    failures = [rule_failures(c, cfg) for c in captions]
    if cfg.max_perplexity > 0:
        if lm is None:
            raise ValueError("the perplexity filter needs the LM")
        for fails, ppl in zip(failures, caption_perplexities(lm, captions)):
            if ppl > cfg.max_perplexity:
                fails.append("perplexity")
    for fails in failures:
        rejects.update(fails)
    keep = [i for i, fails in enumerate(failures) if not fails]
    return keep, dict(sorted(rejects.items()))
