"""Training the MUSE-style generator on the paired split only (the "controlled" generator).

Per example: r ~ U(0, 1), ceil(cos(pi r / 2) * N) tokens masked (about 64% on average),
cross-entropy on the masked positions, and the caption replaced by the empty caption
with probability `p_uncond` for classifier-free guidance. Masks and text dropout come
from a generator seeded by the step, so a resumed run draws exactly the same ones.
With `ema_decay`, the model saved is a moving average of the weights over the last steps; with
`average_from`, the plain mean of the weights after every step from that step on.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel

from synth2.errors import UserError
from synth2.models.lm import CaptionStates, FrozenLM
from synth2.models.t2i import T2IConfig, T2IModel, drop_text, masked_prediction_loss, random_mask
from synth2.train.distributed import DistInfo, token_normaliser, wrap
from synth2.train.loop import StepContext, TrainConfig, adamw, cycle_indices, rank_slice


@dataclass
class T2IStageConfig:
    model: T2IConfig = field(default_factory=T2IConfig)
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(steps=2000, batch_size=64, lr=1e-3, warmup=100, weight_decay=0.01, betas=[0.9, 0.96])
    )
    p_uncond: float = 0.1
    label_smoothing: float = 0.1
    # Run the frozen LM over the paired captions once, not at every step (see CaptionStates).
    cache_text: bool = True
    # Draw training pairs so that every shape class comes up about equally often (needs the
    # scenes of the embedded world). Not the paper's recipe, which samples CCv2 as it is.
    balance_classes: bool = False
    # Sampling weight of a paired scene by how many objects it holds, e.g. {2: 2.0}: two-object
    # scenes drawn twice as often as the rest (a count not named weighs 1; needs the embedded
    # world's scenes). Multiplies `balance_classes`' weights. Not the paper's recipe either
    # (docs/generator/small.md, "Two-object scenes twice as often", "One-object scenes half as often").
    count_weights: dict[int, float] = field(default_factory=dict)
    # Share of training captions drawn with words the paired captions never use inserted, taken
    # from the text-only corpora (train/unseen_words.py); 0 trains on the captions as they are,
    # as the paper does. Each caption has `unseen_word_variants` such versions, of 1 to
    # `unseen_words_max` inserted words each.
    unseen_words_p: float = 0.0
    unseen_words_max: int = 4
    unseen_word_variants: int = 3
    # In those versions, each word or mark that joins a list's items ("and", ",", "+") is also
    # replaced by such words with this probability, so that the generator counts the objects a
    # caption names, not its joins (train/unseen_words.py: CONNECTIVES). Not the paper's recipe.
    unseen_connective_p: float = 0.0
    # In those versions, each join between two named objects is first replaced, with this
    # probability, by a phrase that joins two named objects in a text-only caption ("and", "is
    # below"), drawn by its frequency there, so that a relation counts as a join
    # (train/join_phrases.py; the embedded world's words). Not the paper's recipe.
    join_phrases_p: float = 0.0
    # How many two-object scenes to compose from one-object paired scenes and add to the paired
    # data (train/composed_scenes.py; 0: none): compositions the skewed paired data lacks, two
    # objects of one shape among them. Needs the embedded world's scenes. Not the paper's recipe.
    composed_scenes: int = 0
    # Added to the run's seed for the generator's initialisation, batch order and masks: another
    # training on the same data, so a lever can be judged beside the spread between trainings
    # (scripts/generator_replicates.py).
    seed_offset: int = 0
    # How many tokens a training example masks (models/t2i.py: MASK_SCHEDULES).
    mask_schedule: str = "cosine"
    # Loss weight of background tokens, those equal to their image's most frequent token (1: every
    # token alike, as the paper). Below 1, the few tokens that draw objects weigh more.
    background_weight: float = 1.0
    # Decay of an exponential moving average of the generator's weights, updated after every step
    # (`moving_average`: lower over the first steps); the average is the model the stage saves
    # and every stage draws with (0: the last step's weights, as the paper). Not the paper's
    # recipe (docs/generator/quick-budget.md, "An average of the weights"). The first updates' lower decay,
    # (1 + n) / (10 + n) after n updates, also bounds it: over 12,000 steps a decay above 0.99925
    # gives the same average as 0.99925 (docs/generator/small.md, "The average's horizon on small").
    ema_decay: float = 0.0
    # Instead of `ema_decay`: from this step on, the saved model is the plain mean of the weights
    # after every step (stochastic weight averaging's mean, Izmailov et al., 2018, here over the
    # end of the decaying learning rate), a longer window than the moving average's bound allows
    # (0: off). Not the paper's recipe (docs/generator/small.md, "The average's horizon on small").
    average_from: int = 0
    # "adamw": AdamW over every weight, as the paper. "muon": Muon (torch.optim.Muon) over the
    # hidden matrices (`T2IModel.hidden_matrices`) and AdamW over the embeddings, the head, norms
    # and biases, at the same learning rate and weight decay (Muon's update scaled to AdamW's).
    # Not the paper's recipe (docs/generator/quick-budget.md, "Muon").
    optimizer: Literal["adamw", "muon"] = "adamw"


def background_weights(ids_BN: torch.Tensor, background_weight: float) -> torch.Tensor:
    """(B, N) loss weights: `background_weight` where a token equals its image's most frequent
    token, which in a scene on a plain background is the background, 1 elsewhere."""
    background_B = torch.mode(ids_BN, dim=1).values
    weight = torch.ones(ids_BN.shape, dtype=torch.float32, device=ids_BN.device)
    return weight.masked_fill(ids_BN == background_B[:, None], background_weight)


def moving_average(decay: float):
    """`AveragedModel`'s update for an exponential moving average whose decay grows as
    (1 + n) / (10 + n) over its first n updates, up to `decay` (TensorFlow's
    ExponentialMovingAverage with `num_updates`): a short training's average is then not mostly
    its first weights. torch's `get_ema_multi_avg_fn` keeps one decay from the start."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], updates: torch.Tensor) -> None:
        # computed where the count lives, so that a GPU step does not wait to read it on the host;
        # in float64, so the weight rounds as Python's float does
        n = updates.to(torch.float64)
        weight = (1 - torch.clamp((1 + n) / (10 + n), max=decay)).to(averaged[0].dtype)
        for average, weights in zip(averaged, current):
            average.lerp_(weights, weight)

    return update


