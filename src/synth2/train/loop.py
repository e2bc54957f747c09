"""The one training loop every model shares.

A `Task` knows its model: which modules train, their optimizers, how to make the
batch of a given step, and what one step does. The loop does the rest: seeding,
warmup + cosine LR, bf16 autocast, gradient clipping, DDP through torchrun,
progress with ETA, `metrics.jsonl`, NaN checks, periodic evaluation, and
checkpoints with exact resume (modules, optimizers, step, RNG). The learning rate and
the data position need no state: both are functions of the step.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Protocol

import torch

from synth2.progress import MetricsWriter, progress_bar
from synth2.train import checkpoint, sharded
from synth2.train.distributed import DistInfo, barrier, gradient_sync_paused, mean_across_ranks

logger = logging.getLogger("synth2")


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 32  # global: per-device micro-batch x accumulate x world size
    # Micro-batches per optimizer step on each rank: their gradients add up before the update, so
    # a large batch fits a small device (each micro-batch's loss counts 1/accumulate).
    accumulate: int = 1
    lr: float = 3e-4
    warmup: int = 100
    schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    grad_clip: float = 1.0
    # bf16: autocast; fp16: autocast with a dynamic loss scale (torch.amp.GradScaler, checkpointed)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    compile: bool = False  # torch.compile the trained model's forward (first steps pay for compiling)
    # recompute activations in backward instead of keeping them: the generator's blocks, the
    # frozen LM's layers under the VLM (less memory, about a third more compute)
    checkpoint_activations: bool = False
    # under torchrun: ddp (every rank a whole copy) or fsdp (parameters, gradients and optimizer
    # state sharded over the ranks, checkpoints through torch.distributed.checkpoint)
    parallel: Literal["ddp", "fsdp"] = "ddp"
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 25
    eval_every: int = 0  # 0: evaluate only at the end (if the task evaluates)

    def lr_factor(self, step: int) -> float:
        if self.warmup and step < self.warmup:
            return (step + 1) / self.warmup
        if self.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup) / max(1, self.steps - self.warmup))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class Task(Protocol):
    # the modules every checkpoint holds: the trained ones, wrapped by the task (`distributed.wrap`),
    # and any the task keeps beside them (the generator's moving average of its weights); the loop
    # finds the DDP wrappers among the task's attributes to pause their gradient sync between
    # micro-batches
    modules: dict[str, torch.nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]

    def batch(self, step: int) -> Any: ...

    def step(self, batch: Any, step: int, ctx: "StepContext") -> dict[str, float]: ...


class StepContext:
    """What a task's step may use from the loop: autocast and the backward/clip/update sequence,
    and `micro`, the micro-batch of the step being run (0 without accumulation)."""

    def __init__(self, cfg: TrainConfig, dist: DistInfo):
        self.cfg = cfg
        self.dist = dist
        self.micro = 0
        # fp16 gradients underflow without a loss scale; disabled, the scaler passes everything through
        self.scaler = torch.amp.GradScaler(dist.device.type, enabled=cfg.precision == "fp16")

    def autocast(self):
        if self.cfg.precision in ("bf16", "fp16"):
            return torch.autocast(self.dist.device.type, dtype=torch.bfloat16 if self.cfg.precision == "bf16" else torch.float16)
        return contextlib.nullcontext()

    def update(self, loss: torch.Tensor, *optimizers: torch.optim.Optimizer) -> float:
        """backward, clip, step, zero_grad; returns the gradient norm before clipping (with fp16,
        a step whose gradients overflowed is skipped and the loss scale lowered). Before the last
        micro-batch of a step, only backward (the gradients accumulate) and 0.0. Several
        optimizers share one model's parameters between them (the generator's AdamW and Muon):
        their gradients are clipped together, as one model's."""
        accumulate = self.cfg.accumulate
        self.scaler.scale(loss / accumulate if accumulate > 1 else loss).backward()
        if self.micro < accumulate - 1:
            return 0.0
        for optimizer in optimizers:
            self.scaler.unscale_(optimizer)
        params = [p for optimizer in optimizers for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if self.cfg.grad_clip > 0:
            norm = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip))
        else:
            norm = float(torch.norm(torch.stack([p.grad.norm() for p in params]))) if params else 0.0
        for optimizer in optimizers:
            self.scaler.step(optimizer)
            optimizer.zero_grad(set_to_none=True)
        return norm

    def end_step(self) -> None:
        """After every optimizer of a step has stepped: adjust the fp16 loss scale once."""
        self.scaler.update()


