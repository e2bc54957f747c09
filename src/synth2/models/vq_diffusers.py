"""A pretrained diffusers `VQModel` (e.g. a MUSE/aMUSEd or taming VQGAN port) behind synth2's VQ interface.

Needs the optional `diffusers` extra. Loaded from a local directory (no hub access): the
VQModel's own, or a pipeline's with the VQ in `vqvae/` (aMUSEd, open-muse ports).
`encode(pixels) -> ids (B, h, w)`, `decode(ids) -> pixels`, `embed(ids) -> (B, h, w, E)`,
`features(pixels) -> (B, E, h, w)`.

Shape legend: B batch, h/w token grid, E codebook vector width.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class DiffusersVQ(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model.eval()
        self.model.requires_grad_(False)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "DiffusersVQ":
        try:
            from diffusers import VQModel
        except ImportError as e:
            raise ImportError("a pretrained VQ needs diffusers: pip install 'synth2[diffusers]'") from e
        path = Path(path)
        if not (path / "config.json").exists() and (path / "vqvae" / "config.json").exists():
            path = path / "vqvae"  # a whole pipeline directory (aMUSEd, open-muse ports): its VQ
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path}: not a diffusers VQModel directory (no config.json, no vqvae/config.json)")
        return cls(VQModel.from_pretrained(path))

    @property
    def codebook_size(self) -> int:
        return self.model.quantize.n_e

    @property
    def code_factors(self) -> tuple[int, ...]:
        return (self.codebook_size,)

    @property
    def embed_dim(self) -> int:
        return self.model.quantize.vq_embed_dim

    @torch.no_grad()
    def encode(self, pixels_BCHW: torch.Tensor) -> torch.Tensor:
        latents = self.model.encode(pixels_BCHW).latents
        _, _, (_, _, indices) = self.model.quantize(latents)
        B, _, h, w = latents.shape
        return indices.view(B, h, w)

    @torch.no_grad()
    def features(self, pixels_BCHW: torch.Tensor) -> torch.Tensor:
        """Pre-quantisation latents (B, E, h, w)."""
        return self.model.encode(pixels_BCHW).latents

    def embed(self, ids_Bhw: torch.Tensor) -> torch.Tensor:
        return self.model.quantize.embedding(ids_Bhw)

    @torch.no_grad()
    def decode(self, ids_Bhw: torch.Tensor) -> torch.Tensor:
        if self.model.config.lookup_from_codebook:  # aMUSEd's layout: its decode reads token ids
            B, h, w = ids_Bhw.shape
            return self.model.decode(ids_Bhw, force_not_quantize=True, shape=(B, h, w, self.embed_dim)).sample
        quant = self.embed(ids_Bhw).permute(0, 3, 1, 2).contiguous()
        # the tokens are already codebook entries: skip re-quantisation
        return self.model.decode(quant, force_not_quantize=True).sample
