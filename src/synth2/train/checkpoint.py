"""Self-describing checkpoints: `checkpoints/step-N/` holds everything needed to resume exactly.

    step-N/
      <module>.safetensors   weights of each trained module
      optim.pt               optimizer states (the LR is a function of the step)
      rng.pt                 torch, numpy and python RNG states
      state.json             step, data position, metrics of the step
      config.yaml            the stage config that produced it

A checkpoint is written into `step-N.tmp/` and renamed when complete, so a crash
never leaves a half-written `step-N/` for a resume to trust.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from synth2.configtools import dump_yaml


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save(
    directory: Path,
    step: int,
    modules: dict[str, torch.nn.Module],
    optim_state: dict[str, Any],
    state: dict[str, Any],
    config: Any = None,
    keep: int = 2,
) -> Path:
    final = directory / f"step-{step}"
    tmp = directory / f"step-{step}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for name, module in modules.items():
        tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
        save_file(untie(tensors), tmp / f"{name}.safetensors")
    torch.save(optim_state, tmp / "optim.pt")
    torch.save(_rng_state(), tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step, **state}, indent=2, default=float))
    if config is not None:
        dump_yaml(config, tmp / "config.yaml")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(directory)[:-keep] if keep > 0 else []:
        shutil.rmtree(old)
    return final


def untie(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors sharing storage (tied embeddings); store copies."""
    seen: set[int] = set()
    out = {}
    for key, value in tensors.items():
        ptr = value.untyped_storage().data_ptr()
        out[key] = value.clone() if ptr in seen else value
        seen.add(ptr)
    return out


def list_checkpoints(directory: Path) -> list[Path]:
    if not directory.exists():
        return []
    found = [p for p in directory.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp")]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def latest(directory: Path) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1] if found else None


def load_modules(path: Path, modules: dict[str, torch.nn.Module], strict: bool = True) -> None:
    for name, module in modules.items():
        module.load_state_dict(load_file(path / f"{name}.safetensors"), strict=strict)


def load(path: Path, modules: dict[str, torch.nn.Module]) -> tuple[dict, dict]:
    """Restore modules and RNG; return (optimizer state, state.json)."""
    load_modules(path, modules)
    optim_state = torch.load(path / "optim.pt", weights_only=False)
    _set_rng_state(torch.load(path / "rng.pt", weights_only=False))
    state = json.loads((path / "state.json").read_text())
    return optim_state, state
