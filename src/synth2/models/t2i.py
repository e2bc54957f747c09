"""MUSE-style text-to-image-token generator (Chang et al., 2023), and its MaskGIT sampler.

A bidirectional transformer over the h*w VQ token ids (plus a [MASK] id), with
learned 2-D positional embeddings, cross-attention to the frozen LM's text hidden
states (padding masked; softmax, or sigmoid gates whose sum can count words:
`T2IConfig.cross_attention`), and an output head over the codebook. It is trained to
predict masked tokens; the sampler decodes all tokens in T parallel steps.

Shape legend: B batch, N = h*w image tokens, L text length, D width, K codebook size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Literal, get_args

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from synth2.models.attention import attend
from synth2.models.codes import split_ids

# the smallest normal float32: the floor of a probability before its log
_TINY = torch.finfo(torch.float32).tiny
# how far a pointer position may lower one of a word's codes below another, in log-probability
_FIT_RANGE = 30.0
# how attention weighs its keys (`Attention`): a softmax's weighted mean, or sigmoid gates summed
AttentionWeights = Literal["softmax", "sigmoid"]


@dataclass
class T2IConfig:
    width: int = 256
    layers: int = 4
    heads: int = 4
    mlp: int = 1024
    dropout: float = 0.1
    # The frozen LM layer whose hidden states the generator reads (-1: the last).
    text_layer: int = -1
    # Kernel of a 1-D convolution over the projected text states (0: none): each word's state
    # takes in its neighbours' ("red" before "circle"), at any text length.
    text_conv: int = 0
    # Trainable self-attention blocks over the text states before the image blocks read them
    # (0: none): a bidirectional text encoder, so a word's state can take in words further than
    # the convolution reaches ("the circle is red"), where the frozen LM is causal.
    text_blocks: int = 0
    # Tokens per side merged into one transformer position (space-to-depth before the blocks,
    # depth-to-space after, as aMUSEd's U-ViT downsamples): 2 makes the sequence 4x shorter.
    group: int = 1
    # Product codes only: True, each part is predicted given the parts chosen after it (the colour,
    # then a structure to go with it); False, every part from the position's state alone, so the
    # structure head cannot learn which shapes each colour comes on.
    chain_parts: bool = True
    # Product codes only: the parts copied from a caption word, each by a pointer over the words
    # with one more slot for the position's own prediction (CaptionPointer): [2] for the object
    # colour of `vq.model.colour_input: layers`, [0, 2] for its structure as well.
    pointer_parts: list[int] = field(default_factory=list)
    # Of `pointer_parts`, those whose position may reweigh a word's codes only along `rank`
    # directions ({part: rank}; a part not named: every code freely, CaptionPointer's `fit`; rank
    # 0: not at all, the word's codes as it gives them). The colour of `colour_input: layers` is
    # named by its word; what a free `fit` adds there is which colours each shape came in.
    pointer_fit_rank: dict[int, int] = field(default_factory=dict)
    # Product codes, chained: choose the first part (the structure) first and the rest given it,
    # instead of the last part (the colour) first.
    structure_first: bool = False
    # How a position weighs the caption's words in cross-attention: "softmax" (a weighted mean,
    # the same for one "circle" as for two) or "sigmoid" (each word gated on its own and the
    # values summed, so the state can count the words it attends to; Ramapuram et al., 2024).
    cross_attention: AttentionWeights = "softmax"


class Attention(nn.Module):
    """Multi-head attention; self-attention when `context` is None, else cross-attention."""

    def __init__(self, width: int, heads: int, context_width: int | None = None, dropout: float = 0.0, weights: AttentionWeights = "softmax"):
        super().__init__()
        if weights not in get_args(AttentionWeights):
            raise ValueError(f"attention weights must be 'softmax' or 'sigmoid', got {weights!r}")
        self.heads = heads
        self.weights = weights
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(context_width or width, 2 * width)
        self.out = nn.Linear(width, width)
        self.dropout = dropout
        # sigmoid weights: one learned bias per head, starting each gate at about 1/8 (e^-2), near
        # a softmax's share over a caption's words, so training starts where softmax would
        self.gate_bias = nn.Parameter(torch.full((heads, 1, 1), -2.0)) if weights == "sigmoid" else None

    def keys_values(self, source_BLD: torch.Tensor) -> torch.Tensor:
        """(2, B, heads, L, D / heads): the keys and values of `source`."""
        B, L, _ = source_BLD.shape
        return self.kv(source_BLD).view(B, L, 2, self.heads, -1).permute(2, 0, 3, 1, 4)

    def forward(self, x_BND: torch.Tensor, context_BLC: torch.Tensor | None = None, mask_BL: torch.Tensor | None = None,
                keys_values: torch.Tensor | None = None) -> torch.Tensor:
        """`keys_values`: the context's, computed before (`keys_values(context_BLC)`)."""
        B, N, D = x_BND.shape
        q = self.q(x_BND).view(B, N, self.heads, -1).transpose(1, 2)
        k, v = self.keys_values(x_BND if context_BLC is None else context_BLC) if keys_values is None else keys_values
        attn_mask = None if mask_BL is None else mask_BL[:, None, None, :]
        if self.weights == "softmax":
            y = attend(q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0)
        else:
            gates = torch.sigmoid(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + self.gate_bias)
            if attn_mask is not None:
                gates = gates * attn_mask
            y = F.dropout(gates, self.dropout, self.training) @ v
        return self.out(y.transpose(1, 2).reshape(B, N, D))


