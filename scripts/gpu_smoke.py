"""A few training steps of every model at the `paper` preset's shapes: steps/s, peak memory, MFU.

What a GPU owner runs first (through scripts/gpu_smoke.sh, after the tiny preset end to end).
Every model has the paper architecture and random weights (speed and memory do not depend on
them); the batch is per device. FLOPs per step are counted by torch's FlopCounterMode on one
step (forward and backward), and MFU divides the achieved FLOP rate by the device's peak, read
from --peak-tflops (dense bf16 of the card; H100/H200 SXM: 989, A100: 312).

    python scripts/gpu_smoke.py --device cuda --batch 8 --steps 5 --peak-tflops 989
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from synth2.config import paper
from synth2.models.lm import FrozenLM, build_embedded_lm, train_tokenizer
from synth2.models.vlm import VLM
from synth2.models.vq import VQModel
from synth2.train.clip import ClipTask
from synth2.train.distributed import DistInfo, resolve_device
from synth2.train.lm import LMTask
from synth2.train.loop import StepContext
from synth2.train.t2i import T2ITask
from synth2.train.vlm import SourceConfig, SourceData, VLMTask
from synth2.train.vq import VQTask

CAPTIONS = [f"This is an image of a {c} {s} on a plain background, seen from the front." for c in ("red", "green", "blue", "grey")
            for s in ("cup", "ball", "house", "tree", "dog", "car", "chair", "lamp")]


def frozen_lm(cfg, device) -> FrozenLM:
    tokenizer = train_tokenizer(CAPTIONS * 8, 1000)
    model = build_embedded_lm(cfg.lm.model, tokenizer)
    model.resize_token_embeddings(cfg.lm.model.vocab_size)  # the paper LM's 32k output layer
    return FrozenLM(model, tokenizer, cfg.lm.max_text_length).to(device)


def tasks(cfg, dist: DistInfo, batch: int, precision: str):
    """(name, task, its TrainConfig) for every model, each built only when its turn comes."""

    def sized(train):
        return dataclasses.replace(train, batch_size=batch, precision=precision)

    rng = np.random.default_rng(0)
    grid = (cfg.world.resolution // cfg.vq.model.downsample,) * 2
    images = rng.integers(0, 256, (max(4 * batch, len(CAPTIONS)), cfg.world.resolution, cfg.world.resolution, 3), dtype=np.uint8)
    tokens = rng.integers(0, cfg.vq.model.codebook_size, (len(CAPTIONS), *grid))
    vq_cfg = dataclasses.replace(cfg.vq, model=dataclasses.replace(cfg.vq.model, kmeans_init=False), train=sized(cfg.vq.train), disc_start=0)
    yield "vq", lambda: VQTask(vq_cfg, images, dist, 0), vq_cfg.train
    lm_cfg = dataclasses.replace(cfg.lm, train=sized(cfg.lm.train))
    yield "lm", lambda: LMTask(lm_cfg, frozen_lm(cfg, dist.device), CAPTIONS, dist, 0), lm_cfg.train
    t2i_cfg = dataclasses.replace(cfg.t2i, train=sized(cfg.t2i.train))
    yield "t2i", lambda: T2ITask(t2i_cfg, frozen_lm(cfg, dist.device), tokens, CAPTIONS, cfg.vq.model.codebook_size, dist, 0), t2i_cfg.train
    vlm_cfg = dataclasses.replace(cfg.vlm, train=sized(cfg.vlm.train))

    def vlm_task():
        vlm = VLM(cfg.vlm.model, frozen_lm(cfg, dist.device), VQModel(vq_cfg.model).eval(), grid)
        source = SourceData("llm", SourceConfig(kind="synthetic", data="llm"), CAPTIONS, tokens[:, None])
        return VLMTask(vlm_cfg, vlm, [source], dist, 0)

    yield "vlm", vlm_task, vlm_cfg.train
    clip_cfg = dataclasses.replace(cfg.clip, train=sized(cfg.clip.train))
    yield "clip", lambda: ClipTask(clip_cfg, frozen_lm(cfg, dist.device), images[: len(CAPTIONS)], CAPTIONS, dist, 0), clip_cfg.train


def measure(task, train_cfg, dist: DistInfo, steps: int, peak_tflops: float | None) -> dict:
    ctx = StepContext(train_cfg, dist)
    cuda = dist.device.type == "cuda"

    def step(i: int) -> None:
        task.step(task.batch(i), i, ctx)
        ctx.end_step()

    step(0)  # warm-up
    with FlopCounterMode(display=False) as counter:
        step(1)
    flops = counter.get_total_flops()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for i in range(2, 2 + steps):
        step(i)
    if cuda:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    return {
        "steps_per_s": round(1 / seconds, 3),
        "tflop_per_step": round(flops / 1e12, 3),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "mfu": round(flops / seconds / (peak_tflops * 1e12), 4) if peak_tflops else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=8, help="per device")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's dense peak at --precision")
    parser.add_argument("--models", default="vq,lm,t2i,vlm,clip")
    args = parser.parse_args()
    dist = DistInfo(device=resolve_device(args.device))
    if dist.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    cfg = paper()
    wanted = args.models.split(",")
    report = {"device": torch.cuda.get_device_name() if dist.device.type == "cuda" else str(dist.device), "batch": args.batch, "precision": args.precision}
    for name, build, train_cfg in tasks(cfg, dist, args.batch, args.precision):
        if name in wanted:
            torch.manual_seed(0)
            report[name] = measure(build(), train_cfg, dist, args.steps, args.peak_tflops)
            print(json.dumps({name: report[name]}), flush=True)
            if dist.device.type == "cuda":
                torch.cuda.empty_cache()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