def adamw(params, cfg: TrainConfig, lr: float | None = None) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (norms, biases and embeddings of size-1 rank are exempt)."""
    params = [p for p in params if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr or cfg.lr, betas=tuple(cfg.betas))


@dataclass
class TrainResult:
    step: int
    checkpoint: Path | None
    last_metrics: dict[str, float]
    eval_metrics: dict[str, float]
    seconds: float  # training only (evaluation and checkpoint writing excluded), over `timed_steps`
    # the steps `seconds` covers: every step, those before a resume included (checkpoints save the
    # training time), or those after the last checkpoint that had no saved time
    timed_steps: int

    @property
    def steps_per_s(self) -> float:
        return self.timed_steps / max(self.seconds, 1e-9)


def train(
    task: Task,
    cfg: TrainConfig,
    directory: Path,
    dist: DistInfo,
    description: str,
    evaluate: Callable[[int], dict[str, float]] | None = None,
    config_to_save: Any = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Run `task` for cfg.steps steps in `directory`, resuming from its last checkpoint.

    `stop_after` ends the run early at that step (after checkpointing), which is how
    tests interrupt a run deterministically.
    """
    directory = Path(directory)
    ckpt_dir = directory / "checkpoints"
    metrics = MetricsWriter(directory / "metrics.jsonl")
    # The learning rate is a pure function of the step (warmup + cosine), so resuming needs only the step.
    for opt in task.optimizers.values():
        for group in opt.param_groups:
            group.setdefault("initial_lr", group["lr"])
    start = 0
    resume_from = None
    trained_seconds, timed_from = 0.0, 0  # training time is saved with each checkpoint, so a resume keeps counting it
    fsdp = sharded.is_sharded(task.modules)
    if fsdp and evaluate is not None:  # rank 0 alone cannot run a sharded model
        raise ValueError(f"{description}: evaluation during training is not available with train.parallel=fsdp")
    loaded = sharded.load_latest(ckpt_dir, task.modules, task.optimizers, dist) if fsdp else checkpoint.load_latest(ckpt_dir, task.modules)
    if loaded is not None:
        resume_from, optim_state, state = loaded
        if not fsdp:  # the sharded load restored them
            for name, opt in task.optimizers.items():
                opt.load_state_dict(optim_state["optimizers"][name])
        scaler_state = optim_state.get("scaler")
        start = state["step"]
        # a checkpoint without a saved time restarts the timing at its step
        trained_seconds, timed_from = (state["train_seconds"], state["timed_from"]) if "train_seconds" in state else (0.0, start)
        logger.info("%s: resumed from %s", description, resume_from)
    metrics.truncate_after(start)  # rows of steps no checkpoint kept are written again
    ctx = StepContext(cfg, dist)
    if loaded is not None and scaler_state:
        ctx.scaler.load_state_dict(scaler_state)
    last: dict[str, float] = {}
    eval_metrics: dict[str, float] = {}
    window_start, window_steps = time.time(), 0
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)

    def save(step: int) -> Path | None:
        if fsdp:  # every rank writes its shard
            path = sharded.save(ckpt_dir, step, task.modules, task.optimizers, {"scaler": ctx.scaler.state_dict()}, saved_state(), dist,
                                config_to_save, cfg.keep_checkpoints)
            return path if dist.is_main else None
        if not dist.is_main:
            return None
        optim_state = {"optimizers": {n: o.state_dict() for n, o in task.optimizers.items()}, "scaler": ctx.scaler.state_dict()}
        return checkpoint.save(ckpt_dir, step, task.modules, optim_state, saved_state(), config_to_save, cfg.keep_checkpoints)

    def saved_state() -> dict:
        return {"metrics": last, "train_seconds": trained_seconds, "timed_from": timed_from}

    saved: Path | None = resume_from
    for module in task.modules.values():
        module.train()
    with progress_bar(description, cfg.steps, completed=start) as bar:
        for step in range(start, end):
            step_began = time.time()
            for opt in task.optimizers.values():
                for group in opt.param_groups:
                    group["lr"] = group["initial_lr"] * cfg.lr_factor(step)
            last = _accumulated_step(task, task.batch(step), step, ctx)
            ctx.end_step()
            for name, value in last.items():
                if not math.isfinite(value):
                    raise FloatingPointError(f"{description}: {name} = {value} at step {step} ({directory})")
            window_steps += 1
            done = step + 1
            if done % cfg.log_every == 0 or done == end:
                elapsed = time.time() - window_start
                # metrics are means over ranks; "count/..." metrics (skipped records) are totals
                logged = {k: mean_across_ranks(v, dist) * (dist.world_size if k.startswith("count/") else 1) for k, v in last.items()}
                logged["lr"] = next(iter(task.optimizers.values())).param_groups[0]["lr"]
                logged["steps_per_s"] = window_steps / max(elapsed, 1e-9)
                metrics.write(done, **logged)
                window_start, window_steps = time.time(), 0
            paused = time.time()
            trained_seconds += paused - step_began
            if evaluate is not None and cfg.eval_every and done % cfg.eval_every == 0 and done < cfg.steps:
                eval_metrics = _evaluate(evaluate, done, task, metrics, dist)
            if done % cfg.checkpoint_every == 0 or done == end:
                saved = save(done) or saved
            # evaluation and checkpoints do not count against steps/s
            window_start += time.time() - paused
            bar.advance(1, **{k: v for k, v in list(last.items())[:3]})
    if evaluate is not None and end == cfg.steps:
        eval_metrics = _evaluate(evaluate, end, task, metrics, dist)
    return TrainResult(end, saved, last, eval_metrics, trained_seconds, end - timed_from)