def generator_optimizers(model: T2IModel, cfg: T2IStageConfig) -> dict[str, torch.optim.Optimizer]:
    """The optimizers of `cfg.optimizer`, by checkpoint name: AdamW over every weight, or Muon over
    the hidden matrices and AdamW over the rest (build them after FSDP's sharding)."""
    if cfg.optimizer == "adamw":
        return {"t2i": adamw(model.parameters(), cfg.train)}
    if cfg.optimizer != "muon":
        raise ValueError(f"t2i.optimizer must be 'adamw' or 'muon', got {cfg.optimizer!r}")
    hidden = model.hidden_matrices()
    in_muon = {id(p) for p in hidden}
    # match_rms_adamw: Muon's orthogonalised update is scaled to the RMS of AdamW's, so the
    # learning rate and weight decay set for AdamW serve both (Liu et al., 2025)
    muon = torch.optim.Muon(hidden, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay, adjust_lr_fn="match_rms_adamw")
    return {"t2i_muon": muon, "t2i": adamw([p for p in model.parameters() if id(p) not in in_muon], cfg.train)}


def class_balance_weights(classes: list[list[str]]) -> np.ndarray:
    """Relative sampling weight per example: the mean inverse frequency of its objects' classes,
    so each class is drawn about equally often (0 for a scene without objects)."""
    counts = Counter(name for names in classes for name in names)
    return np.array([np.mean([1.0 / counts[n] for n in names]) if names else 0.0 for names in classes])


def object_count_weights(object_counts: list[int], count_weights: dict[int, float]) -> np.ndarray:
    """Relative sampling weight per example: `count_weights` of its number of objects (1 where
    not named)."""
    if any(w < 0 for w in count_weights.values()):
        raise UserError(f"t2i.count_weights must not be negative, got {count_weights}")
    return np.array([count_weights.get(n, 1.0) for n in object_counts], dtype=np.float64)


