"""Training the VLM on named, weighted sources of real and synthetic pairs.

A real source supplies (caption, token ids) pairs (images encoded once by the VQ). A
synthetic source supplies captions; their image tokens come from the generator,
either from the synthesis cache (`variants` samples per caption) or on the fly, and
stay in embedding space. With `space = "pixel"` synthetic tokens are decoded to
pixels and re-encoded by the VQ first (the paper's Table 5 comparison).

Each global batch has a fixed share per source (by weight); which items, which
synthetic variant and which on-the-fly seed are functions of the step, so resuming
from a checkpoint reproduces the same batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from synth2.models.attention import eager_attention_in_cpu_half_precision
from synth2.models.vlm import VLM, TrainableParts, VLMConfig
from synth2.synthesis import TokenGenerator
from synth2.train.distributed import DistInfo, token_normaliser, wrap
from synth2.train.loop import StepContext, TrainConfig, adamw, cycle_indices, rank_slice


@dataclass
class SourceConfig:
    kind: Literal["real", "synthetic"] = "real"
    # A dataset of the run: "paired", a text-only corpus name, "llm", "curated_topk", ...
    data: str = "paired"
    weight: float = 1.0
    # Text the caption follows; sources in different caption styles get different prompts.
    prompt: str = ""
    limit: int = 0  # use at most this many items (0 = all)


@dataclass
class FinetuneConfig:
    """`synth2 finetune` on a benchmark's training split: the paper's settings (appendix A.2:
    AdamW with the pre-training betas, learning rate 1e-5, dropout 0.1)."""

    steps: int = 1000
    lr: float = 1e-5
    dropout: float = 0.1


@dataclass
class VLMStageConfig:
    model: VLMConfig = field(default_factory=VLMConfig)
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(steps=1500, batch_size=64, lr=1e-3, warmup=100, weight_decay=1e-4, betas=[0.9, 0.98], checkpoint_every=500)
    )
    max_caption_tokens: int = 64
    # the prompt captions are decoded after at evaluation
    eval_prompt: str = ""


@dataclass
class SourceData:
    """What a source needs in memory: captions and, for real data or a cache, token grids."""

    name: str
    cfg: SourceConfig
    captions: list[str]
    tokens: np.ndarray | None  # real: (N, h, w); cached synthetic: (N, V, h, w); on the fly: None


def batch_shares(sources: list[SourceConfig], batch_size: int) -> list[int]:
    """Items per source in every global batch, proportional to weight, summing to batch_size."""
    weights = np.array([s.weight for s in sources], dtype=np.float64)
    if (weights <= 0).any():
        raise ValueError("every VLM source needs a positive weight")
    raw = weights / weights.sum() * batch_size
    shares = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - shares))[: batch_size - shares.sum()]:
        shares[i] += 1
    return shares.tolist()


class VLMTask:
    def __init__(
        self,
        cfg: VLMStageConfig,
        vlm: VLM,
        sources: list[SourceData],
        dist: DistInfo,
        seed: int,
        generator: TokenGenerator | None = None,
        space: Literal["embedding", "pixel"] = "embedding",
    ):
        torch.manual_seed(seed)
        self.cfg, self.vlm, self.sources, self.dist, self.seed = cfg, vlm, sources, dist, seed
        self.generator, self.space = generator, space
        vlm.to(dist.device)  # its frozen LM and VQ with it
        eager_attention_in_cpu_half_precision(vlm.lm.model, cfg.train.precision, dist.device)
        if cfg.train.batch_size % dist.world_size:
            raise ValueError(f"vlm.train.batch_size {cfg.train.batch_size} does not divide over {dist.world_size} ranks")
        # each rank takes the same whole number of every source's examples
        self.shares = [share * dist.world_size for share in batch_shares([s.cfg for s in sources], cfg.train.batch_size // dist.world_size)]
        for source in sources:
            if source.cfg.kind == "synthetic" and source.tokens is None and generator is None:
                raise ValueError(f"synthetic source {source.name!r} has no cached tokens and no generator")
        self.modules = {"vlm": TrainableParts(vlm)}
        self.ddp = wrap(self.modules["vlm"], dist, cfg.train.compile, cfg.train.parallel)
        # after wrapping: FSDP replaces the parameters with their shards
        self.optimizers = {"vlm": adamw([p for p in vlm.parameters() if p.requires_grad], cfg.train)}

    def _tokens(self, source: SourceData, indices: np.ndarray, step: int, which: int) -> torch.Tensor:
        if source.cfg.kind == "real":
            return torch.from_numpy(source.tokens[indices])
        if source.tokens is not None:
            # cached variants: cycle through them epoch by epoch
            variants = source.tokens.shape[1]
            epoch = (step * self.shares[which]) // max(len(source.captions), 1)
            tokens = torch.from_numpy(source.tokens[indices, epoch % variants])
        else:
            captions = [source.captions[i] for i in indices.tolist()]
            tokens = self.generator.tokens(captions, seed=self.seed * 1_000_003 + step * 97 + which)
        if self.space == "pixel":
            # render to pixels and encode again, as a pixel-space pipeline would
            with torch.no_grad():
                pixels = self.vlm.vq.decode(tokens.long().to(self.dist.device)).clamp(-1, 1)
                tokens = self.vlm.vq.encode(pixels)
        return tokens

    def batch(self, step: int):
        texts, prompts, token_list = [], [], []
        for which, (source, share) in enumerate(zip(self.sources, self.shares)):
            if share == 0:
                continue
            size = len(source.captions) if not source.cfg.limit else min(source.cfg.limit, len(source.captions))
            global_indices = cycle_indices(size, share, step, self.seed * 31 + which)
            indices = rank_slice(global_indices, self.dist).numpy()
            token_list.append(self._tokens(source, indices, step, which).long())
            texts += [source.captions[i] for i in indices.tolist()]
            prompts += [source.cfg.prompt] * len(indices)
        input_ids, mask, labels = encode_captions(self.vlm.lm, prompts, texts, self.cfg.max_caption_tokens)
        device = self.dist.device
        return input_ids.to(device), mask.to(device), labels.to(device), torch.cat(token_list).to(device)

    def step(self, batch, step: int, ctx: StepContext) -> dict[str, float]:
        input_ids, mask, labels, tokens = batch
        normaliser = token_normaliser(float((labels[:, 1:] != -100).sum()), self.dist)
        with ctx.autocast(), self.vlm.checkpointed_lm(self.cfg.train.checkpoint_activations):
            loss = self.ddp(input_ids, mask, labels, tokens, normaliser)
        return {"loss": loss.item(), "grad_norm": ctx.update(loss, self.optimizers["vlm"])}


def encode_captions(lm, prompts: list[str], captions: list[str], max_tokens: int):
    """[BOS] prompt caption [EOS], right-padded; labels cover the caption and EOS only.
    A row never outgrows the LM's `max_length` (its position table)."""
    rows, label_rows = [], []
    for prompt, caption in zip(prompts, captions):
        head = [lm.bos_id] + (lm.token_ids(prompt) if prompt else [])
        body = lm.token_ids(caption)[: min(max_tokens, lm.max_length - len(head)) - 1] + [lm.eos_id]
        rows.append(head + body)
        label_rows.append([-100] * len(head) + body)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), lm.pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (row, label) in enumerate(zip(rows, label_rows)):
        ids[i, : len(row)] = torch.tensor(row)
        labels[i, : len(row)] = torch.tensor(label)
        mask[i, : len(row)] = True
    return ids, mask, labels



