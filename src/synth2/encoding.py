"""Images -> VQ tokens: arrays (`encode_images`) and token shards beside the image shards, with
the same keys (the open-muse convention)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from synth2.data.images import resize_center_crop
from synth2.data.quality import QualityReport
from synth2.data.shards import Pair, ShardWriter, read_pairs, valid_key
from synth2.models.device import device_of
from synth2.models.vq import to_model_pixels, to_uint8


@torch.no_grad()
def encode_images(vq, images_BHWC: np.ndarray, resolution: int, batch_size: int = 256) -> np.ndarray:
    """VQ token ids (N, h, w) of uint8 images, resized to the tokenizer's resolution first."""
    if images_BHWC.shape[1:3] != (resolution, resolution):
        images_BHWC = np.stack([resize_center_crop(image, resolution) for image in images_BHWC])
    device = device_of(vq)
    return np.concatenate([vq.encode(to_model_pixels(torch.from_numpy(images_BHWC[s : s + batch_size])).to(device)).cpu().numpy()
                           for s in range(0, len(images_BHWC), batch_size)])


@torch.no_grad()
def encode_shards(model, shards, out: Path, report: QualityReport | None, resolution: int, batch_size: int = 256, png: bool = False) -> int:
    """Encode every image of `shards` to tokens; write token shards (and decoded PNGs with `png`)."""
    count = 0
    with ShardWriter(out, prefix="tokens", shard_size=10_000) as writer:
        batch: list[Pair] = []

        def flush():
            nonlocal count
            if not batch:
                return
            pixels = np.stack([p.image if p.image.shape[:2] == (resolution, resolution) else resize_center_crop(p.image, resolution) for p in batch])
            ids = model.encode(to_model_pixels(torch.from_numpy(pixels)).to(device_of(model)))
            decoded = to_uint8(model.decode(ids)).cpu().numpy() if png else None
            ids = ids.cpu()
            for i, p in enumerate(batch):
                writer.write(Pair(p.key, p.caption, image=None if decoded is None else decoded[i], tokens=ids[i].numpy(), meta=p.meta))  # the shard writer checks they fit uint16
            count += len(batch)
            batch.clear()

        for pair in read_pairs(shards, report=report, split=False):
            if not valid_key(pair.key):
                if report is not None:
                    report.skip("bad_key", repr(pair.key))
                continue
            batch.append(pair)
            if len(batch) == batch_size:
                flush()
        flush()
    return count
