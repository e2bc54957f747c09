"""Pre-training the embedded LM on the world's text, then freezing it.

The stand-in for the paper's pre-trained Chinchilla: a small causal LM that has
read the training captions (paired, text-only corpora, LLM captions), never the
eval references, before the generator and the VLM use it frozen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from synth2.models.attention import eager_attention_in_cpu_half_precision
from synth2.models.lm import EmbeddedLMConfig, FrozenLM
from synth2.train.distributed import DistInfo, wrap
from synth2.train.loop import StepContext, TrainConfig, adamw, cycle_indices, rank_slice


@dataclass
class LMStageConfig:
    # A local Hugging Face causal-LM directory; empty = train the embedded LM.
    path: str = ""
    model: EmbeddedLMConfig = field(default_factory=EmbeddedLMConfig)
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(steps=600, batch_size=64, lr=2e-3, warmup=50, weight_decay=0.01, betas=[0.9, 0.95])
    )
    # Longest text the generator and the VLM see (tokens, BOS included).
    max_text_length: int = 64
    # The frozen LM's weights as later stages load them (bfloat16 / float16 halve its memory on
    # GPUs; the states it hands the generator and the scorers are float32 either way).
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"


class LMTask:
    def __init__(self, cfg: LMStageConfig, lm: FrozenLM, texts: list[str], dist: DistInfo, seed: int):
        self.cfg, self.dist, self.seed = cfg, dist, seed
        self.lm = lm.to(dist.device)
        self.model = lm.model
        eager_attention_in_cpu_half_precision(self.model, cfg.train.precision, dist.device)
        self.model.requires_grad_(True)
        self.texts = texts
        self.modules = {"lm": self.model}
        self.ddp = wrap(self.model, dist, cfg.train.compile, cfg.train.parallel)
        self.optimizers = {"lm": adamw(self.model.parameters(), cfg.train)}  # after FSDP's sharding

    def batch(self, step: int):
        indices = rank_slice(cycle_indices(len(self.texts), self.cfg.train.batch_size, step, self.seed), self.dist)
        ids, mask = self.lm.tokenize([self.texts[i] for i in indices.tolist()], add_eos=True, max_length=self.cfg.model.max_length)
        return ids.to(self.dist.device), mask.to(self.dist.device)

    def step(self, batch, step: int, ctx: StepContext) -> dict[str, float]:
        ids, mask = batch
        self.model.train()
        with ctx.autocast():
            logits = self.ddp(input_ids=ids, attention_mask=mask).logits
            targets = ids[:, 1:].masked_fill(~mask[:, 1:], -100)
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=-100)
        return {"loss": loss.item(), "grad_norm": ctx.update(loss, self.optimizers["lm"])}


@torch.no_grad()
def perplexity(lm: FrozenLM, texts: list[str], batch_size: int = 128) -> float:
    """Token-level perplexity of `texts` under the LM (EOS included)."""
    total, count = 0.0, 0
    for start in range(0, len(texts), batch_size):
        ids, mask = lm.tokenize(texts[start : start + batch_size], add_eos=True)
        logits = lm.model(input_ids=ids, attention_mask=mask).logits
        targets = ids[:, 1:].masked_fill(~mask[:, 1:], -100)
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=-100, reduction="sum")
        total += float(loss)
        count += int(mask[:, 1:].sum())
    return float(torch.exp(torch.tensor(total / max(count, 1))))
