"""Flamingo-style captioning VLM over VQ tokens (Synth² section 3.3).

    token ids (B, h, w) --VQ codebook (frozen)--> soft embeddings (B, h, w, E)
      --linear + 2-D positions--> media (B, N, W) --Perceiver Resampler--> latents (B, M, W)
    frozen HF causal LM, with a gated cross-attention block (attention, then feed-forward,
    each behind tanh(gate), gates initialised at 0) before every `xattn_every`-th decoder layer.

The LM's weights are untouched: the blocks run from forward pre-hooks that the VLM registers
on its decoder layers, and the visual conditioning reaches them as an explicit keyword
argument of each forward call (`xattn=`), never as state stored on a layer. A condition names
the VLM that made it and only that VLM's hooks act on it, so several VLMs may share one
frozen LM; `detach()` takes a VLM's hooks off the LM when it is done. With every gate at 0
the VLM is exactly the frozen LM.

Shape legend: B batch, N media tokens, M latents, W perceiver width, T text length, D LM width.
"""

from __future__ import annotations

import functools
import weakref
from contextlib import contextmanager
from typing import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from synth2.models.attention import attend
from synth2.models.lm import FrozenLM


@dataclass
class VLMConfig:
    width: int = 128
    perceiver_layers: int = 2
    latents: int = 16
    heads: int = 4
    ff_mult: int = 2
    xattn_every: int = 1
    xattn_heads: int = 4
    # on the resampler's and the gated blocks' residual branches (the paper fine-tunes with 0.1)
    dropout: float = 0.0


def _ff(width: int, mult: int, out: int | None = None) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width * mult), nn.GELU(), nn.Linear(width * mult, out or width))


