"""Small datasets held in memory as arrays: images, token grids, captions, metadata.

The embedded world (and token shards of real corpora: 256 tokens x 2 bytes per
image) fit in memory, which keeps batches a pure function of the step and makes
exact resume trivial.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from synth2.data.images import resize_center_crop
from synth2.data.quality import QualityReport
from synth2.data.shards import count_records, read_pairs


@dataclass
class PairArrays:
    keys: list[str]
    captions: list[str]
    images: np.ndarray | None = None  # (N, H, W, 3) uint8
    tokens: np.ndarray | None = None  # (N, h, w) int64
    meta: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.keys)

    def references(self) -> list[list[str]]:
        return [m.get("references", [c]) for m, c in zip(self.meta, self.captions)]

    def subset(self, indices) -> "PairArrays":
        indices = list(indices)
        return PairArrays(
            [self.keys[i] for i in indices],
            [self.captions[i] for i in indices],
            None if self.images is None else self.images[indices],
            None if self.tokens is None else self.tokens[indices],
            [self.meta[i] for i in indices] if self.meta else [],
        )


def load_pairs(
    shards: str | Path | list,
    images: bool = True,
    tokens: bool = False,
    limit: int | None = None,
    report: QualityReport | None = None,
    resolution: int | None = None,
) -> PairArrays:
    """Read shards into arrays. With `resolution`, images of other sizes are resized and centre-cropped,
    and decoded straight into one preallocated array (a list of images and its stacked copy would
    hold every image twice)."""
    keys, captions, image_list, token_list, meta = [], [], [], [], []
    filled = None
    if images and resolution:
        capacity = count_records(shards) if limit is None else min(limit, count_records(shards))
        filled = np.empty((capacity, resolution, resolution, 3), dtype=np.uint8)
    for pair in read_pairs(shards, decode_images=images, report=report, split=False):
        if images:
            if pair.image is None:
                continue
            image = pair.image
            if resolution and image.shape[:2] != (resolution, resolution):
                image = resize_center_crop(image, resolution)
            if filled is not None:
                filled[len(keys)] = image
            else:
                image_list.append(image)
        if tokens:
            if pair.tokens is None:
                raise ValueError(f"{shards}: record {pair.key} has no .tokens.npy (run `synth2 encode` first)")
            token_list.append(pair.tokens.astype(np.int64))
        keys.append(pair.key)
        captions.append(pair.caption)
        meta.append(pair.meta)
        if limit and len(keys) >= limit:
            break
    if filled is not None:
        image_array = filled[: len(keys)] if keys else None  # skipped bad records leave a few unused rows behind
    else:
        image_array = np.stack(image_list) if image_list else None
    return PairArrays(
        keys,
        captions,
        image_array,
        np.stack(token_list) if token_list else None,
        meta,
    )
