"""Checkpoints and export of FSDP-sharded models (`train.parallel: fsdp`; `distributed.wrap` shards).

With FSDP each rank holds a shard of the trained model's parameters,
gradients and optimizer state. Checkpoints are written by every rank through
`torch.distributed.checkpoint` (each its shard, into `step-N/dcp/`), with each rank's RNG
(`rng-R.pt`) and rank 0's `state.json` beside them; `step-N.tmp/` becomes `step-N/` only when
every rank has written, so a resume never trusts a partial one. A resume loads the newest
checkpoint every rank can read, and sets a newer one aside as `step-N.corrupt` once an older one
has loaded. `full_state_dict` gathers the whole model to rank 0 for export and evaluation, which
run on rank 0 alone.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as torch_dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_state_dict, set_state_dict
from torch.distributed.fsdp import FSDPModule

from synth2.train import checkpoint
from synth2.train.distributed import DistInfo, barrier

logger = logging.getLogger("synth2")


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


class _MetadataUnpickler(pickle.Unpickler):
    """DCP writes its `.metadata` with pickle, and its reader loads it with `pickle.load`, which
    would run whatever a planted file names. This one admits only what DCP's metadata holds: DCP's
    own classes, torch sizes, dtypes and layouts, and paths."""

    OTHERS = {("torch", "Size"), ("torch.serialization", "_get_layout"), ("pathlib", "PosixPath"), ("pathlib", "WindowsPath"),
              ("collections", "OrderedDict")}

    def find_class(self, module: str, name: str):
        dcp_class = module.startswith("torch.distributed.checkpoint.") and name.lstrip("_")[:1].isupper()
        dtype = module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)
        if dcp_class or dtype or (module, name) in self.OTHERS:
            found = super().find_class(module, name)
            if not dcp_class or (isinstance(found, type) and found.__module__ == module):
                return found
        raise pickle.UnpicklingError(f"{module}.{name} is not something checkpoint metadata holds")


class SafeFileSystemReader(FileSystemReader):
    """`FileSystemReader` whose metadata is read by `_MetadataUnpickler` (tensors it already reads
    with `torch.load(weights_only=True)`)."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        rank = kwargs.get("rank")
        name = ".metadata" if rank is None else f"__{rank}.metadata"
        with open(Path(self.path) / name, "rb") as stream:
            metadata = _MetadataUnpickler(stream).load()
        if not isinstance(metadata, Metadata):
            raise pickle.UnpicklingError(f"{Path(self.path) / name} holds a {type(metadata).__name__}, not checkpoint metadata")
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


def _everywhere(ok: bool, dist: DistInfo) -> bool:
    """Whether `ok` holds on every rank."""
    if not dist.enabled:
        return ok
    flag = torch.tensor([int(ok)], device=dist.device)
    torch_dist.all_reduce(flag, op=torch_dist.ReduceOp.MIN)
    return bool(flag.item())


def _read_own_files(path: Path, dist: DistInfo) -> tuple[dict, dict, dict]:
    """This rank's RNG, rank 0's extra state and state.json, restoring nothing."""
    rng = torch.load(path / f"rng-{dist.rank}.pt", weights_only=True)
    return rng, torch.load(path / "extra.pt", weights_only=True), json.loads((path / "state.json").read_text())


def _read_shards(path: Path, modules: dict, optimizers: dict) -> dict:
    """The sharded weights and optimizer states, through DCP (a collective: every rank calls it)."""
    payload = {}
    for name, module in modules.items():
        payload[f"model.{name}"], payload[f"optim.{name}"] = get_state_dict(module, optimizers[name])
    dcp.load(payload, storage_reader=SafeFileSystemReader(path / "dcp"))
    return payload


def _attempt(read, dist: DistInfo) -> tuple[Any, str]:
    """`read()` on every rank: (its value, "") where every rank succeeded, else (None, this rank's error)."""
    try:
        value, error = read(), ""
    # any unreadable file, judged by every rank together, never ignored (DCP's own error is a BaseException)
    except (Exception, CheckpointException) as exc:
        value, error = None, f"{type(exc).__name__}: {str(exc)[:300]}"
    if _everywhere(not error, dist):
        return value, ""
    return None, error or "another rank could not read it"


def load_latest(directory: Path, modules: dict, optimizers: dict, dist: DistInfo) -> tuple[Path, dict, dict] | None:
    """Restore modules, optimizers and this rank's RNG from the newest checkpoint every rank can
    load: (its path, the extra state rank 0 saved, state.json), or None when there is none.

    A failed sharded load may have written part of the weights, so a failure is only trusted to
    be the file's once an older checkpoint has loaded into the same modules: the newer ones are
    then set aside as `step-N.corrupt`. When none loads, nothing is set aside and the error is
    raised (a model that no longer matches its checkpoints would fail on every one)."""
    found = checkpoint.list_checkpoints(directory)
    failed: list[tuple[Path, str]] = []
    for path in reversed(found):
        # the ranks agree on the per-rank files before the collective load, so none waits alone in it
        own, error = _attempt(lambda: _read_own_files(path, dist), dist)
        payload, error = _attempt(lambda: _read_shards(path, modules, optimizers), dist) if own else (None, error)
        if payload is None:
            failed.append((path, error))
            continue
        rng, extra, state = own
        for name, module in modules.items():
            set_state_dict(module, optimizers[name], model_state_dict=payload[f"model.{name}"], optim_state_dict=payload[f"optim.{name}"])
        checkpoint.set_rng_state(rng)
        for bad, why in failed:
            if dist.is_main:
                aside = bad.with_name(bad.name + ".corrupt")
                if aside.exists():
                    shutil.rmtree(aside)
                os.replace(bad, aside)
            logger.warning("%s does not load on rank %d (%s); set aside, resuming from %s", bad, dist.rank, why, path.name)
        barrier(dist)
        return path, extra, state
    if failed:
        raise checkpoint.CorruptCheckpoint(f"{directory}: no checkpoint loads ({failed[0][0].name}: {failed[0][1]}); "
                                           "move the checkpoints away to start over")
    return None
