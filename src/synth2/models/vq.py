"""VQ-GAN image tokenizer (Esser et al., 2021), fully convolutional as in Synth² A.1.1.

    pixels (B, 3, H, W) in [-1, 1] --encoder--> z (B, D, h, w) --quantizer--> ids (B, h, w)
    ids --codebook--> z_q (B, D, h, w) --decoder--> pixels

No attention blocks, so the same weights work at any image size. The quantizer is
lucidrains' vector-quantize-pytorch: by default a VQ-GAN codebook (the paper's) with the usual
collapse mitigations (k-means initialisation, EMA codebook updates, dead-code restarts,
optional cosine similarity and low-dimensional codes); optionally finite scalar quantization
(FSQ, Mentzer et al. 2023), which rounds a few bounded channels to fixed levels and so has no
codebook to collapse. Both the generator and the VLM see images only through `encode`,
`decode` and `embed`.

Shape legend: B batch, C channels, H/W pixels, h/w token grid, D latent width.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from vector_quantize_pytorch import FSQ, VectorQuantize


@dataclass
class VQConfig:
    channels: int = 32
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 2])  # one level per entry; len-1 downsamplings
    # The encoder's first conv patchifies (kernel = stride = patch_size) and the decoder ends in a
    # pixel shuffle; 1 is the paper's full-resolution stem, larger patches are much cheaper on CPU.
    patch_size: int = 1
    # "group": GroupNorm + SiLU as in taming's VQGAN; "none": GELU without normalisation,
    # which on the embedded world trains several times faster for the same compute.
    norm: str = "group"
    num_res_blocks: int = 1
    mid_blocks: int = 2  # residual blocks at the lowest resolution, on each side of the quantizer
    # 3: the encoder's residual blocks see neighbouring positions (taming). 1: they see only their own
    # patch, so identical patches always get identical tokens (one code per plain background instead
    # of hundreds) - a much easier vocabulary for the generator when the stem patchifies.
    encoder_kernel: int = 3
    latent_dim: int = 64
    # "vq": a learnt codebook (VQ-GAN); "fsq": finite scalar quantization with `fsq_levels`
    # (codebook size = their product; the codebook_* / cosine / kmeans / ema fields are then unused).
    quantizer: str = "vq"
    fsq_levels: list[int] = field(default_factory=lambda: [8, 8, 8])
    codebook_size: int = 512
    codebook_dim: int = 32  # < latent_dim: low-dimensional codes (project in/out)
    cosine: bool = False
    kmeans_init: bool = True
    ema_decay: float = 0.9
    dead_code_threshold: float = 1.0
    commitment_weight: float = 0.25

    @property
    def downsample(self) -> int:
        return self.patch_size * 2 ** (len(self.channel_mult) - 1)


def _norm_act(channels: int, norm: str) -> nn.Module:
    if norm == "none":
        return nn.GELU()
    if norm != "group":
        raise ValueError(f"vq norm must be 'group' or 'none', got {norm!r}")
    groups = 32 if channels % 32 == 0 else (8 if channels % 8 == 0 else 1)
    return nn.Sequential(nn.GroupNorm(groups, channels, eps=1e-6), nn.SiLU())


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, norm: str, kernel: int = 3):
        super().__init__()
        self.act1 = _norm_act(c_in, norm)
        self.conv1 = nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2)
        self.act2 = _norm_act(c_out, norm)
        self.conv2 = nn.Conv2d(c_out, c_out, kernel, padding=kernel // 2)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act1(x_BCHW))
        h = self.conv2(self.act2(h))
        return self.skip(x_BCHW) + h


class Encoder(nn.Module):
    def __init__(self, cfg: VQConfig):
        super().__init__()
        widths = [cfg.channels * m for m in cfg.channel_mult]
        p = cfg.patch_size
        self.conv_in = nn.Conv2d(3, widths[0], 3, padding=1) if p == 1 else nn.Conv2d(3, widths[0], p, stride=p)
        blocks: list[nn.Module] = []
        c = widths[0]
        for level, width in enumerate(widths):
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResBlock(c, width, cfg.norm, cfg.encoder_kernel))
                c = width
            if level < len(widths) - 1:
                blocks.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        self.blocks = nn.Sequential(*blocks)
        self.mid = nn.Sequential(*(ResBlock(c, c, cfg.norm, cfg.encoder_kernel) for _ in range(cfg.mid_blocks)))
        self.act_out = _norm_act(c, cfg.norm)
        self.conv_out = nn.Conv2d(c, cfg.latent_dim, 1)

    def forward(self, pixels_BCHW: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.blocks(self.conv_in(pixels_BCHW)))
        return self.conv_out(self.act_out(h))


class Decoder(nn.Module):
    def __init__(self, cfg: VQConfig):
        super().__init__()
        widths = [cfg.channels * m for m in cfg.channel_mult][::-1]
        c = widths[0]
        self.conv_in = nn.Conv2d(cfg.latent_dim, c, 3, padding=1)
        self.mid = nn.Sequential(*(ResBlock(c, c, cfg.norm) for _ in range(cfg.mid_blocks)))
        blocks: list[nn.Module] = []
        for level, width in enumerate(widths):
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(ResBlock(c, width, cfg.norm))
                c = width
            if level < len(widths) - 1:
                blocks += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c, 3, padding=1)]
        self.blocks = nn.Sequential(*blocks)
        self.act_out = _norm_act(c, cfg.norm)
        p = cfg.patch_size
        self.conv_out = nn.Conv2d(c, 3, 3, padding=1) if p == 1 else nn.Conv2d(c, 3 * p * p, 3, padding=1)
        self.unpatchify = nn.PixelShuffle(p) if p > 1 else nn.Identity()

    def forward(self, z_BDhw: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.mid(self.conv_in(z_BDhw)))
        return self.unpatchify(self.conv_out(self.act_out(h)))


class VQModel(nn.Module):
    def __init__(self, cfg: VQConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        if cfg.quantizer == "fsq":
            self.quantizer = FSQ(levels=cfg.fsq_levels, dim=cfg.latent_dim)
            return
        if cfg.quantizer != "vq":
            raise ValueError(f"vq quantizer must be 'vq' or 'fsq', got {cfg.quantizer!r}")
        self.quantizer = VectorQuantize(
            dim=cfg.latent_dim,
            codebook_size=cfg.codebook_size,
            codebook_dim=cfg.codebook_dim,
            decay=cfg.ema_decay,
            kmeans_init=cfg.kmeans_init,
            kmeans_iters=10,
            threshold_ema_dead_code=cfg.dead_code_threshold,
            use_cosine_sim=cfg.cosine,
            commitment_weight=cfg.commitment_weight,
            accept_image_fmap=True,
        )

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size  # both library quantizers carry it (FSQ: the product of its levels)

    @property
    def embed_dim(self) -> int:
        return self.cfg.latent_dim

    def _quantize(self, z_BDhw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(z_q (B, D, h, w), ids (B, h, w), commitment loss; zero for FSQ, which has none)."""
        if isinstance(self.quantizer, FSQ):
            z_q, ids_Bhw = self.quantizer(z_BDhw)
            return z_q, ids_Bhw.long(), z_BDhw.new_zeros(())
        z_q, ids_Bhw, commit = self.quantizer(z_BDhw)
        return z_q, ids_Bhw, commit.sum()

    def forward(self, pixels_BCHW: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(reconstruction, ids (B, h, w), commitment loss)."""
        z_q, ids_Bhw, commit = self._quantize(self.encoder(pixels_BCHW))
        return self.decoder(z_q), ids_Bhw, commit

    @torch.no_grad()
    def encode(self, pixels_BCHW: torch.Tensor) -> torch.Tensor:
        """Pixels in [-1, 1] -> token ids (B, h, w). Never updates the codebook."""
        was_training = self.training
        self.eval()
        _, ids_Bhw, _ = self._quantize(self.encoder(pixels_BCHW))
        self.train(was_training)
        return ids_Bhw

    @torch.no_grad()
    def features(self, pixels_BCHW: torch.Tensor) -> torch.Tensor:
        """Pixels in [-1, 1] -> pre-quantisation latents (B, D, h, w): image features for the Fréchet distance."""
        return self.encoder(pixels_BCHW)

    def embed(self, ids_Bhw: torch.Tensor) -> torch.Tensor:
        """Token ids -> soft codebook embeddings (B, h, w, D): what the VLM reads."""
        if isinstance(self.quantizer, FSQ):
            return self.quantizer.indices_to_codes(ids_Bhw).permute(0, 2, 3, 1)  # it returns channel-first
        # Indexing the codebook directly: the library's get_output_from_indices applies its
        # output projection channel-first in image-fmap mode and fails when codes are low-dim.
        codes = self.quantizer.codebook[ids_Bhw]
        return self.quantizer.project_out(codes)

    def decode(self, ids_Bhw: torch.Tensor) -> torch.Tensor:
        """Token ids -> pixels in [-1, 1] (B, 3, H, W)."""
        return self.decoder(self.embed(ids_Bhw).permute(0, 3, 1, 2))


def to_model_pixels(images_BHWC_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [-1, 1]."""
    return images_BHWC_uint8.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(pixels_BCHW: torch.Tensor) -> torch.Tensor:
    """float (B, 3, H, W) in [-1, 1] -> uint8 (B, H, W, 3)."""
    return pixels_BCHW.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
