"""Scaled dot-product attention that stays fast under a CPU's bf16 autocast."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None, dropout_p: float = 0.0) -> torch.Tensor:
    """`F.scaled_dot_product_attention`, in the queries' dtype.

    On a CPU, torch's fused attention on bf16 inputs runs about 10 times slower than in fp32 at
    this library's sizes (a forward and backward over 64 x 4 heads x 16 positions of 32: 8 ms
    against under 1 ms at two threads, `benchmarks/bench_precision.py`), which made bf16 autocast
    slower than fp32 even on a CPU with bf16 dot products. On a CPU the attention itself runs in
    fp32, outside autocast (which would cast its inputs back down); the projections around it
    keep autocast's dtype."""
    if q.device.type != "cpu" or (q.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
    with torch.autocast("cpu", enabled=False):
        y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=attn_mask, dropout_p=dropout_p)
    return y.to(q.dtype)


def eager_attention_in_cpu_half_precision(model: torch.nn.Module, precision: str, device: torch.device) -> None:
    """A Hugging Face model's fused attention has the same slow half-precision kernel on a CPU
    (`attend`): a model that trains there in bf16 or fp16 switches to its eager attention, whose
    matrix products autocast speeds up (the quick Gold arm trains at 1.54x the steps/s of fp32:
    docs/generator/quick-budget.md, "Half precision, where the CPU has bf16 dot products")."""
    if precision != "fp32" and device.type == "cpu":
        model.set_attn_implementation("eager")
