"""Product-code token ids: one id per position made of several parts' codes (models/vq.py's
ProductQuantizer), written as a mixed-radix number, first part most significant, so that
code written for one id per position (shards, the VLM, the sampler's masks) needs no change.
"""

from __future__ import annotations

import torch


def split_ids(ids: torch.Tensor, factors: tuple[int, ...]) -> list[torch.Tensor]:
    """Token ids -> one id tensor per part (part i in [0, factors[i]))."""
    parts = []
    for size in reversed(factors):
        parts.append(ids % size)
        ids = torch.div(ids, size, rounding_mode="floor")
    return parts[::-1]


def join_ids(parts: list[torch.Tensor], factors: tuple[int, ...]) -> torch.Tensor:
    """The inverse of `split_ids`."""
    ids = torch.zeros_like(parts[0])
    for size, part in zip(factors, parts):
        ids = ids * size + part
    return ids


def codebook_usage(ids: torch.Tensor, factors: tuple[int, ...]) -> float:
    """The share of codebook entries among `ids`; for product codes, the mean of the parts'
    shares (the codebooks that exist: most products of parts never occur)."""
    parts = split_ids(ids.reshape(-1), factors)
    return float(sum(part.unique().numel() / size for part, size in zip(parts, factors)) / len(factors))
