"""Training the controlled dual encoder (CLIPScore for curation) contrastively on the paired data."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from synth2.data.stream import ImageStream, StreamCursor
from synth2.models.clip import ClipConfig, DualEncoder
from synth2.models.lm import CaptionStates
from synth2.models.vq import to_model_pixels
from synth2.train.distributed import wrap
from synth2.train.loop import StepContext, TrainConfig, adamw, cycle_indices, rank_slice


@dataclass
class ClipStageConfig:
    model: ClipConfig = field(default_factory=ClipConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=400, batch_size=128, lr=2e-3, warmup=20, weight_decay=0.01, checkpoint_every=200))
    # A local Hugging Face CLIP directory to score with instead of the controlled encoder.
    hf_path: str = ""
    # Run the frozen LM over the paired captions once, not at every step (see CaptionStates).
    cache_text: bool = True


class ClipTask:
    def __init__(self, cfg: ClipStageConfig, lm, images: np.ndarray | ImageStream, captions: list[str], dist, seed: int):
        """`images` with their `captions` in memory, or a stream of (images, captions) batches
        (`captions` then unused: each batch's captions run through the LM as it comes)."""
        torch.manual_seed(seed)
        self.cfg, self.lm, self.dist, self.seed = cfg, lm, dist, seed
        self.stream = StreamCursor(images) if isinstance(images, ImageStream) else None
        self.images, self.captions = (None, []) if self.stream else (torch.from_numpy(images), captions)
        lm.to(dist.device)
        self.model = DualEncoder(cfg.model, lm.hidden_size).to(dist.device)
        self.modules = {"clip": self.model}
        self.ddp = wrap(self.model, dist, cfg.train.compile, cfg.train.parallel)
        self.optimizers = {"clip": adamw(self.model.parameters(), cfg.train)}  # after FSDP's sharding
        self.text = CaptionStates(lm, self.captions, cache=cfg.cache_text and self.stream is None)

    def batch(self, step: int):
        if self.stream is not None:
            images, captions = self.stream.batch(step)
            states, mask = self.lm.encode_texts(captions)
        else:
            indices = rank_slice(cycle_indices(len(self.captions), self.cfg.train.batch_size, step, self.seed), self.dist)
            images, (states, mask) = self.images[indices], self.text[indices.tolist()]
        device = self.dist.device
        return to_model_pixels(images).to(device), states.to(device), mask.to(device)

    def step(self, batch, step: int, ctx: StepContext) -> dict[str, float]:
        with ctx.autocast():
            loss = self.ddp(*batch)  # DDP syncs the gradients only through its own forward
        metrics = {"loss": loss.item(), "grad_norm": ctx.update(loss, self.optimizers["clip"])}
        if self.stream is not None:
            metrics["count/skipped_records"] = self.stream.skipped
        return metrics