class PerceiverLayer(nn.Module):
    def __init__(self, width: int, heads: int, ff_mult: int, dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.drop = nn.Dropout(dropout)
        self.norm_media = nn.LayerNorm(width)
        self.norm_latents = nn.LayerNorm(width)
        self.q = nn.Linear(width, width, bias=False)
        self.kv = nn.Linear(width, 2 * width, bias=False)
        self.out = nn.Linear(width, width, bias=False)
        self.ff = _ff(width, ff_mult)

    def forward(self, media_BNW: torch.Tensor, latents_BMW: torch.Tensor) -> torch.Tensor:
        B, M, W = latents_BMW.shape
        media = self.norm_media(media_BNW)
        latents = self.norm_latents(latents_BMW)
        # keys and values: media concatenated with the latents (Flamingo's resampler)
        source = torch.cat([media, latents], dim=1)
        q = self.q(latents).view(B, M, self.heads, -1).transpose(1, 2)
        k, v = self.kv(source).view(B, source.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        attended = attend(q, k, v).transpose(1, 2).reshape(B, M, W)
        latents_BMW = latents_BMW + self.drop(self.out(attended))
        return latents_BMW + self.drop(self.ff(latents_BMW))


class MediaInput(nn.Module):
    """VQ code vectors (B, h, w, E) -> the resampler's width, plus a learnt position per token."""

    def __init__(self, embed_dim: int, width: int, grid: tuple[int, int]):
        super().__init__()
        h, w = grid
        self.proj = nn.Linear(embed_dim, width)
        self.row_embed = nn.Parameter(torch.randn(h, 1, width) * 0.02)
        self.col_embed = nn.Parameter(torch.randn(1, w, width) * 0.02)

    def forward(self, codes_BhwE: torch.Tensor) -> torch.Tensor:
        return self.proj(codes_BhwE) + self.row_embed + self.col_embed


class PerceiverResampler(nn.Module):
    def __init__(self, cfg: VLMConfig):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(cfg.latents, cfg.width) * 0.02)
        self.layers = nn.ModuleList(PerceiverLayer(cfg.width, cfg.heads, cfg.ff_mult, cfg.dropout) for _ in range(cfg.perceiver_layers))
        self.norm = nn.LayerNorm(cfg.width)

    def forward(self, media_BNW: torch.Tensor) -> torch.Tensor:
        latents = self.latents.expand(media_BNW.shape[0], -1, -1)
        for layer in self.layers:
            latents = layer(media_BNW, latents)
        return self.norm(latents)


@dataclass
class XAttnCondition:
    """The visual input of one forward call, the VLM whose gated blocks read it, and the
    cross-attention keys/values computed from it (once per image: decoding reuses them at
    every step)."""

    latents_BMW: torch.Tensor
    owner: "VLM"
    kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    def repeat_interleave(self, repeats: int) -> "XAttnCondition":
        return XAttnCondition(self.latents_BMW.repeat_interleave(repeats, dim=0), self.owner)


class GatedCrossAttentionBlock(nn.Module):
    def __init__(self, lm_width: int, visual_width: int, heads: int, ff_mult: int, dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(lm_width)
        self.q = nn.Linear(lm_width, lm_width, bias=False)
        self.kv = nn.Linear(visual_width, 2 * lm_width, bias=False)
        self.out = nn.Linear(lm_width, lm_width, bias=False)
        self.attn_gate = nn.Parameter(torch.zeros(1))
        self.ff = _ff(lm_width, ff_mult)
        self.ff_gate = nn.Parameter(torch.zeros(1))

    def keys_values(self, latents_BMW: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, M, _ = latents_BMW.shape
        k, v = self.kv(latents_BMW).view(B, M, 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        return k, v

    def forward(self, hidden_BTD: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """The LM's hidden states in, in the LM's dtype (a bf16/fp16 frozen LM beside float32 blocks)."""
        B, T, D = hidden_BTD.shape
        lm_dtype = hidden_BTD.dtype
        x = hidden_BTD.to(self.q.weight.dtype) if not torch.is_autocast_enabled() else hidden_BTD
        q = self.q(self.norm(x)).view(B, T, self.heads, -1).transpose(1, 2)
        k, v = kv
        attended = attend(q, k.to(q.dtype), v.to(q.dtype)).transpose(1, 2).reshape(B, T, D)
        x = x + torch.tanh(self.attn_gate) * self.drop(self.out(attended))
        x = x + torch.tanh(self.ff_gate) * self.drop(self.ff(x))
        return x.to(lm_dtype)


class VLM(nn.Module):
    """Trainable parts (media projection, resampler, gated blocks) around a frozen LM and frozen VQ."""

    def __init__(self, cfg: VLMConfig, lm: FrozenLM, vq: nn.Module, grid: tuple[int, int]):
        super().__init__()
        self.cfg = cfg
        self.lm = lm
        self.vq = vq
        self.vq.requires_grad_(False)
        self.grid = tuple(grid)
        self.media = MediaInput(vq.embed_dim, cfg.width, self.grid)
        self.resampler = PerceiverResampler(cfg)
        layers = lm.decoder_layers
        self.xattn_layers = [i for i in range(len(layers)) if i % cfg.xattn_every == 0]
        self.xattn = nn.ModuleList(
            GatedCrossAttentionBlock(lm.hidden_size, cfg.width, cfg.xattn_heads, cfg.ff_mult, cfg.dropout) for _ in self.xattn_layers
        )
        self._hooks = [layer.register_forward_pre_hook(_xattn_hook(weakref.ref(self), i), with_kwargs=True) for i, layer in enumerate(layers)]

    @property
    def blocks_by_layer(self) -> dict[int, GatedCrossAttentionBlock]:
        return dict(zip(self.xattn_layers, self.xattn))

    def detach(self) -> None:
        """Take this VLM's hooks off the frozen LM (which other VLMs may go on using)."""
        for handle in self._hooks:
            handle.remove()
        self._hooks = []

    @torch.no_grad()
    def gate_openness(self) -> float:
        """Mean |tanh(gate)| of the cross-attention gates: 0 = the frozen LM, blind to images."""
        return float(torch.stack([torch.tanh(block.attn_gate).abs() for block in self.xattn]).mean())

    @contextmanager
    def checkpointed_lm(self, enabled: bool = True) -> Iterator[None]:
        """Activation checkpointing of the frozen LM's decoder layers for the forward passes run
        inside (their backward recomputes them): the LM's activations are most of a step's memory.
        The LM is shared, so its layers are only changed for the duration."""
        if not enabled:
            yield
            return
        layers = list(self.lm.decoder_layers)
        for layer in layers:
            layer.forward = functools.partial(checkpoint, layer.forward, use_reentrant=False)
        try:
            yield
        finally:
            for layer in layers:
                del layer.forward  # the class's own forward again

    def set_dropout(self, p: float) -> None:
        """Dropout of every trainable residual branch (e.g. the paper's 0.1 for fine-tuning)."""
        for part in self.trainable_modules().values():
            for module in part.modules():
                if isinstance(module, nn.Dropout):
                    module.p = p

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"media": self.media, "resampler": self.resampler, "xattn": self.xattn}

    def train(self, mode: bool = True) -> "VLM":
        super().train(mode)
        self.lm.train(False)
        self.vq.train(False)
        return self

    def condition(self, tokens_Bhw: torch.Tensor) -> XAttnCondition:
        """Visual latents from token ids; the VQ codebook lookup is frozen."""
        if not self._hooks:
            raise RuntimeError("this VLM was detached from its LM; build it again to use it")
        with torch.no_grad():
            soft = self.vq.embed(tokens_Bhw)  # (B, h, w, E)
        return XAttnCondition(self.resampler(self.media(soft).flatten(1, 2)), self)

    def forward(self, input_ids_BT, attention_mask_BT, tokens_Bhw=None, condition: XAttnCondition | None = None, cache=None, **lm_kwargs):
        """The LM's output; `cache` is its KV cache (read it back with `self.cache_of(output)`)."""
        if condition is None and tokens_Bhw is not None:
            condition = self.condition(tokens_Bhw)
        if cache is not None:
            lm_kwargs[self.lm.cache_name] = cache
        if condition is not None:
            lm_kwargs["xattn"] = condition
        return self.lm.model(input_ids=input_ids_BT, attention_mask=attention_mask_BT, **lm_kwargs)

    def cache_of(self, output):
        return getattr(output, self.lm.cache_name)


def _xattn_hook(owner: "weakref.ref[VLM]", layer_index: int):
    """A decoder layer's pre-hook: run the owner's gated block for this layer on the owner's
    conditions; leave other VLMs' conditions to their own hooks."""

    def hook(module, args, kwargs):
        condition: XAttnCondition | None = kwargs.get("xattn")
        vlm = owner()
        if condition is None or condition.owner is not vlm:
            return None
        kwargs = {k: v for k, v in kwargs.items() if k != "xattn"}
        if layer_index not in vlm.blocks_by_layer:
            return args, kwargs
        block = vlm.blocks_by_layer[layer_index]
        if layer_index not in condition.kv:
            condition.kv[layer_index] = block.keys_values(condition.latents_BMW)
        if args:
            args = (block(args[0], condition.kv[layer_index]),) + tuple(args[1:])
        else:
            kwargs["hidden_states"] = block(kwargs["hidden_states"], condition.kv[layer_index])
        return args, kwargs

    return hook


class TrainableParts(nn.Module):
    """A VLM's trainable parts as one module: what is checkpointed, saved and DDP-wrapped.
    Calling it computes the caption loss through the whole VLM."""

    def __init__(self, vlm: VLM):
        super().__init__()
        # the VLM's own submodules (no parameter registered twice: FSDP replaces them in place)
        self.parts = nn.ModuleDict(vlm.trainable_modules())
        object.__setattr__(self, "vlm", vlm)  # not a submodule: the frozen LM and VQ stay out of checkpoints

    def forward(self, input_ids_BT, attention_mask_BT, labels_BT, tokens_Bhw, normaliser=None):
        return caption_loss(self.vlm, input_ids_BT, attention_mask_BT, labels_BT, tokens_Bhw, normaliser)


def caption_loss(vlm: VLM, input_ids_BT, attention_mask_BT, labels_BT, tokens_Bhw, normaliser: float | None = None) -> torch.Tensor:
    """Next-token cross-entropy on caption tokens only (labels are -100 elsewhere).

    The mean over this batch's caption tokens, or their sum / `normaliser` (data-parallel
    training passes the global token count over the world size, so that averaging
    gradients over ranks gives the single-process gradient even when ranks hold
    different numbers of caption tokens).
    """
    logits = vlm(input_ids_BT, attention_mask_BT, tokens_Bhw, use_cache=False).logits  # training builds no KV cache
    reduction = "mean" if normaliser is None else "sum"
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels_BT[:, 1:].flatten(), ignore_index=-100, reduction=reduction)
    return loss if normaliser is None else loss / normaliser
