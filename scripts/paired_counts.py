#!/usr/bin/env python3
"""How many objects a world split's images show, against how many their captions name.

    python scripts/paired_counts.py RUN/world/paired

A generator that modelled its training pairs exactly would draw, for a caption naming k
objects, as many as the training images show for such captions; this prints that rate, the
ceiling the paired data sets for drawing exactly the caption's objects. A caption names as many
objects as it has colour words outside its background phrase: that holds for the alt-text styles
(`noisy_alt`, `clean_alt`, `alt`), which name each object once with one colour, and not for the
styles that restate objects (`llm`, `long_description`).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter

from synth2.data.quality import QualityReport
from synth2.data.shards import read_pairs
from synth2.world.annotate import BACKGROUND_WORDS, COLOUR_WORDS

ALT_STYLES = {"noisy_alt", "clean_alt", "alt"}
COLOUR_TOKENS = {word for words in COLOUR_WORDS.values() for word in words}
# background phrases that contain a colour word ("dark blue")
BACKGROUND_PHRASES = sorted((w for words in BACKGROUND_WORDS.values() for w in words if " " in w), key=len, reverse=True)


def named_objects(caption: str) -> int:
    text = caption.lower()
    for phrase in BACKGROUND_PHRASES:
        text = text.replace(phrase, " ")
    return sum(token in COLOUR_TOKENS for token in re.findall(r"[a-z]+", text))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shards", help="a world split's shard directory, e.g. RUN/world/paired")
    args = parser.parse_args(argv)
    report = QualityReport(source=args.shards, max_bad_fraction=1.0)
    shown_by_named: dict[int, Counter] = {}
    other_styles = 0
    for pair in read_pairs(args.shards, decode_images=False, report=report, split=False):
        if pair.meta.get("style") not in ALT_STYLES:
            other_styles += 1
            continue
        named = named_objects(pair.caption)
        shown_by_named.setdefault(named, Counter())[len(pair.meta["scene"]["objects"])] += 1
    print("| caption names | pairs | image shows exactly as many | more | fewer |")
    print("|---|---|---|---|---|")
    for named, shown in sorted(shown_by_named.items()):
        total = sum(shown.values())
        more = sum(n for k, n in shown.items() if k > named)
        fewer = sum(n for k, n in shown.items() if k < named)
        print(f"| {named} | {total} | {shown[named] / total:.1%} | {more / total:.1%} | {fewer / total:.1%} |")
    if other_styles:
        print(f"{other_styles} records in styles that restate objects were left out")
    if report.skipped:
        print(f"bad records skipped: {dict(report.skipped)}")


if __name__ == "__main__":
    main()
