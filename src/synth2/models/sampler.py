"""MaskGIT parallel decoding for the MUSE-style generator.

Start with every token masked; at each of T steps predict all masked tokens, sample
them at `temperature`, score each sampled token by log p + choice_temperature *
(1 - t/T) * Gumbel noise, keep the most confident and re-mask the rest so that the
schedule's share of tokens stays masked (cosine by default). Known tokens are never
re-masked. Guidance: logits = uncond + s * (cond - uncond), where s = 1 is plain
conditional sampling and the paper uses s = 4.

Shape legend: B batch, N image tokens, L text length, C text width, K codebook size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from synth2.captions.prompts import CAPTION_OPENING
from synth2.models.codes import join_ids
from synth2.models.t2i import T2IModel, mask_ratio


@dataclass
class SamplerConfig:
    """How the trained generator is prompted and decoded."""

    steps: int = 24
    guidance: float = 4.0
    temperature: float = 1.0  # 0 = argmax
    choice_temperature: float = 4.5
    # The share of tokens still masked after each step (models/t2i.py: MASK_SCHEDULES).
    schedule: str = "cosine"
    # Dropped from the start of a caption before it conditions the generator (case-insensitive;
    # "" keeps captions whole). The paper's caption prompt makes every LLM caption open with it,
    # and a generator trained on paired captions, which never do, may not follow such captions
    # (the generator metrics' oracle_llm* measure it). The VLM still trains on the whole
    # caption. Applied by `synthesis.TokenGenerator`.
    drop_prefix: str = CAPTION_OPENING
    # Condition on the caption's first sentence only (after `drop_prefix`). Not the paper's method:
    # its LLM captions run to several sentences, and a generator trained on short paired
    # captions may follow their first sentence (which lists every object) better than the whole
    # (docs/generator/levers.md measures both). Off by default.
    first_sentence: bool = False
    # "bf16": decode under bf16 autocast, about 1.2x faster on a CPU with bf16 dot products
    # (benchmarks/bench_precision.py) and slower on one without; tokens may differ from fp32's
    # where two codes are nearly tied. Applied by `synthesis.TokenGenerator`.
    precision: Literal["fp32", "bf16"] = "fp32"


def masked_after(step: int, steps: int, num_tokens: int, schedule: str = "cosine") -> int:
    """How many of `num_tokens` tokens the schedule keeps masked after `step` of `steps`."""
    return math.floor(num_tokens * float(mask_ratio(torch.tensor(step / steps, dtype=torch.float64), schedule)))


def _gumbel(shape, generator, device) -> torch.Tensor:
    u = torch.rand(shape, generator=generator, device=device).clamp(1e-20, 1.0)
    return -torch.log(-torch.log(u))


@torch.no_grad()
def sample(
    model: T2IModel,
    text_BLC: torch.Tensor,
    text_mask_BL: torch.Tensor,
    empty_LC: torch.Tensor,
    empty_mask_L: torch.Tensor,
    cfg: SamplerConfig,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Token ids (B, N) for a batch of captions; deterministic for a seeded generator."""
    B, device = text_BLC.shape[0], text_BLC.device
    N = model.num_tokens
    ids = torch.full((B, N), model.mask_id, dtype=torch.long, device=device)
    guided = cfg.guidance != 1.0
    copies = 2 if guided else 1  # one forward over [cond; uncond] per step when guided
    text, mask = text_BLC, text_mask_BL
    if guided:
        Lc, Le = text_BLC.shape[1], empty_LC.shape[0]
        width = max(Lc, Le)
        cond = F.pad(text_BLC, (0, 0, 0, width - Lc))
        cond_mask = F.pad(text_mask_BL, (0, width - Lc))
        empty = F.pad(empty_LC, (0, 0, 0, width - Le)).expand(B, width, -1)
        empty_mask = F.pad(empty_mask_L, (0, width - Le)).expand(B, width)
        text, mask = torch.cat([cond, empty]), torch.cat([cond_mask, empty_mask])
    context = model.text_context(text, mask)  # the same at every step
    for t in range(cfg.steps):
        unknown = ids == model.mask_id
        picked = [None] * len(model.code_factors)

        def choose(i: int, logits: torch.Tensor) -> torch.Tensor:
            """Part i's ids from its logits over the unknown tokens, (M, K_i) ([cond; uncond] when guided)."""
            logits = logits.float()
            if guided:
                logits_c, logits_u = logits.chunk(2)
                logits = logits_u + cfg.guidance * (logits_c - logits_u)
            if cfg.temperature > 0:
                # noise drawn for every token, known or not: a seed's draws do not depend on which are known
                noise = _gumbel((B, N, logits.shape[-1]), generator, device)[unknown]
                ids_i = (logits / cfg.temperature + noise).argmax(-1)
            else:
                ids_i = logits.argmax(-1)
            picked[i] = (ids_i, F.log_softmax(logits, dim=-1).gather(-1, ids_i[..., None]).squeeze(-1))
            return ids_i.repeat(copies)

        # the head runs on the unknown tokens only: known ones are never re-masked or re-drawn
        model(ids.repeat(copies, 1), text, mask, choose=choose, only_BN=unknown.repeat(copies, 1), context=context)
        sampled = ids.clone()
        sampled[unknown] = join_ids([ids_i for ids_i, _ in picked], model.code_factors)
        # the parts' log-probabilities add up to the joint's (FactoredHead), so this samples the joint
        confidence = torch.full((B, N), math.inf, device=device)
        confidence[unknown] = sum(log_prob for _, log_prob in picked)
        ratio = (t + 1) / cfg.steps
        confidence = confidence + cfg.choice_temperature * (1.0 - ratio) * _gumbel(confidence.shape, generator, device)
        # at least one token is revealed per step, and masked tokens never exceed the previous count
        still_masked = max(0, min(masked_after(t + 1, cfg.steps, N, cfg.schedule), int(unknown.sum(1).min()) - 1))
        ids = sampled
        if still_masked > 0:
            lowest = confidence.argsort(dim=1)[:, :still_masked]
            ids = ids.scatter(1, lowest, model.mask_id)
    return ids
