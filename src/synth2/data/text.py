"""Caption cleaning: the text half of bad-input handling."""

from __future__ import annotations

import re

DEFAULT_MAX_CAPTION_WORDS = 200

_SPACE = re.compile(r"\s+")
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+")


def first_sentence(text: str) -> str:
    """The text up to and including its first sentence's end mark (all of it if it has one sentence)."""
    return _SENTENCE_BREAK.split(text, maxsplit=1)[0]


class BadCaption(ValueError):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def clean_caption(raw: str | bytes, max_words: int = DEFAULT_MAX_CAPTION_WORDS) -> tuple[str, str | None]:
    """Return (caption, conversion or None); raise BadCaption for text we cannot use.

    Whitespace is collapsed; captions longer than `max_words` are cut at that many
    words (reported as a conversion); empty and non-UTF-8 captions are refused, since
    guessing an encoding could silently corrupt the text.
    """
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadCaption("caption_not_utf8") from None
    if not isinstance(raw, str):
        raise BadCaption("caption_not_text", repr(raw)[:60])
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: bytes that were not UTF-8 (e.g. CSV read with surrogateescape)
        raise BadCaption("caption_not_utf8") from None
    text = _SPACE.sub(" ", raw.replace("\x00", " ")).strip()
    if not text:
        raise BadCaption("empty_caption")
    words = text.split(" ")
    if len(words) > max_words:
        return " ".join(words[:max_words]), "caption_truncated"
    return text, None


_KEY_CHARS = re.compile(r"[^A-Za-z0-9_-]+")


def safe_key(name: str) -> str:
    """A WebDataset key: no dots (they separate key from extension), no slashes."""
    key = _KEY_CHARS.sub("_", name).strip("_")
    return key or "item"
