"""Caption prompts. The default is Synth²'s class-based prompt (section 3.1), verbatim."""

from __future__ import annotations

# how the paper's prompt asks every caption to open
CAPTION_OPENING = "This is an image of"

PAPER_PROMPT = (
    "Make up a human-annotated description of an image that contains the following object: [object]. "
    "The caption should be around 30-40 words long. Describing the different components of the scene in an "
    "objective and unbiased way. Do not add subjective judgments about the image, it should be as factual as "
    "possible. Do not use fluffy, poetic language. Respond only with the caption itself, beginning with "
    f'"{CAPTION_OPENING}".'
)

PLACEHOLDER = "[object]"


def fill(template: str, cls: str) -> str:
    if PLACEHOLDER not in template:
        raise ValueError(f"caption prompt template must contain {PLACEHOLDER!r}: {template[:80]!r}")
    return template.replace(PLACEHOLDER, cls)