class Block(nn.Module):
    """Pre-norm self-attention, cross-attention to the text and an MLP. Without `text_width` it
    has no cross-attention: a text block (T2IConfig.text_blocks) over the caption's own states."""

    def __init__(self, cfg: T2IConfig, text_width: int | None):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width)
        self.self_attn = Attention(cfg.width, cfg.heads, dropout=cfg.dropout)
        if text_width is not None:
            self.norm2 = nn.LayerNorm(cfg.width)
            self.cross_attn = Attention(cfg.width, cfg.heads, context_width=text_width, dropout=cfg.dropout, weights=cfg.cross_attention)
        self.norm3 = nn.LayerNorm(cfg.width)
        self.mlp = nn.Sequential(nn.Linear(cfg.width, cfg.mlp), nn.GELU(), nn.Linear(cfg.mlp, cfg.width))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x_BND: torch.Tensor, text_BLC: torch.Tensor | None, text_mask_BL: torch.Tensor,
                text_keys_values: torch.Tensor | None = None) -> torch.Tensor:
        """With cross-attention, `text_mask_BL` masks the text's padding as keys of the cross-attention;
        without (`text_BLC` None, x is the text), as keys of the self-attention. `text_keys_values`:
        the cross-attention's keys and values of `text_BLC`, computed before (`TextContext`)."""
        self_mask = text_mask_BL if text_BLC is None else None
        x_BND = x_BND + self.drop(self.self_attn(self.norm1(x_BND), None, self_mask))
        if text_BLC is not None:
            x_BND = x_BND + self.drop(self.cross_attn(self.norm2(x_BND), text_BLC, text_mask_BL, text_keys_values))
        return x_BND + self.drop(self.mlp(self.norm3(x_BND)))


class FactoredEmbedding(nn.Module):
    """Embeddings of product-code ids (models/vq.py): the sum of one embedding per part, or the
    [MASK] embedding, so a token never seen in training is embedded from parts that were."""

    def __init__(self, factors: tuple[int, ...], width: int):
        super().__init__()
        self.factors = factors
        self.parts = nn.ModuleList(nn.Embedding(size, width) for size in factors)
        self.mask = nn.Parameter(torch.zeros(width))
        for table in self.parts:
            nn.init.normal_(table.weight, std=0.02)
        nn.init.normal_(self.mask, std=0.02)

    def forward(self, ids_BN: torch.Tensor) -> torch.Tensor:
        masked = ids_BN >= math.prod(self.factors)
        parts = split_ids(ids_BN.masked_fill(masked, 0), self.factors)
        x = sum(table(part) for table, part in zip(self.parts, parts))
        return torch.where(masked[..., None], self.mask, x)