class T2ITask:
    def __init__(self, cfg: T2IStageConfig, lm: FrozenLM, tokens: np.ndarray, captions: list[str], codebook_size: int, dist: DistInfo, seed: int,
                 weights: np.ndarray | None = None, code_factors: tuple[int, ...] | None = None, variants: list[list[str]] | None = None):
        """`weights`: per-example sampling probabilities (None: epochs over the data in a seeded order);
        `code_factors`: the VQ's product-code parts (T2IModel); `variants`: other versions of every
        caption (lists as long as `captions`), one of which replaces a caption with probability
        `cfg.unseen_words_p`."""
        if not 0 < cfg.background_weight <= 1:
            raise ValueError(f"t2i.background_weight must be in (0, 1], got {cfg.background_weight}")
        if not 0 <= cfg.ema_decay < 1:
            raise ValueError(f"t2i.ema_decay must be in [0, 1), got {cfg.ema_decay}")
        if cfg.ema_decay and cfg.average_from:
            raise ValueError("t2i.ema_decay and t2i.average_from each choose the average saved; set one")
        if not 0 <= cfg.average_from < cfg.train.steps:
            raise ValueError(f"t2i.average_from must be in [0, t2i.train.steps={cfg.train.steps}), got {cfg.average_from}")
        if (cfg.ema_decay or cfg.average_from) and dist.enabled and cfg.train.parallel == "fsdp":
            raise ValueError("t2i.ema_decay and t2i.average_from average whole weights, which t2i.train.parallel=fsdp shards; use ddp")
        if cfg.optimizer == "muon" and dist.enabled and cfg.train.parallel == "fsdp":
            raise ValueError("t2i.optimizer=muon orthogonalises whole matrices, which t2i.train.parallel=fsdp shards; use ddp")
        torch.manual_seed(seed)
        self.cfg, self.lm, self.dist, self.seed = cfg, lm.to(dist.device), dist, seed
        self.weights = None if weights is None else torch.from_numpy(np.asarray(weights, dtype=np.float64))
        self.tokens = torch.from_numpy(tokens.reshape(len(tokens), -1).astype(np.int64))
        self.captions, self.variants = captions, variants or []
        self.model = T2IModel(cfg.model, codebook_size, tokens.shape[1:], lm.hidden_size, code_factors).to(dist.device)
        self.model.checkpoint_blocks = cfg.train.checkpoint_activations
        self.modules = {"t2i": self.model}
        self.ddp = wrap(self.model, dist, cfg.train.compile, cfg.train.parallel)
        self.optimizers = generator_optimizers(self.model, cfg)  # after FSDP's sharding
        self.average = None
        if cfg.ema_decay or cfg.average_from:
            # AveragedModel's default update is the plain mean of the weights it is given
            update = {"multi_avg_fn": moving_average(cfg.ema_decay)} if cfg.ema_decay else {}
            # checkpointed with the model (a module without an optimizer), so a resume continues it
            self.average = AveragedModel(self.model, **update)
            self.modules["t2i_average"] = self.average
        self.empty_states, self.empty_mask = empty_caption(lm, cfg.model.text_layer)
        # rows: the captions, then each variant list in turn
        self.text = CaptionStates(lm, captions + [v for versions in self.variants for v in versions], cache=cfg.cache_text, layer=cfg.model.text_layer)

    def trained_model(self) -> T2IModel:
        """The generator to save: the weights' average with `ema_decay` or `average_from`, else the model."""
        return self.model if self.average is None else self.average.module

    def indices(self, step: int) -> torch.Tensor:
        """The global batch of `step` (a function of the step, so a resume draws the same)."""
        if self.weights is None:
            return cycle_indices(len(self.captions), self.cfg.train.batch_size, step, self.seed)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        return torch.multinomial(self.weights, self.cfg.train.batch_size, replacement=True, generator=generator)

    def text_rows(self, indices: torch.Tensor, step: int) -> torch.Tensor:
        """Which version of each caption `step` reads: with probability `unseen_words_p` one of its
        variants, else the caption itself (a function of the step, so a resume reads the same)."""
        if not self.variants or self.cfg.unseen_words_p <= 0:
            return indices
        generator = torch.Generator().manual_seed(self.seed * 3_000_017 + step)
        replaced = torch.rand(len(indices), generator=generator) < self.cfg.unseen_words_p
        version = torch.randint(1, len(self.variants) + 1, (len(indices),), generator=generator)
        return indices + replaced * version * len(self.captions)

    def batch(self, step: int):
        indices = self.indices(step)
        rows = rank_slice(self.text_rows(indices, step), self.dist)
        indices = rank_slice(indices, self.dist)
        text, mask = self.text[rows.tolist()]
        return self.tokens[indices].to(self.dist.device), text.to(self.dist.device), mask.to(self.dist.device)

    def step(self, batch, step: int, ctx: StepContext) -> dict[str, float]:
        ids, text, mask = batch
        # masks and caption dropout of this step, rank and micro-batch
        generator = torch.Generator(device=ids.device).manual_seed(self.seed * 7_368_787 + step * (self.dist.rank + 1) + ctx.micro * 1_000_003)
        text, mask, dropped = drop_text(text, mask, self.empty_states, self.empty_mask, self.cfg.p_uncond, generator)
        token_mask = random_mask(ids.shape[0], ids.shape[1], generator, ids.device, self.cfg.mask_schedule)
        weight = None if self.cfg.background_weight == 1.0 else background_weights(ids, self.cfg.background_weight)
        masked_weight = token_mask.sum() if weight is None else (weight * token_mask).sum()
        normaliser = token_normaliser(float(masked_weight), self.dist)  # ranks mask different counts
        with ctx.autocast():
            loss, accuracy, share = masked_prediction_loss(self.ddp, ids, text, mask, generator, self.cfg.label_smoothing, token_mask, normaliser, weight)
        grad_norm = ctx.update(loss, *self.optimizers.values())
        if self.average is not None and ctx.micro == self.cfg.train.accumulate - 1 and step >= self.cfg.average_from:  # after the update
            self.average.update_parameters(self.model)
        return {"loss": loss.item(), "masked_acc": accuracy.item(), "masked_share": share.item(), "grad_norm": grad_norm}


def empty_caption(lm: FrozenLM, layer: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """The empty caption's text states (L, C) and mask (L,): the unconditional input."""
    states, mask = lm.encode_texts([""], layer)
    return states[0], mask[0]
