"""VQ-GAN image tokenizer (Esser et al., 2021), fully convolutional as in Synth² A.1.1.

    pixels (B, 3, H, W) in [-1, 1] --encoder--> z (B, D, h, w) --quantizer--> ids (B, h, w)
    ids --codebook--> z_q (B, D, h, w) --decoder--> pixels

No attention blocks, so the same weights work at any image size. The quantizer is
lucidrains' vector-quantize-pytorch: by default a VQ-GAN codebook (the paper's) with the usual
collapse mitigations (k-means initialisation, EMA codebook updates, dead-code restarts,
optional cosine similarity and low-dimensional codes); optionally finite scalar quantization
(FSQ, Mentzer et al. 2023), which rounds a few bounded channels to fixed levels and so has no
codebook to collapse; or product codes, where the latent's channels split into parts, each
quantised by a codebook of its own, and a token is the tuple of its parts' codes (trained with a
recolouring swap, train/vq.py, or encoded from a colour-blind coverage map, the first part holds
structure and the others colour, so a generator can compose a colour with a shape it never saw
it on; `colour_input: layers` splits the colour into the background's and the object's, so that
an object colour has one code). Both the generator and the VLM
see images only through `encode`, `decode` and `embed`.

Shape legend: B batch, C channels, H/W pixels, h/w token grid, D latent width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from vector_quantize_pytorch import FSQ, VectorQuantize

from synth2.models.codes import join_ids, split_ids


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
    # (codebook size = their product; the codebook_* / cosine / kmeans / ema fields are then unused);
    # "product": the latent splits into len(`product_codebooks`) equal channel groups, each with a
    # learnt codebook of that size; the token id is their mixed-radix number (size = the product).
    quantizer: str = "vq"
    fsq_levels: list[int] = field(default_factory=lambda: [8, 8, 8])
    product_codebooks: list[int] = field(default_factory=lambda: [256, 32])
    # Product codes only. "pixels": one encoder; its first channel group is the structure part.
    # "coverage": the structure part has an encoder of its own that sees `foreground_coverage`, a
    # map with no colour in it, so a patch pattern gets the same structure code in every colour.
    structure_input: str = "pixels"
    # Product codes with a coverage structure only. "pixels": one encoder over the pixels gives the
    # colour part. "layers": three parts (structure, background colour, object colour): the image is
    # read as a plain background and, per patch, one object's colour, which the third part sees
    # alone (`colour_layers`), so a colour gets one code whatever the shape, coverage or background.
    colour_input: str = "pixels"
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
    def __init__(self, cfg: VQConfig, in_channels: int = 3, latent_dim: int | None = None):
        super().__init__()
        widths = [cfg.channels * m for m in cfg.channel_mult]
        p = cfg.patch_size
        self.conv_in = nn.Conv2d(in_channels, widths[0], 3, padding=1) if p == 1 else nn.Conv2d(in_channels, widths[0], p, stride=p)
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
        self.conv_out = nn.Conv2d(c, latent_dim or cfg.latent_dim, 1)

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


def _learnt_codebook(cfg: VQConfig, dim: int, size: int) -> VectorQuantize:
    return VectorQuantize(
        dim=dim,
        codebook_size=size,
        codebook_dim=cfg.codebook_dim,
        decay=cfg.ema_decay,
        kmeans_init=cfg.kmeans_init,
        kmeans_iters=10,
        threshold_ema_dead_code=cfg.dead_code_threshold,
        use_cosine_sim=cfg.cosine,
        commitment_weight=cfg.commitment_weight,
        accept_image_fmap=True,
    )


class ProductQuantizer(nn.Module):
    """Product codes: channel group i of the latent is quantised by codebook i (vector-quantize-
    pytorch's multi-head mode gives every head the same codebook size; the parts here differ).

    A token id is the mixed-radix number of its parts' codes, first part most significant, so
    everything downstream still sees one id per position; `factors` tells a model that wants to
    predict or embed the parts apart how to split it.
    """

    def __init__(self, cfg: VQConfig):
        super().__init__()
        self.factors = tuple(cfg.product_codebooks)
        if len(self.factors) < 2 or cfg.latent_dim % len(self.factors):
            raise ValueError(f"vq product_codebooks {list(self.factors)} must have >= 2 parts that divide latent_dim {cfg.latent_dim}")
        self.part_dim = cfg.latent_dim // len(self.factors)
        self.parts = nn.ModuleList(_learnt_codebook(cfg, self.part_dim, size) for size in self.factors)
        self.codebook_size = math.prod(self.factors)

    def split_ids(self, ids: torch.Tensor) -> list[torch.Tensor]:
        return split_ids(ids, self.factors)

    def join_ids(self, part_ids: list[torch.Tensor]) -> torch.Tensor:
        return join_ids(part_ids, self.factors)

    def forward(self, z_BDhw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        outputs = [part(z) for part, z in zip(self.parts, z_BDhw.split(self.part_dim, dim=1))]
        z_q = torch.cat([z_q for z_q, _, _ in outputs], dim=1)
        return z_q, self.join_ids([ids for _, ids, _ in outputs]), sum(commit.sum() for _, _, commit in outputs)

    def embed(self, ids_Bhw: torch.Tensor) -> torch.Tensor:
        """Token ids -> (B, h, w, D): the parts' code vectors side by side."""
        return torch.cat([part.project_out(part.codebook[ids]) for part, ids in zip(self.parts, self.split_ids(ids_Bhw))], dim=-1)


def image_background(pixels_BCHW: torch.Tensor) -> torch.Tensor:
    """(B, 3, 1, 1): each image's most frequent colour."""
    levels = pixels_BCHW.add(1).mul(127.5).round().long()
    keys = ((levels[:, 0] * 256 + levels[:, 1]) * 256 + levels[:, 2]).flatten(1)
    where = keys.mode(dim=1).indices  # a pixel of the most frequent colour
    flat = pixels_BCHW.flatten(2)
    return flat.gather(2, where[:, None, None].expand(-1, flat.shape[1], 1)).unsqueeze(-1)


def foreground_coverage(pixels_BCHW: torch.Tensor, window: int = 9, eps: float = 0.05, background: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 1, H, W) in [-1, 1]: how much of each pixel a foreground object covers, from -1 (the
    image's background) to 1, whatever the colours.

    The background is each image's most frequent colour. A pixel's distance from it is divided by
    the largest such distance within `window` pixels (an object's own contrast): an anti-aliased
    edge pixel is a*c + (1 - a)*b for an object colour c on a background b, so this gives back its
    coverage a for every c and b. A colour-blind view of structure for objects on a plain
    background, the embedded world's images; it means little on photographs. `background`:
    `image_background(pixels_BCHW)`, when the caller has it already.
    """
    background = image_background(pixels_BCHW) if background is None else background
    distance = (pixels_BCHW - background).norm(dim=1, keepdim=True)
    contrast = F.max_pool2d(distance, window, stride=1, padding=window // 2)
    return (distance / contrast.clamp_min(eps)).mul(2).sub(1)


def colour_layers(pixels_BCHW: torch.Tensor, coverage_B1HW: torch.Tensor, patch: int,
                  background: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The image as layers, per `patch` x `patch` patch: (the background colour (B, 3, h, w), the
    object's colour and whether the patch shows one (B, 4, h, w): colour channels 0 where it does not).

    A pixel is a*c + (1 - a)*b for coverage a (`foreground_coverage`, here in [0, 1]), object colour
    c and background b, so a patch's c is sum(pixel - (1 - a)*b) / sum(a): the same, up to the
    uint8 rounding of faint edges, at every patch an object covers and on every background. It
    assumes objects on a plain background, one per patch at most (the embedded world's, whose cells
    align with the token grid), and means little on photographs. `background`: as for
    `foreground_coverage`.
    """
    a = coverage_B1HW.add(1).div(2)
    background = image_background(pixels_BCHW) if background is None else background
    covered = F.avg_pool2d(a, patch)
    blend = F.avg_pool2d(pixels_BCHW - (1 - a) * background, patch)
    shows = (covered > 1e-3).float()
    colour = blend / covered.clamp_min(1e-3) * shows
    h, w = covered.shape[-2:]
    return background.expand(-1, -1, h, w), torch.cat([colour, shows], dim=1)


def _pointwise(in_channels: int, hidden: int, out_channels: int) -> nn.Module:
    """An MLP applied at each position alone (1x1 convolutions): a part's code is a function of
    that position's input and nothing else."""
    return nn.Sequential(nn.Conv2d(in_channels, hidden, 1), nn.GELU(), nn.Conv2d(hidden, out_channels, 1))


class ColourLayersEncoder(nn.Module):
    """The background and object-colour parts of `colour_input: layers` (`colour_layers`)."""

    def __init__(self, cfg: VQConfig, part_dim: int):
        super().__init__()
        self.patch = cfg.downsample
        self.background = _pointwise(3, cfg.channels, part_dim)
        self.object_colour = _pointwise(4, cfg.channels, part_dim)

    def forward(self, pixels_BCHW: torch.Tensor, coverage_B1HW: torch.Tensor, background_B311: torch.Tensor) -> torch.Tensor:
        background, object_colour = colour_layers(pixels_BCHW, coverage_B1HW, self.patch, background_B311)
        return torch.cat([self.background(background), self.object_colour(object_colour)], dim=1)


class VQModel(nn.Module):
    def __init__(self, cfg: VQConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.structure_input == "coverage":
            if cfg.quantizer != "product":
                raise ValueError("vq structure_input 'coverage' needs product codes (vq.model.quantizer=product)")
            structure_dim = cfg.latent_dim // len(cfg.product_codebooks)
            self.structure_encoder = Encoder(cfg, in_channels=1, latent_dim=structure_dim)
            if cfg.colour_input == "layers":
                if len(cfg.product_codebooks) != 3:
                    raise ValueError("vq colour_input 'layers' needs three product codebooks (structure, background colour, object colour)")
                self.encoder = ColourLayersEncoder(cfg, structure_dim)
            elif cfg.colour_input == "pixels":
                self.encoder = Encoder(cfg, latent_dim=cfg.latent_dim - structure_dim)
            else:
                raise ValueError(f"vq colour_input must be 'pixels' or 'layers', got {cfg.colour_input!r}")
        elif cfg.structure_input == "pixels":
            if cfg.colour_input != "pixels":
                raise ValueError("vq colour_input 'layers' needs the coverage structure (vq.model.structure_input=coverage)")
            self.encoder, self.structure_encoder = Encoder(cfg), None
        else:
            raise ValueError(f"vq structure_input must be 'pixels' or 'coverage', got {cfg.structure_input!r}")
        self.decoder = Decoder(cfg)
        if cfg.quantizer == "fsq":
            self.quantizer = FSQ(levels=cfg.fsq_levels, dim=cfg.latent_dim)
        elif cfg.quantizer == "product":
            self.quantizer = ProductQuantizer(cfg)
        elif cfg.quantizer == "vq":
            self.quantizer = _learnt_codebook(cfg, cfg.latent_dim, cfg.codebook_size)
        else:
            raise ValueError(f"vq quantizer must be 'vq', 'fsq' or 'product', got {cfg.quantizer!r}")

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size  # every quantizer carries it (FSQ, product: the product of its sizes)

    @property
    def code_factors(self) -> tuple[int, ...]:
        """The sizes of the parts a token id is made of: (codebook_size,) unless codes are products."""
        return self.quantizer.factors if isinstance(self.quantizer, ProductQuantizer) else (self.codebook_size,)

    @property
    def embed_dim(self) -> int:
        return self.cfg.latent_dim

    def _latent(self, pixels_BCHW: torch.Tensor) -> torch.Tensor:
        """Pixels -> pre-quantisation latents (B, D, h, w); with a structure encoder, its channels first."""
        if self.structure_encoder is None:
            return self.encoder(pixels_BCHW)
        background = image_background(pixels_BCHW)  # read once, by the coverage and the colour layers
        coverage = foreground_coverage(pixels_BCHW, background=background)
        colour = self.encoder(pixels_BCHW, coverage, background) if self.cfg.colour_input == "layers" else self.encoder(pixels_BCHW)
        return torch.cat([self.structure_encoder(coverage), colour], dim=1)

    def _quantize(self, z_BDhw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(z_q (B, D, h, w), ids (B, h, w), commitment loss; zero for FSQ, which has none)."""
        if isinstance(self.quantizer, FSQ):
            z_q, ids_Bhw = self.quantizer(z_BDhw)
            return z_q, ids_Bhw.long(), z_BDhw.new_zeros(())
        if isinstance(self.quantizer, ProductQuantizer):
            return self.quantizer(z_BDhw)
        z_q, ids_Bhw, commit = self.quantizer(z_BDhw)
        return z_q, ids_Bhw, commit.sum()

    def forward(self, pixels_BCHW: torch.Tensor, recoloured_BCHW: torch.Tensor | None = None):
        """(reconstruction, ids (B, h, w), commitment loss); with `recoloured_BCHW`, `recolour_swap`
        (a forward, so that DDP and FSDP see it)."""
        if recoloured_BCHW is not None:
            return self.recolour_swap(pixels_BCHW, recoloured_BCHW)
        z_q, ids_Bhw, commit = self._quantize(self._latent(pixels_BCHW))
        return self.decoder(z_q), ids_Bhw, commit

    def recolour_swap(self, pixels_BCHW: torch.Tensor, recoloured_BCHW: torch.Tensor):
        """Product codes' training pass over images and the same images in other colours.

        Returns (reconstructions of both (2B, C, H, W), ids (2B, h, w), commitment loss, the
        recoloured images drawn from the originals' first code part and their own other parts,
        the squared distance between the two first parts as their codebook compares them).
        Asking the swap to reproduce the recoloured images, and the first parts to agree, makes
        the first part hold what recolouring keeps (structure), the others what it changes (colour).
        """
        if not isinstance(self.quantizer, ProductQuantizer):
            raise ValueError("vq recolour_swap needs product codes (vq.model.quantizer=product)")
        z = self._latent(torch.cat([pixels_BCHW, recoloured_BCHW]))
        z_q, ids, commit = self._quantize(z)
        d = self.quantizer.part_dim
        original, recoloured = z_q.chunk(2)
        swapped = torch.cat([original[:, :d], recoloured[:, d:]], dim=1)
        pixels_out = self.decoder(torch.cat([z_q, swapped]))
        # in the space the first codebook compares codes in (after its projection; cosine codes
        # ignore scale, so a raw squared distance could shrink without the codes agreeing)
        structure = self.quantizer.parts[0].project_in(z[:, :d].permute(0, 2, 3, 1))
        if self.cfg.cosine:
            structure = F.normalize(structure, dim=-1)
        original_structure, recoloured_structure = structure.chunk(2)
        invariance = (original_structure - recoloured_structure).pow(2).sum(-1).mean()
        return pixels_out[: len(z)], ids, commit, pixels_out[len(z) :], invariance

    @torch.no_grad()
    def encode(self, pixels_BCHW: torch.Tensor) -> torch.Tensor:
        """Pixels in [-1, 1] -> token ids (B, h, w). Never updates the codebook."""
        was_training = self.training
        self.eval()
        _, ids_Bhw, _ = self._quantize(self._latent(pixels_BCHW))
        self.train(was_training)
        return ids_Bhw

    @torch.no_grad()
    def features(self, pixels_BCHW: torch.Tensor) -> torch.Tensor:
        """Pixels in [-1, 1] -> pre-quantisation latents (B, D, h, w): image features for the Fréchet distance."""
        return self._latent(pixels_BCHW)

    def embed(self, ids_Bhw: torch.Tensor) -> torch.Tensor:
        """Token ids -> soft codebook embeddings (B, h, w, D): what the VLM reads."""
        if isinstance(self.quantizer, FSQ):
            return self.quantizer.indices_to_codes(ids_Bhw).permute(0, 2, 3, 1)  # it returns channel-first
        if isinstance(self.quantizer, ProductQuantizer):
            return self.quantizer.embed(ids_Bhw)
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