def _accumulated_step(task: Task, batch: Any, step: int, ctx: StepContext) -> dict[str, float]:
    """`task.step` on each of the step's micro-batches (the batch's tensors split along their first
    dimension); metrics are the micro-batches' mean, the gradient norm the update's."""
    parts = ctx.cfg.accumulate
    if parts == 1:
        ctx.micro = 0
        return task.step(batch, step, ctx)
    totals: dict[str, float] = {}
    wrapped = [*task.modules.values(), *(v for v in vars(task).values() if isinstance(v, torch.nn.Module))]
    for ctx.micro, micro_batch in enumerate(split_batch(batch, parts)):
        last = ctx.micro == parts - 1
        with contextlib.nullcontext() if last else gradient_sync_paused(wrapped):
            metrics = task.step(micro_batch, step, ctx)
        for key, value in metrics.items():
            totals[key] = totals.get(key, 0.0) + value / parts
    totals["grad_norm"] = metrics.get("grad_norm", 0.0)
    ctx.micro = 0
    return totals


def split_batch(batch: Any, parts: int) -> list[Any]:
    """A batch (a tensor, or a tuple or list of them, batch dimension first) in `parts` equal pieces."""
    if isinstance(batch, torch.Tensor):
        if len(batch) % parts:
            raise ValueError(f"a batch of {len(batch)} does not split into {parts} micro-batches (train.accumulate)")
        return list(batch.chunk(parts))
    pieces = [split_batch(item, parts) for item in batch]
    return [type(batch)(piece[i] for piece in pieces) for i in range(parts)]


def _evaluate(evaluate, step: int, task: Task, metrics: MetricsWriter, dist: DistInfo) -> dict[str, float]:
    """Rank 0 evaluates (the other ranks wait for it, and get {})."""
    for module in task.modules.values():
        module.eval()
    result = {}
    if dist.is_main:
        with torch.no_grad():
            result = evaluate(step)
        metrics.write(step, **{f"eval/{k}": v for k, v in result.items()})
    barrier(dist)
    for module in task.modules.values():
        module.train()
    return result


def cycle_indices(num_items: int, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """Indices of the batch at `step`: epoch-wise seeded permutations, so a resume needs only the step."""
    if num_items == 0:
        raise ValueError("cannot draw batches from an empty dataset")
    start = step * batch_size
    out = []
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), num_items)
        perm = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        take = min(batch_size - len(out), num_items - offset)
        out.extend(perm[offset : offset + take].tolist())
    return torch.tensor(out, dtype=torch.long)


def rank_slice(indices: torch.Tensor, dist: DistInfo) -> torch.Tensor:
    """This rank's share of a global batch (equal shares; the global batch must divide)."""
    if not dist.enabled:
        return indices
    if len(indices) % dist.world_size:
        raise ValueError(f"global batch {len(indices)} does not divide over {dist.world_size} ranks")
    return indices[dist.rank :: dist.world_size]
