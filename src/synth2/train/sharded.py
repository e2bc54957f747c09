"""Checkpoints and export of FSDP-sharded models (`train.parallel: fsdp`; `distributed.wrap` shards).

With FSDP each rank holds a shard of the trained model's parameters,
gradients and optimizer state. Checkpoints are written by every rank through
`torch.distributed.checkpoint` (each its shard, into `step-N/dcp/`), with each rank's RNG
(`rng-R.pt`) and rank 0's `state.json` beside them; `step-N.tmp/` becomes `step-N/` only when
every rank has written, so a resume never trusts a partial one. `full_state_dict` gathers the
whole model to rank 0 for export and evaluation, which run on rank 0 alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_state_dict, set_state_dict
from torch.distributed.fsdp import FSDPModule

from synth2.train import checkpoint
from synth2.train.distributed import DistInfo, barrier


def is_sharded(modules: dict[str, torch.nn.Module]) -> bool:
    return any(isinstance(m, FSDPModule) for m in modules.values())


def full_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights on rank 0's CPU ({} on the other ranks); every rank must call it."""
    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def save(directory: Path, step: int, modules: dict, optimizers: dict, extra: dict[str, Any], state: dict[str, Any], dist: DistInfo,
         config: Any = None, keep: int = 2) -> Path:
    """Every rank writes its shards; rank 0 publishes `step-N/` once all have."""
    tmp = directory / f"step-{step}.tmp"
    if dist.is_main:
        checkpoint.begin(directory, step)
    barrier(dist)
    payload = {}
    for name, module in modules.items():
        model_state, optim_state = get_state_dict(module, optimizers[name])
        payload[f"model.{name}"], payload[f"optim.{name}"] = model_state, optim_state
    dcp.save(payload, checkpoint_id=str(tmp / "dcp"))
    torch.save(checkpoint.rng_state(), tmp / f"rng-{dist.rank}.pt")
    if dist.is_main:
        torch.save(extra, tmp / "extra.pt")
        checkpoint.write_state(tmp, step, state, config)
    barrier(dist)  # every shard is written
    if dist.is_main:
        checkpoint.publish(tmp, keep)
    barrier(dist)
    return directory / f"step-{step}"


def load_latest(directory: Path, modules: dict, optimizers: dict, dist: DistInfo) -> tuple[Path, dict, dict] | None:
    """Restore modules, optimizers and this rank's RNG from the newest checkpoint: (its path, the
    extra state rank 0 saved, state.json), or None when there is none."""
    found = checkpoint.list_checkpoints(directory)
    if not found:
        return None
    path = found[-1]
    payload, templates = {}, {}
    for name, module in modules.items():
        templates[name] = get_state_dict(module, optimizers[name])
        payload[f"model.{name}"], payload[f"optim.{name}"] = templates[name]
    dcp.load(payload, checkpoint_id=str(path / "dcp"))
    for name, module in modules.items():
        set_state_dict(module, optimizers[name], model_state_dict=payload[f"model.{name}"], optim_state_dict=payload[f"optim.{name}"])
    checkpoint.set_rng_state(torch.load(path / f"rng-{dist.rank}.pt", weights_only=True))
    extra = torch.load(path / "extra.pt", weights_only=True)
    return path, extra, json.loads((path / "state.json").read_text())
