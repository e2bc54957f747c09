"""Training the VQ-GAN: L1 + LPIPS (when local weights exist) + PatchGAN hinge loss + commitment.

Paper weights (Synth² Table 6): perceptual 0.05, adversarial 0.01, Adam (0.9, 0.99),
warmup + cosine. The adversarial term starts at `disc_start`, after the autoencoder
has learnt to reconstruct (an early discriminator destabilises the codebook).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from synth2.data.stream import ImageStream, StreamCursor
from synth2.models.codes import codebook_usage
from synth2.models.lpips import LPIPS
from synth2.models.patchgan import PatchGAN, PatchGANConfig, hinge_d_loss, hinge_g_loss
from synth2.models.vq import VQConfig, VQModel, to_model_pixels
from synth2.train.distributed import DistInfo, wrap
from synth2.train.loop import StepContext, TrainConfig, cycle_indices, rank_slice

logger = logging.getLogger("synth2")


@dataclass
class VQStageConfig:
    model: VQConfig = field(default_factory=VQConfig)
    disc: PatchGANConfig = field(default_factory=PatchGANConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=1200, batch_size=64, lr=1e-3, warmup=50, checkpoint_every=300))
    # An L2 term beside the paper's L1: L1's constant-size gradients make the last details
    # slow to learn; on the embedded world L1 + L2 reaches the same error in far fewer steps.
    l2_weight: float = 0.0
    perceptual_weight: float = 0.05
    adversarial_weight: float = 0.01
    disc_start: int = 800
    # Directory with vgg16.pth and vgg.pth for LPIPS (see models/lpips.py); empty = no perceptual loss.
    lpips_path: str = ""
    # A diffusers VQModel directory: use it instead of training one.
    pretrained: str = ""
    channels_last: bool = True
    # Product codes only: weight of the recolouring swap (models/vq.py `recolour_swap`): every batch
    # also goes through under a random colour map per image (`recolour_maps`), the recoloured images
    # must be drawn from the originals' structure codes and their own colour codes, and the
    # structure parts must agree. 0 = product codes trained as plain reconstructions.
    recolour_swap: float = 0.0
    # The recolouring: "linear", a random linear colour map per image (any colour can become any
    # other); "channels", a random RGB channel permutation (keeps brightness and saturation).
    recolour_maps: str = "linear"


class VQTask:
    def __init__(self, cfg: VQStageConfig, images: np.ndarray | ImageStream, dist: DistInfo, seed: int):
        """`images`: uint8 (N, H, W, 3) in memory, or a stream of batches from shards."""
        torch.manual_seed(seed)
        self.cfg = cfg
        self.dist = dist
        self.seed = seed
        self.stream = StreamCursor(images) if isinstance(images, ImageStream) else None
        self.images = None if self.stream else torch.from_numpy(images)
        self.model = VQModel(cfg.model).to(dist.device)
        self.disc = PatchGAN(cfg.disc).to(dist.device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
            self.disc = self.disc.to(memory_format=torch.channels_last)
        self.modules = {"vq": self.model, "disc": self.disc}
        self.ddp_model = wrap(self.model, dist, cfg.train.compile, cfg.train.parallel)
        self.ddp_disc = wrap(self.disc, dist, cfg.train.compile, cfg.train.parallel)
        betas = tuple(cfg.train.betas)
        self.optimizers = {  # after FSDP's sharding
            "vq": torch.optim.Adam(self.model.parameters(), lr=cfg.train.lr, betas=betas),
            "disc": torch.optim.Adam(self.disc.parameters(), lr=cfg.train.lr, betas=betas),
        }
        self.lpips = None
        if cfg.perceptual_weight > 0 and cfg.lpips_path:
            self.lpips = LPIPS.from_directory(cfg.lpips_path).to(dist.device)
            logger.info("vq: LPIPS perceptual loss on (weights from %s)", cfg.lpips_path)
        elif cfg.perceptual_weight > 0:
            logger.warning("vq: perceptual loss OFF: no local LPIPS weights (set vq.lpips_path to a directory with vgg16.pth and vgg.pth)")

    def batch(self, step: int) -> torch.Tensor:
        if self.stream is not None:
            images = self.stream.batch(step)
        else:
            images = self.images[rank_slice(cycle_indices(len(self.images), self.cfg.train.batch_size, step, self.seed), self.dist)]
        pixels = to_model_pixels(images).to(self.dist.device)
        return pixels.contiguous(memory_format=torch.channels_last) if self.cfg.channels_last else pixels

    def step(self, pixels: torch.Tensor, step: int, ctx: StepContext) -> dict[str, float]:
        cfg = self.cfg
        adversarial = cfg.adversarial_weight > 0 and step >= cfg.disc_start
        swap = cfg.recolour_swap > 0
        with ctx.autocast():
            if swap:
                recoloured = recolour(pixels, self.seed, step, cfg.recolour_maps)
                recon, ids, commit, swapped, invariance = self.ddp_model(pixels, recoloured)
                pixels = torch.cat([pixels, recoloured])
            else:
                recon, ids, commit = self.ddp_model(pixels)
            l1 = (recon - pixels).abs().mean()
            loss = l1 + commit
            metrics = {"l1": l1.item(), "commit": commit.item()}
            if swap:
                target = pixels[len(pixels) // 2 :]
                swap_error = (swapped - target).abs().mean() + cfg.l2_weight * (swapped - target).pow(2).mean()
                loss = loss + cfg.recolour_swap * (swap_error + invariance)
                metrics |= {"swap_error": swap_error.item(), "structure_invariance": invariance.item()}
            if cfg.l2_weight > 0:
                loss = loss + cfg.l2_weight * ((recon - pixels) ** 2).mean()
            if self.lpips is not None:
                perceptual = self.lpips(recon, pixels).mean()
                loss = loss + cfg.perceptual_weight * perceptual
                metrics["lpips"] = perceptual.item()
            if adversarial:
                self.disc.requires_grad_(False)  # the generator step must not touch D's weights
                g_loss = hinge_g_loss(self.disc(recon))
                self.disc.requires_grad_(True)
                loss = loss + cfg.adversarial_weight * g_loss
                metrics["g_loss"] = g_loss.item()
        metrics["loss"] = loss.item()
        metrics["grad_norm"] = ctx.update(loss, self.optimizers["vq"])
        if adversarial:
            with ctx.autocast():
                d_loss = hinge_d_loss(self.ddp_disc(pixels), self.ddp_disc(recon.detach()))
            metrics["d_loss"] = d_loss.item()
            ctx.update(d_loss, self.optimizers["disc"])
        metrics["batch_code_usage"] = codebook_usage(ids, self.model.code_factors)
        if self.stream is not None:
            metrics["count/skipped_records"] = self.stream.skipped
        return metrics


def recolour(pixels_BCHW: torch.Tensor, seed: int, step: int, maps: str = "linear") -> torch.Tensor:
    """The images under a random colour map each, seeded by the step so a resumed run sees the same.

    "channels": a non-identity permutation of the RGB channels. "linear": a permutation, a hue
    rotation about the grey axis and per-channel gains. Either map is linear, so every
    anti-aliased blend of two colours stays a blend with the same weights: shapes and their
    edges are unchanged while the colours move.
    """
    B = len(pixels_BCHW)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
    if maps == "channels":
        orders = torch.tensor([[0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]])
        maps_B33 = torch.eye(3)[orders[torch.randint(len(orders), (B,), generator=generator)]]
    elif maps == "linear":
        permutation = torch.stack([torch.eye(3)[torch.randperm(3, generator=generator)] for _ in range(B)])
        angle = torch.rand(B, generator=generator) * 2 * math.pi
        axis = torch.full((3,), 3**-0.5)
        cross = torch.tensor([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
        rotation = (  # Rodrigues' formula, one rotation per image
            torch.cos(angle)[:, None, None] * torch.eye(3)
            + torch.sin(angle)[:, None, None] * cross
            + (1 - torch.cos(angle))[:, None, None] * torch.outer(axis, axis)
        )
        gains = torch.diag_embed(0.4 + 0.8 * torch.rand(B, 3, generator=generator))
        maps_B33 = gains @ rotation @ permutation
    else:
        raise ValueError(f"vq.recolour_maps must be 'linear' or 'channels', got {maps!r}")
    unit = pixels_BCHW.add(1).div(2)
    out = torch.einsum("bij,bjhw->bihw", maps_B33.to(pixels_BCHW.device, pixels_BCHW.dtype), unit)
    return out.clamp(0, 1).mul(2).sub(1)
