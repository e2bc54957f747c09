"""torch.distributed for torchrun: process group from the environment, DDP wrapping, reductions.

Launch with torchrun (never a home-made launcher):

    torchrun --nproc_per_node 2 -m synth2.cli train vlm --run runs/x

CPU processes use gloo, GPU processes NCCL with one device per local rank.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def local_rank() -> int:
    """This process's GPU index under torchrun (0 alone)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """`auto`: this process's GPU when CUDA is present, else the CPU; `cuda`: this process's GPU
    (its local rank); anything else as torch reads it (`cpu`, `cuda:1`, `mps`, `meta`)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device("cuda", local_rank) if device == "cuda" else torch.device(device)


def init(device: str = "auto") -> DistInfo:
    """Join the process group torchrun describes (a no-op for a single process), and set up the
    device every model of the calling stage goes to."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    rank_on_host = local_rank()
    dev = resolve_device(device, rank_on_host)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        # TF32 matmuls and convolutions: what the field trains with on Ampere and later
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    elif dev.type == "cpu":
        # Weights trained for a while pick up denormal floats, which x86 CPUs process many
        # times slower (the quick CLIP's steps/s fell from 5 to 2 over 600 steps); flush them to zero.
        torch.set_flush_denormal(True)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank, world_size, rank_on_host, dev)


def wrap(module: torch.nn.Module, info: DistInfo, compile: bool = False, parallel: str = "ddp") -> torch.nn.Module:
    """What a task's forward calls: `module` under torchrun in DDP, or sharded in place with FSDP2's
    `fully_shard` (build its optimizer after this: sharding replaces its parameters); compiled
    with `compile` (after DDP: torch.compile splits the graph at DDP's gradient buckets)."""
    if info.enabled and parallel == "fsdp":
        fully_shard(module)
    elif info.enabled:
        module = DistributedDataParallel(module, device_ids=[info.local_rank] if info.device.type == "cuda" else None)
    elif parallel not in ("ddp", "fsdp"):
        raise ValueError(f"train.parallel must be ddp or fsdp, not {parallel!r}")
    return torch.compile(module) if compile else module


@contextlib.contextmanager
def gradient_sync_paused(modules: Iterable[torch.nn.Module]) -> Iterator[None]:
    """For the micro-batches before a step's last: backward without reducing gradients across
    ranks (DDP's `no_sync`, FSDP2's `set_requires_gradient_sync(False)`), so the last micro-batch's
    backward reduces the accumulated gradients once per step, not once per micro-batch."""
    sharded = []
    with contextlib.ExitStack() as stack:
        for module in modules:
            module = getattr(module, "_orig_mod", module)  # under torch.compile
            if isinstance(module, DistributedDataParallel):
                stack.enter_context(module.no_sync())
            elif isinstance(module, FSDPModule):
                module.set_requires_gradient_sync(False)
                sharded.append(module)
        try:
            yield
        finally:
            for module in sharded:
                module.set_requires_gradient_sync(True)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def mean_across_ranks(value: float, info: DistInfo) -> float:
    if not info.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=info.device)
    dist.all_reduce(tensor)
    return float(tensor.item() / info.world_size)


def token_normaliser(local_tokens: float, info: DistInfo) -> float | None:
    """For a loss summed over this rank's tokens: the divisor that makes DDP's gradient average
    equal the single-process gradient of the mean over all ranks' tokens (the global token count
    over the world size). None without DDP, where the per-batch mean is already exact."""
    if not info.enabled:
        return None
    tensor = torch.tensor([local_tokens], dtype=torch.float64, device=info.device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / info.world_size
