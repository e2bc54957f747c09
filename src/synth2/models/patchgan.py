"""PatchGAN discriminator (Isola et al., 2017), as used for VQ-GAN's adversarial loss.

Shape legend: B batch, C channels, H/W pixels; the output is one logit per patch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class PatchGANConfig:
    channels: int = 32
    layers: int = 2


class PatchGAN(nn.Module):
    def __init__(self, cfg: PatchGANConfig):
        super().__init__()
        c = cfg.channels
        layers: list[nn.Module] = [nn.Conv2d(3, c, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        for i in range(1, cfg.layers + 1):
            c_in, c = c, cfg.channels * min(2**i, 8)
            stride = 2 if i < cfg.layers else 1
            # GroupNorm rather than BatchNorm: identical behaviour in one process and under DDP
            layers += [nn.Conv2d(c_in, c, 4, stride=stride, padding=1, bias=False), nn.GroupNorm(min(32, c // 4), c), nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(c, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, pixels_BCHW: torch.Tensor) -> torch.Tensor:
        return self.net(pixels_BCHW)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (torch.relu(1.0 - logits_real).mean() + torch.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    return -logits_fake.mean()
