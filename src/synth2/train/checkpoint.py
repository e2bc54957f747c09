"""Self-describing checkpoints: `checkpoints/step-N/` holds everything needed to resume exactly.

    step-N/
      <module>.safetensors   weights of each trained module
      optim.pt               optimizer states (the LR is a function of the step)
      rng.pt                 torch, numpy and python RNG states
      state.json             step, data position, metrics of the step
      config.yaml            the stage config that produced it

A checkpoint is written into `step-N.tmp/`, fsynced and renamed when complete, so a crash
never leaves a half-written `step-N/` for a resume to trust. Run directories are copied
between machines, so nothing in them may run code when loaded: `optim.pt` and `rng.pt` hold
only tensors, numbers and strings and are read with `weights_only=True` (a planted pickle is
refused), and weights are safetensors. A checkpoint that fails to load is set aside as
`step-N.corrupt` and the one before it is used (`load_latest`).
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from synth2.configtools import dump_yaml


logger = logging.getLogger(__name__)


class CorruptCheckpoint(ValueError):
    """A checkpoint file that cannot be loaded; the message names it."""


def rng_state() -> dict:
    # numpy's state holds an ndarray, which weights_only loading refuses: store it as a tensor
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached], "python": random.getstate()}
    if torch.cuda.is_available():  # dropout and sampling on a GPU draw from its own generators
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(value):
    """random.setstate wants tuples where a round trip may give lists."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def _fsync_tree(directory: Path) -> None:
    for path in directory.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())


def begin(directory: Path, step: int) -> Path:
    """The empty `step-N.tmp/` a checkpoint is written into."""
    tmp = directory / f"step-{step}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def write_state(tmp: Path, step: int, state: dict[str, Any], config: Any = None) -> None:
    (tmp / "state.json").write_text(json.dumps({"step": step, **state}, indent=2, default=float))
    if config is not None:
        dump_yaml(config, tmp / "config.yaml")


def publish(tmp: Path, keep: int) -> Path:
    """fsync `step-N.tmp/`, rename it `step-N/`, and drop all but the newest `keep` checkpoints."""
    _fsync_tree(tmp)
    final = tmp.with_name(tmp.name.removesuffix(".tmp"))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(tmp.parent)[:-keep] if keep > 0 else []:
        shutil.rmtree(old)
    return final


def save(
    directory: Path,
    step: int,
    modules: dict[str, torch.nn.Module],
    optim_state: dict[str, Any],
    state: dict[str, Any],
    config: Any = None,
    keep: int = 2,
) -> Path:
    tmp = begin(directory, step)
    for name, module in modules.items():
        tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
        save_file(untie(tensors), tmp / f"{name}.safetensors")
    torch.save(optim_state, tmp / "optim.pt")
    torch.save(rng_state(), tmp / "rng.pt")
    write_state(tmp, step, state, config)
    return publish(tmp, keep)


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
    found = [p for p in directory.glob("step-*") if p.is_dir() and p.name.split("-")[1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def _read(path: Path, read):
    try:
        return read(path)
    except Exception as error:  # safetensors, pickle and JSON each fail in their own way
        raise CorruptCheckpoint(f"{path}: cannot be loaded ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})") from error


def load(path: Path, modules: dict[str, torch.nn.Module]) -> tuple[dict, dict]:
    """Restore modules and RNG; return (optimizer state, state.json). Everything is read before
    anything is restored, so a corrupt file leaves the modules and RNG as they were."""
    weights = {name: _read(path / f"{name}.safetensors", load_file) for name in modules}
    optim_state = _read(path / "optim.pt", lambda p: torch.load(p, weights_only=True))
    rng = _read(path / "rng.pt", lambda p: torch.load(p, weights_only=True))
    state = _read(path / "state.json", lambda p: json.loads(p.read_text()))
    for name, module in modules.items():
        module.load_state_dict(weights[name])
    set_rng_state(rng)
    return optim_state, state


def load_latest(directory: Path, modules: dict[str, torch.nn.Module]) -> tuple[Path, dict, dict] | None:
    """Load the newest checkpoint that loads: (its path, optimizer state, state.json), or None.
    A checkpoint that fails is named in the log, renamed `step-N.corrupt` and skipped."""
    for path in reversed(list_checkpoints(directory)):
        try:
            return (path, *load(path, modules))
        except CorruptCheckpoint as error:
            aside = path.with_name(path.name + ".corrupt")
            if aside.exists():
                shutil.rmtree(aside)
            os.replace(path, aside)
            logger.warning("%s; set aside as %s, resuming from the checkpoint before it", error, aside.name)
    return None
