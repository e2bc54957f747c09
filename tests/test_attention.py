"""`models.attention.attend`: plain SDPA in fp32, and fp32 attention inside a CPU's bf16 autocast."""

import torch
import torch.nn.functional as F

from synth2.models.attention import attend


def qkv(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(4, 2, 16, 8, generator=g).to(dtype).requires_grad_() for _ in range(3)]


def test_in_fp32_it_is_torchs_attention_bit_for_bit():
    q, k, v = qkv()
    mask = torch.rand(4, 1, 1, 16, generator=torch.Generator().manual_seed(1)) > 0.3
    assert torch.equal(attend(q, k, v, attn_mask=mask), F.scaled_dot_product_attention(q, k, v, attn_mask=mask))


def test_under_cpu_bf16_autocast_it_attends_in_fp32_and_returns_the_queries_dtype():
    q, k, v = qkv(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = attend(q, k, v)
    assert y.dtype == torch.bfloat16
    reference = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    # the inputs are bf16 already, so the only rounding left is the output's to bf16
    assert torch.allclose(y.float(), reference.to(torch.bfloat16).float())
    y.float().square().sum().backward()
    assert all(t.grad is not None and t.grad.dtype == torch.bfloat16 and torch.isfinite(t.grad.float()).all() for t in (q, k, v))