class FactoredHead(nn.Module):
    """Product-code ids predicted part by part: each part from a position's state plus, when
    `chained`, the embeddings of the parts chosen before it. The parts go from the last to the
    first: with (structure, colour) codes the colour comes from the text alone, and the structure
    is chosen to go with it, so a patch's parts agree, while a colour never drawn on a shape can
    still be chosen. `first_part_first` reverses that: the structure first, then the colour for
    it. Unchained, the parts are independent given the state. The parts in `pointers`
    (CaptionPointer) are copied from a caption word.

    `parts(x, choose)` returns each part's logits and ids; `choose(i, logits_i)` gives part i's
    ids: the true ones in training (teacher forcing), a sample in decoding. A pointer's logits
    are log-probabilities, read from its part's entry of `captions` (`CaptionPointer.caption`).
    """

    def __init__(self, width: int, factors: tuple[int, ...], chained: bool = True, pointers: dict[int, CaptionPointer] | None = None,
                 first_part_first: bool = False):
        super().__init__()
        self.factors = factors
        self.order = list(range(len(factors))) if first_part_first else list(reversed(range(len(factors))))
        self.proj = nn.ModuleList(nn.Linear(width, size) for size in factors)
        # the embeddings of the chosen parts that the later-chosen parts read, in part order; None when unchained
        read = sorted(self.order[:-1])
        self.given = nn.ModuleList(nn.Embedding(factors[i], width) for i in read) if chained else None
        self.given_index = {i: k for k, i in enumerate(read)}
        self.pointers = nn.ModuleDict({str(i): pointer for i, pointer in (pointers or {}).items()})

    def parts(self, x_BND: torch.Tensor, choose: Callable, captions: dict[int, PointerCaption] | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        logits: list = [None] * len(self.factors)
        chosen: list = [None] * len(self.factors)
        state = x_BND
        for i in self.order:
            logits[i] = self._logits(state, i, captions)
            chosen[i] = choose(i, logits[i])
            if self.given is not None and i in self.given_index:
                state = state + self.given[self.given_index[i]](chosen[i])
        return logits, chosen

    def forward(self, x_BND: torch.Tensor, captions: dict[int, PointerCaption] | None = None) -> torch.Tensor:
        """Log-probabilities over every product id (B, N, K): for inspection and tests only, since it
        runs each part's head once per combination of the parts chosen before it."""
        n = len(self.factors)
        joint = self._joint(x_BND, 0, captions)  # (..., K of each part in the order chosen)
        lead = joint.dim() - n
        joint = joint.permute(*range(lead), *(lead + self.order.index(i) for i in range(n)))
        return joint.flatten(lead)  # part 0 most significant

    def _logits(self, state: torch.Tensor, i: int, captions: dict[int, PointerCaption] | None) -> torch.Tensor:
        own = self.proj[i](state)
        if str(i) not in self.pointers:
            return own
        return self.pointers[str(i)](state, own, captions[i])

    def _joint(self, state: torch.Tensor, step: int, captions: dict[int, PointerCaption] | None) -> torch.Tensor:
        """log p(the parts chosen from `step` on | state), (..., K of each, in the order chosen)."""
        i, rest = self.order[step], len(self.factors) - 1 - step
        log_i = F.log_softmax(self._logits(state, i, captions).float(), dim=-1)
        if rest == 0:
            return log_i
        if self.given is not None:
            state = state[..., None, :] + self.given[self.given_index[i]].weight  # one state per part i code
            later = self._joint(state, step + 1, captions)
        else:
            later = self._joint(state, step + 1, captions)[..., None, *[slice(None)] * rest]  # the same for every part i code
        return log_i[(...,) + (None,) * rest] + later


@dataclass
class PointerCaption:
    """The caption's side of a CaptionPointer, per caption: each word's key (B, L, P), its
    probabilities over the part's codes (B, L, K) and whether it is a word and not padding
    (B, L). `select` (B, N), when set, says which positions the states the pointer reads belong
    to, in row-major order: states (X, ..., D) for the X selected positions. Unset, the states
    are (B, ..., D), every position of each caption."""

    keys: torch.Tensor
    probs: torch.Tensor
    mask: torch.Tensor
    select: torch.Tensor | None = None

    def at(self, select_BN: torch.Tensor | None) -> PointerCaption:
        """The same caption for the states of the positions `select_BN` (None: all of them)."""
        return PointerCaption(self.keys, self.probs, self.mask, select_BN)

    def batched(self, x: torch.Tensor) -> torch.Tensor:
        """Per-position values (X or B, ..., C) -> (B, M, C), M the positions (and codes) per caption."""
        if self.select is not None:
            dense = x.new_zeros(*self.select.shape, *x.shape[1:])
            dense[self.select] = x
            x = dense
        return x.reshape(self.keys.shape[0], -1, x.shape[-1])

    def unbatched(self, x_BMC: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """The inverse of `batched`, for values laid out as `like` (..., D) but of width C."""
        if self.select is None:
            return x_BMC.reshape(*like.shape[:-1], x_BMC.shape[-1])
        return x_BMC.reshape(*self.select.shape, *like.shape[1:-1], x_BMC.shape[-1])[self.select]


class CaptionPointer(nn.Module):
    """One code part copied from a caption word: a pointer-generator (See et al., 2017).

    A position attends over the caption's words plus one slot of its own; the part's distribution
    is the attention-weighted mixture of each word's distribution and the slot's, which is the
    position's own prediction (`own`, e.g. a background colour the caption does not name). A
    word's key comes from the contextual text states, so a position can find the colour (or
    shape) word of its object; its distribution comes from the LM's state of the word alone, so
    "red" gives the same codes before any shape word. A shape never drawn in a colour in training
    cannot learn to avoid that colour's word: it has never attended to it. A linear head on the
    state can, since every example of the shape pushes the colours it never comes in down, and
    every example of a colour the shapes it never comes on.

    A word alone rarely names one code: a shape word names each of its patches' structure codes,
    and a colour word, unless the colour part is the object's colour alone (`vq.model.colour_input:
    layers`), codes that also hold the background and the patch's coverage. So a word's
    distribution is multiplied by one from the position's state (`fit`) and renormalised, a
    product of experts: the state chooses among the word's codes (which patch of the shape this
    position is), and a code the word gives no weight stays out.
    """

    def __init__(self, width: int, text_width: int, size: int, key_width: int = 64, fit_rank: int | None = None):
        super().__init__()
        self.query = nn.Linear(width, key_width)
        self.key = nn.Linear(width, key_width)
        self.value = nn.Sequential(nn.LayerNorm(text_width), nn.Linear(text_width, size))
        self.own_key = nn.Parameter(torch.zeros(key_width))
        # the position's say in which of a word's codes: the background behind it, an edge
        # (`fit_rank` limits it to that many directions over the codes; 0: none, None: any)
        if fit_rank is None:
            self.fit = nn.Linear(width, size)
        else:
            self.fit = nn.Sequential(nn.Linear(width, fit_rank), nn.Linear(fit_rank, size)) if fit_rank else None

    def caption(self, text_BLD: torch.Tensor, text_BLC: torch.Tensor, text_mask_BL: torch.Tensor) -> PointerCaption:
        """`text_BLD`: the generator's text states (T2IModel.text_states); `text_BLC`: the LM's."""
        return PointerCaption(self.key(text_BLD), F.softmax(self.value(text_BLC).float(), dim=-1), text_mask_BL.bool())

    def forward(self, state_XD: torch.Tensor, own_XK: torch.Tensor, caption: PointerCaption) -> torch.Tensor:
        """log p(part) (X, K) for positions X (any leading shape, laid out as `caption` says)."""
        weights = self.attention(state_XD, caption)
        own = weights[..., :1] + F.log_softmax(own_XK.float(), dim=-1)
        # word l gives code k p_l(k) e^fit(k) / Z_l (`word_codes`), mixed by the weights: two
        # matrix products per caption, so no (positions, words, codes) tensor is made. The
        # shift in `_fit` keeps e^fit <= 1 and cancels between a word's codes and its Z_l.
        fit = self._fit(state_XD)
        norm = caption.batched(fit.exp()) @ caption.probs.transpose(-1, -2)  # (B, M, L): Z_l
        word_weights = caption.batched(weights[..., 1:].exp())
        mixed = caption.unbatched((word_weights / norm.clamp_min(_TINY)) @ caption.probs, own_XK)
        words = torch.log(mixed.clamp_min(_TINY)) + fit
        return torch.logaddexp(own, words)

    def attention(self, state_XD: torch.Tensor, caption: PointerCaption) -> torch.Tensor:
        """Log-weights (X, 1 + L) of the position's own slot, then of each word."""
        query = self.query(state_XD)
        word_scores = caption.batched(query) @ caption.keys.transpose(-1, -2)  # (B, M, L)
        # padding gets a large finite negative score: a caption of padding alone stays finite
        word_scores = word_scores.masked_fill(~caption.mask[:, None, :], -1e9)
        scores = torch.cat([(query * self.own_key).sum(-1, keepdim=True), caption.unbatched(word_scores, query)], dim=-1)
        return F.log_softmax(scores.float() / math.sqrt(query.shape[-1]), dim=-1)

    def word_codes(self, state_XD: torch.Tensor, caption: PointerCaption, reweigh: bool = True) -> torch.Tensor:
        """log p(code | word l, position) (X, L, K) for states (X, D), or (B, N, L, K) for (B, N, D):
        each word's codes as the position reweighs them (`reweigh` False: as the word gives them),
        for inspection (`forward` mixes them without making this tensor)."""
        probs = caption.probs[caption.select.nonzero(as_tuple=True)[0]] if caption.select is not None else caption.probs[:, None]
        log_probs = torch.log(probs.clamp_min(_TINY))
        if not reweigh:
            return log_probs.expand(*state_XD.shape[:-1], *log_probs.shape[-2:])
        return F.log_softmax(log_probs + self._fit(state_XD)[..., None, :], dim=-1)

    def _fit(self, state_XD: torch.Tensor) -> torch.Tensor:
        if self.fit is None:  # the word's codes as it gives them
            return state_XD.new_zeros(*state_XD.shape[:-1], self.value[-1].out_features, dtype=torch.float32)
        fit = self.fit(state_XD).float()
        # at most e^30 between two codes: a word's Z_l then stays >= e^-30 (its probabilities sum
        # to 1), where a word whose codes the position all but rules out made 1/Z_l^2 overflow
        # float32 in the backward (NaN gradients once a rank-limited fit grew sharp on `small`)
        return (fit - fit.amax(-1, keepdim=True)).clamp_min(-_FIT_RANGE)


@dataclass
class TextContext:
    """The caption's side of a forward (`T2IModel.text_context`): the text states the blocks read
    and each block's cross-attention keys and values. It does not depend on the image tokens, so
    decoding computes it once for all its steps."""

    text_BLD: torch.Tensor
    keys_values: list[torch.Tensor]
    pointer_captions: dict[int, PointerCaption] = field(default_factory=dict)


class T2IModel(nn.Module):
    def __init__(self, cfg: T2IConfig, codebook_size: int, grid: tuple[int, int], text_width: int, code_factors: tuple[int, ...] | None = None):
        """`code_factors`: the parts of product-code ids (VQModel.code_factors); the generator then
        embeds and predicts the parts apart. None or one part: one embedding and head over the ids."""
        super().__init__()
        self.cfg = cfg
        self.codebook_size = codebook_size
        self.code_factors = tuple(code_factors or (codebook_size,))
        if math.prod(self.code_factors) != codebook_size:
            raise ValueError(f"code factors {list(self.code_factors)} do not multiply to the codebook size {codebook_size}")
        factored = len(self.code_factors) > 1
        self.checkpoint_blocks = False  # set by the trainer (TrainConfig.checkpoint_activations)
        self.mask_id = codebook_size  # the extra "dropped token"
        self.grid = tuple(grid)
        h, w = self.grid
        # BERT's embeddings, as MaskGIT's: token + position at one scale (std 0.02), then LayerNorm,
        # so both reach the blocks at unit scale. Without the norm, small embeddings drown in the
        # blocks' outputs; at torch's default token scale (std 1) the positions drown in the tokens.
        # Either way a small generator learns where a token sits, and so shapes, many times slower.
        if factored:
            self.token_embed = FactoredEmbedding(self.code_factors, cfg.width)
        else:
            self.token_embed = nn.Embedding(codebook_size + 1, cfg.width)
            nn.init.normal_(self.token_embed.weight, std=0.02)
        self.row_embed = nn.Parameter(torch.randn(h, 1, cfg.width) * 0.02)
        self.col_embed = nn.Parameter(torch.randn(1, w, cfg.width) * 0.02)
        self.embed_norm = nn.LayerNorm(cfg.width)
        g = cfg.group
        if h % g or w % g:
            raise ValueError(f"t2i.model.group {g} must divide the token grid {self.grid}")
        self.merge = nn.Linear(g * g * cfg.width, cfg.width) if g > 1 else nn.Identity()
        self.split = nn.Linear(cfg.width, g * g * cfg.width) if g > 1 else nn.Identity()
        self.text_proj = nn.Sequential(nn.LayerNorm(text_width), nn.Linear(text_width, cfg.width))
        self.text_conv = nn.Conv1d(cfg.width, cfg.width, cfg.text_conv, padding=cfg.text_conv // 2) if cfg.text_conv else None
        self.text_blocks = nn.ModuleList(Block(cfg, text_width=None) for _ in range(cfg.text_blocks))
        self.blocks = nn.ModuleList(Block(cfg, cfg.width) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.width)
        if cfg.pointer_parts and not factored:
            raise ValueError("t2i.model.pointer_parts needs product codes (vq.model.quantizer=product)")
        if any(not 0 <= i < len(self.code_factors) for i in cfg.pointer_parts):
            raise ValueError(f"t2i.model.pointer_parts {list(cfg.pointer_parts)}: the codes have parts 0 to {len(self.code_factors) - 1}")
        if not set(cfg.pointer_fit_rank) <= set(cfg.pointer_parts):
            raise ValueError(f"t2i.model.pointer_fit_rank {dict(cfg.pointer_fit_rank)} names parts not among pointer_parts {list(cfg.pointer_parts)}")
        pointers = {i: CaptionPointer(cfg.width, text_width, self.code_factors[i], fit_rank=cfg.pointer_fit_rank.get(i)) for i in cfg.pointer_parts}
        self.head = (FactoredHead(cfg.width, self.code_factors, cfg.chain_parts, pointers, cfg.structure_first) if factored
                     else nn.Linear(cfg.width, codebook_size))

    @property
    def pointers(self) -> dict[int, CaptionPointer]:
        """The code parts copied from a caption word, and their pointers."""
        return {int(i): pointer for i, pointer in self.head.pointers.items()} if isinstance(self.head, FactoredHead) else {}

    def hidden_matrices(self) -> list[nn.Parameter]:
        """The weights of the linear maps between the embeddings and the head: the text projection,
        the group merge and split, and every block's (Muon's share, `t2i.optimizer`)."""
        layers = [self.merge, self.split, self.text_proj, *self.text_blocks, *self.blocks]
        return [module.weight for layer in layers for module in layer.modules() if isinstance(module, nn.Linear)]

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def text_states(self, text_BLC: torch.Tensor, text_mask_BL: torch.Tensor) -> torch.Tensor:
        """(B, L, D): the frozen LM's states as the blocks read them."""
        text = self.text_proj(text_BLC)
        if self.text_conv is not None:
            text = text + self.text_conv((text * text_mask_BL[..., None]).transpose(1, 2)).transpose(1, 2)
        for block in self.text_blocks:
            text = block(text, None, text_mask_BL)
        return text

    @torch.no_grad()
    def text_context(self, text_BLC: torch.Tensor, text_mask_BL: torch.Tensor) -> TextContext:
        """The caption's side of `forward` for these texts, for the decoding steps to share."""
        text = self.text_states(text_BLC, text_mask_BL)
        return TextContext(text, [block.cross_attn.keys_values(text) for block in self.blocks], self._pointer_captions(text, text_BLC, text_mask_BL))

    def _pointer_captions(self, text_BLD: torch.Tensor, text_BLC: torch.Tensor, text_mask_BL: torch.Tensor) -> dict[int, PointerCaption]:
        """Each copied part's caption side (CaptionPointer.caption); empty without pointers."""
        return {i: pointer.caption(text_BLD, text_BLC, text_mask_BL) for i, pointer in self.pointers.items()}

    def forward(self, ids_BN: torch.Tensor, text_BLC: torch.Tensor, text_mask_BL: torch.Tensor, choose: Callable | None = None,
                only_BN: torch.Tensor | None = None, context: TextContext | None = None):
        """Logits (B, N, K) for every position, given partially masked ids. With `choose`, each code
        part's logits and chosen ids instead (FactoredHead.parts; one part unless codes are
        products): the loss and the sampler use it, so a product's K logits are never all built.
        With `only_BN` (bool), the head runs on the selected tokens alone and logits are (M, K):
        the loss reads the masked tokens only, and the head is the model's widest layer.
        `context`: `text_context(text_BLC, text_mask_BL)`, computed before (decoding)."""
        pos_ND = (self.row_embed + self.col_embed).reshape(self.num_tokens, -1)
        x = self._merge(self.embed_norm(self.token_embed(ids_BN) + pos_ND))
        text = self.text_states(text_BLC, text_mask_BL) if context is None else context.text_BLD
        captions = self._pointer_captions(text, text_BLC, text_mask_BL) if context is None else context.pointer_captions
        captions = {i: caption.at(only_BN) for i, caption in captions.items()}  # the head runs on the selected positions' states
        keys_values = [None] * len(self.blocks) if context is None else context.keys_values
        recompute = self.checkpoint_blocks and self.training and torch.is_grad_enabled()
        for block, block_keys_values in zip(self.blocks, keys_values):
            # activation checkpointing: keep each block's input only, recompute the block in backward
            x = checkpoint(block, x, text, text_mask_BL, use_reentrant=False) if recompute else block(x, text, text_mask_BL, block_keys_values)
        x = self.norm(self._split(x))
        if only_BN is not None:
            x = x[only_BN]
        if isinstance(self.head, FactoredHead):
            return self.head(x, captions) if choose is None else self.head.parts(x, choose, captions)
        logits = self.head(x)
        return logits if choose is None else ([logits], [choose(0, logits)])

    def _merge(self, x_BND: torch.Tensor) -> torch.Tensor:
        """(B, h*w, D) -> (B, h*w / g^2, D): each g x g block of tokens becomes one position."""
        g = self.cfg.group
        return self.merge(rearrange(x_BND, "b (h g1 w g2) d -> b (h w) (g1 g2 d)", h=self.grid[0] // g, g1=g, g2=g))

    def _split(self, x_BMD: torch.Tensor) -> torch.Tensor:
        """The inverse layout of `_merge`: (B, h*w / g^2, D) -> (B, h*w, D)."""
        g = self.cfg.group
        return rearrange(self.split(x_BMD), "b (h w) (g1 g2 d) -> b (h g1 w g2) d", h=self.grid[0] // g, g1=g, g2=g)

# The share of tokens masked at noise level r in [0, 1] (MaskGIT's mask scheduling functions):
# training draws r uniformly, decoding steps r from 0 to 1. Cosine is MUSE's and MaskGIT's choice.
MASK_SCHEDULES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "cosine": lambda r: torch.cos(math.pi / 2 * r),
    "linear": lambda r: 1 - r,
    "square": lambda r: 1 - r**2,
}


def mask_ratio(r: torch.Tensor, schedule: str = "cosine") -> torch.Tensor:
    """The share of tokens masked at noise level r under `schedule` (MASK_SCHEDULES)."""
    if schedule not in MASK_SCHEDULES:
        raise ValueError(f"mask schedule must be one of {sorted(MASK_SCHEDULES)}, got {schedule!r}")
    return MASK_SCHEDULES[schedule](r)


def random_mask(batch: int, num_tokens: int, generator: torch.Generator | None = None, device=None, schedule: str = "cosine") -> torch.Tensor:
    """(B, N) bool: per example, ceil(mask_ratio(r) * N) positions with r ~ U(0, 1), at least one."""
    r = torch.rand(batch, generator=generator, device=device)
    count = torch.ceil(mask_ratio(r, schedule) * num_tokens).clamp(min=1).long()
    scores = torch.rand(batch, num_tokens, generator=generator, device=device)
    ranks = scores.argsort(dim=1).argsort(dim=1)
    return ranks < count[:, None]


def masked_prediction_loss(
    model: T2IModel, ids_BN: torch.Tensor, text_BLC, text_mask_BL, generator=None, label_smoothing: float = 0.0, mask_BN=None, normaliser: float | None = None,
    weight_BN: torch.Tensor | None = None,
):
    """Cross-entropy on the masked positions only; returns (loss, masked-token accuracy, masked share).

    `mask_BN` defaults to a fresh `random_mask`. The loss is the mean over masked tokens, or
    their sum / `normaliser` (data-parallel training passes the global masked count over the
    world size, so averaging gradients over ranks gives the single-process gradient).
    `model` may be DDP-wrapped. `weight_BN` weighs each token's loss (the mean is then weighted,
    and `normaliser` the global weight sum over the world size).
    """
    if mask_BN is None:
        mask_BN = random_mask(ids_BN.shape[0], ids_BN.shape[1], generator, ids_BN.device)
    plain = getattr(model, "module", model)
    inputs = ids_BN.masked_fill(mask_BN, plain.mask_id)
    reduction = "mean" if normaliser is None else "sum"
    targets = [part[mask_BN] for part in split_ids(ids_BN, plain.code_factors)]
    weight = None if weight_BN is None else weight_BN[mask_BN]
    # the masked tokens' logits only (M, K), with teacher forcing of the code parts
    all_logits, _ = model(inputs, text_BLC, text_mask_BL, choose=lambda i, logits: targets[i], only_BN=mask_BN)
    loss, right = 0.0, torch.ones_like(targets[0], dtype=torch.bool)
    # product codes: the joint NLL is the sum of the parts' (FactoredHead); one part otherwise
    for logits, target in zip(all_logits, targets):
        if weight is None:
            loss = loss + F.cross_entropy(logits.float(), target, label_smoothing=label_smoothing, reduction=reduction)
        else:
            per_token = F.cross_entropy(logits.float(), target, label_smoothing=label_smoothing, reduction="none")
            loss = loss + (per_token * weight).sum()
        right &= logits.argmax(-1) == target
    if weight is not None and normaliser is None:
        normaliser = weight.sum()
    if normaliser is not None:
        loss = loss / normaliser
    return loss, right.float().mean(), mask_BN.float().mean()


def drop_text(text_BLC, text_mask_BL, empty_LC, empty_mask_L, p_uncond: float, generator=None):
    """Classifier-free guidance training: replace each caption by the empty caption with probability p.

    (open-muse keeps the text with probability p, which is backwards.) Texts are padded
    or trimmed to a common length first, so the swap is a per-example `where`.
    """
    B, L, C = text_BLC.shape
    Le = empty_LC.shape[0]
    width = max(L, Le)
    text = F.pad(text_BLC, (0, 0, 0, width - L))
    mask = F.pad(text_mask_BL, (0, width - L))
    empty = F.pad(empty_LC, (0, 0, 0, width - Le)).expand(B, width, C)
    empty_mask = F.pad(empty_mask_L, (0, width - Le)).expand(B, width)
    drop_B = torch.rand(B, generator=generator, device=text.device) < p_uncond
    return torch.where(drop_B[:, None, None], empty, text), torch.where(drop_B[:, None], empty_mask, mask), drop_B
