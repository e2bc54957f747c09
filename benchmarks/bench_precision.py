"""Is bf16 autocast or channels_last faster on this CPU? (The presets use them only where measured faster.)

Times one attention forward and backward at the generator's shapes (fp32, torch's fused
attention in bf16, and `models.attention.attend` under bf16 autocast); training steps of the
quick preset's VQ, T2I and VLM models in fp32, bf16 autocast and (VQ) channels_last memory
format; and a decoding batch of the generator in fp32 and under bf16 autocast
(`sampler.precision`). Whether bf16 pays depends on the CPU's dot-product
instructions: `cpu_flags` reports the bf16 ones /proc/cpuinfo lists (`hardware.bf16_flags`).

    .venv/bin/python benchmarks/bench_precision.py
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch
import torch.nn.functional as F

from bench_vlm_space import build
from common import DRAW_STEPS, save, training_steps_per_s

from synth2.config import quick
from synth2.hardware import bf16_flags
from synth2.models.attention import attend
from synth2.models.sampler import SamplerConfig
from synth2.models.vlm import VLM
from synth2.models.t2i import T2IModel, masked_prediction_loss
from synth2.train.distributed import DistInfo
from synth2.train.loop import StepContext
from synth2.train.vlm import SourceConfig, SourceData, VLMTask
from synth2.train.vq import VQTask


def vq_steps_per_s(cfg, precision: str, channels_last: bool, steps: int = 15) -> float:
    stage = dataclasses.replace(cfg.vq, channels_last=channels_last, train=dataclasses.replace(cfg.vq.train, precision=precision))
    images = np.random.default_rng(0).integers(0, 255, (512, cfg.world.resolution, cfg.world.resolution, 3), dtype=np.uint8)
    task = VQTask(stage, images, DistInfo(), 0)
    ctx = StepContext(stage.train, DistInfo())
    task.step(task.batch(0), 0, ctx)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        task.step(task.batch(step), step, ctx)
    return steps / (time.perf_counter() - start)


def t2i_steps_per_s(cfg, precision: str, steps: int = 10) -> float:
    torch.manual_seed(0)
    model = T2IModel(cfg.t2i.model, cfg.vq.model.codebook_size, (8, 8), cfg.lm.model.hidden)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    ctx = StepContext(dataclasses.replace(cfg.t2i.train, precision=precision), DistInfo())
    ids = torch.randint(0, cfg.vq.model.codebook_size, (cfg.t2i.train.batch_size, 64))
    text, mask = torch.randn(len(ids), 16, cfg.lm.model.hidden), torch.ones(len(ids), 16, dtype=torch.bool)

    def step():
        with ctx.autocast():
            loss, _, _ = masked_prediction_loss(model, ids, text, mask)
        ctx.update(loss, opt)

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - start)


def vlm_steps_per_s(cfg, parts, precision: str, steps: int = 8) -> float:
    """Steps/s of VLM training on the world LLM's (long) captions with cached tokens: no drawing."""
    lm, vq, grid, _, captions = parts
    attention = lm.model.config._attn_implementation  # VLMTask may switch it (bf16 on a CPU)
    torch.manual_seed(0)
    tokens = np.random.default_rng(0).integers(0, cfg.vq.model.codebook_size, (len(captions), 1, *grid))
    stage = dataclasses.replace(cfg.vlm, train=dataclasses.replace(cfg.vlm.train, precision=precision))
    source = SourceData("llm", SourceConfig(kind="synthetic", data="llm"), captions, tokens)
    task = VLMTask(stage, VLM(cfg.vlm.model, lm, vq, grid), [source], DistInfo(), 0)
    speed = training_steps_per_s(task, stage.train, steps)
    lm.model.set_attn_implementation(attention)  # the shared LM as it was, for the next measurement
    return speed


def decode_images_per_s(parts, precision: str, batch: int = 32) -> float:
    """Images/s of one decoding batch of `batch` LLM captions at DRAW_STEPS steps."""
    generator = dataclasses.replace(parts[3], sampler=SamplerConfig(steps=DRAW_STEPS, guidance=1.0, temperature=0.0, precision=precision))
    captions = parts[4][:batch]
    generator.tokens(captions, 0)
    start = time.perf_counter()
    generator.tokens(captions, 1)
    return batch / (time.perf_counter() - start)


def attention_ms(how: str, repeats: int = 30) -> float:
    """Milliseconds of one attention forward and backward at the generator's shapes (batch 64,
    4 heads, 16 positions of 32): "fp32"; "bf16_fused", torch's fused attention on bf16
    inputs; "bf16_attend", `attend` under bf16 autocast, which attends in fp32 on a CPU."""
    dtype = torch.float32 if how == "fp32" else torch.bfloat16
    q, k, v = (torch.randn(64, 4, 16, 32, dtype=dtype, requires_grad=True) for _ in range(3))
    fn = attend if how == "bf16_attend" else F.scaled_dot_product_attention

    def once():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=how == "bf16_attend"):
            fn(q, k, v).float().sum().backward()

    once()
    start = time.perf_counter()
    for _ in range(repeats):
        once()
    return 1000 * (time.perf_counter() - start) / repeats


def main(repeats: int = 3) -> None:
    cfg = quick(world_codes=False)  # joint codes: what BENCHMARKS.md measures (the presets on your own images)
    parts = build(cfg)
    results = {"cpu_flags": bf16_flags()}
    for name, fn in {
        "attention_ms_fp32": lambda: attention_ms("fp32"),
        "attention_ms_bf16_fused": lambda: attention_ms("bf16_fused"),
        "attention_ms_bf16_attend": lambda: attention_ms("bf16_attend"),
        "vq_fp32": lambda: vq_steps_per_s(cfg, "fp32", False),
        "vq_bf16": lambda: vq_steps_per_s(cfg, "bf16", False),
        "vq_fp32_channels_last": lambda: vq_steps_per_s(cfg, "fp32", True),
        "t2i_fp32": lambda: t2i_steps_per_s(cfg, "fp32"),
        "t2i_bf16": lambda: t2i_steps_per_s(cfg, "bf16"),
        "vlm_fp32": lambda: vlm_steps_per_s(cfg, parts, "fp32"),
        "vlm_bf16": lambda: vlm_steps_per_s(cfg, parts, "bf16"),
        "decode_fp32": lambda: decode_images_per_s(parts, "fp32"),
        "decode_bf16": lambda: decode_images_per_s(parts, "bf16"),
    }.items():
        results[name] = round(float(np.median([fn() for _ in range(repeats)])), 3)
    results["vq_bf16_over_fp32"] = round(results["vq_bf16"] / results["vq_fp32"], 3)
    results["vq_channels_last_over_fp32"] = round(results["vq_fp32_channels_last"] / results["vq_fp32"], 3)
    for model in ("t2i", "vlm", "decode"):
        results[f"{model}_bf16_over_fp32"] = round(results[f"{model}_bf16"] / results[f"{model}_fp32"], 3)
    save("precision", results)


if __name__ == "__main__":
    main()
