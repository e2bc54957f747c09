"""Captions -> synthetic image tokens (embedding space), and pixels only when asked.

`TokenGenerator` bundles what synthesis needs: the frozen LM (text states), the
trained generator and its sampler, and the VQ (for pixels). Everything the VLM
trains on synthetically stays in embedding space unless `pixels=True`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from synth2.data.text import first_sentence
from synth2.models.lm import FrozenLM
from synth2.models.device import device_of
from synth2.models.sampler import SamplerConfig, sample
from synth2.models.t2i import T2IModel
from synth2.models.vq import to_uint8
from synth2.train.t2i import empty_caption


@dataclass
class TokenGenerator:
    lm: FrozenLM
    model: T2IModel
    sampler: SamplerConfig
    vq: torch.nn.Module | None = None

    def __post_init__(self):
        self.model.eval()
        self.empty = empty_caption(self.lm, self.model.cfg.text_layer)

    @property
    def grid(self) -> tuple[int, int]:
        return self.model.grid

    def prompt(self, caption: str) -> str:
        """The text that conditions the generator: the caption without the sampler's `drop_prefix`,
        and only its first sentence when the sampler says so."""
        prefix = self.sampler.drop_prefix
        if prefix and caption[: len(prefix)].lower() == prefix.lower():
            caption = caption[len(prefix) :].lstrip(" :,")
        if self.sampler.first_sentence:
            caption = first_sentence(caption)
        return caption

    @torch.no_grad()
    def tokens(self, captions: list[str], seed: int) -> torch.Tensor:
        """(B, h, w) token ids for `captions`; the same seed gives the same tokens."""
        states, mask = self.lm.encode_texts([self.prompt(c) for c in captions], self.model.cfg.text_layer)
        device = device_of(self.model)
        generator = torch.Generator(device=device).manual_seed(seed)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.sampler.precision == "bf16"):
            ids = sample(self.model, states.to(device), mask.to(device), *(e.to(device) for e in self.empty), self.sampler, generator)
        return ids.view(len(captions), *self.grid)

    @torch.no_grad()
    def pixels(self, tokens_Bhw: torch.Tensor) -> np.ndarray:
        if self.vq is None:
            raise ValueError("decoding tokens to pixels needs the VQ")
        return to_uint8(self.vq.decode(tokens_Bhw.to(device_of(self.vq)))).cpu().numpy()

    def generate(self, captions: list[str], seed: int, batch_size: int = 64, pixels: bool = False):
        """(tokens (N, h, w) uint16 array, pixels (N, H, W, 3) uint8 or None), batched."""
        tokens, images = [], []
        for start in range(0, len(captions), batch_size):
            batch = self.tokens(captions[start : start + batch_size], seed * 100_003 + start)
            tokens.append(batch.cpu().numpy().astype(np.uint16))
            if pixels:
                images.append(self.pixels(batch))
        return np.concatenate(tokens), (np.concatenate(images) if pixels else None)
