"""A controlled dual encoder (CLIP-style) for CLIPScore, trained contrastively on the paired data only.

Like the generator, it never sees data beyond the paired split, so curation scores
carry no outside knowledge. Image tower: a small CNN over pixels (any size, resized
to `resolution`); text tower: the frozen LM's mean-pooled hidden states and an MLP.

Shape legend: B batch, C channels, H/W pixels, E joint embedding width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.nn.functional import all_gather


@dataclass
class ClipConfig:
    resolution: int = 32
    channels: int = 32
    embed_dim: int = 128
    text_hidden: int = 256


class ImageTower(nn.Module):
    def __init__(self, cfg: ClipConfig):
        super().__init__()
        c = cfg.channels
        self.resolution = cfg.resolution
        self.net = nn.Sequential(
            nn.Conv2d(3, c, 3, padding=1), nn.GELU(),
            nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(2 * c, 4 * c, 4, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(4 * c, 4 * c, 3, padding=1), nn.GELU(),
        )
        # spatial layout matters ("left of", "above"): flatten a coarse grid rather than pool it away
        self.grid = 4
        self.proj = nn.Linear(4 * c * self.grid * self.grid, cfg.embed_dim)

    def forward(self, pixels_BCHW: torch.Tensor) -> torch.Tensor:
        if pixels_BCHW.shape[-1] != self.resolution:
            pixels_BCHW = F.interpolate(pixels_BCHW, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False, antialias=True)
        h = F.adaptive_avg_pool2d(self.net(pixels_BCHW), self.grid)
        return self.proj(h.flatten(1))


class TextTower(nn.Module):
    def __init__(self, cfg: ClipConfig, text_width: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.LayerNorm(text_width), nn.Linear(text_width, cfg.text_hidden), nn.GELU(), nn.Linear(cfg.text_hidden, cfg.embed_dim))

    def forward(self, states_BLD: torch.Tensor, mask_BL: torch.Tensor) -> torch.Tensor:
        weights = mask_BL.float().unsqueeze(-1)
        pooled = (states_BLD * weights).sum(1) / weights.sum(1).clamp(min=1)
        return self.mlp(pooled)


class DualEncoder(nn.Module):
    def __init__(self, cfg: ClipConfig, text_width: int):
        super().__init__()
        self.cfg = cfg
        self.image = ImageTower(cfg)
        self.text = TextTower(cfg, text_width)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def embed_images(self, pixels_BCHW: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image(pixels_BCHW), dim=-1)

    def embed_texts(self, states_BLD: torch.Tensor, mask_BL: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text(states_BLD, mask_BL), dim=-1)

    def forward(self, pixels_BCHW, states_BLD, mask_BL) -> torch.Tensor:
        """The training loss (what DDP and torch.compile wrap)."""
        return self.contrastive_loss(pixels_BCHW, states_BLD, mask_BL)

    def contrastive_loss(self, pixels_BCHW, states_BLD, mask_BL) -> torch.Tensor:
        """Symmetric InfoNCE over the batch (Radford et al., 2021). Under torchrun the batch is the
        global one: each rank's pairs are scored against every rank's (open_clip's local loss), so
        the negatives, and after DDP's gradient average the update, are those of one process."""
        image, text = self.embed_images(pixels_BCHW), self.embed_texts(states_BLD, mask_BL)
        scale = self.logit_scale.exp().clamp(max=100)
        targets = torch.arange(len(image), device=image.device)
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            logits = scale * image @ text.T
            return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))
        # an autograd all-gather: each rank's embeddings get the gradients every rank's loss sends them
        all_images, all_texts = torch.cat(all_gather(image)), torch.cat(all_gather(text))
        targets = targets + dist.get_rank() * len(image)  # ranks hold equal shares, in rank order
        return 0.5 * (F.cross_entropy(scale * image @ all_texts.T, targets) + F.cross_entropy(scale * text @ all_images.T, targets))
