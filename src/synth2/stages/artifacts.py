"""Trained models as files, and the run's models loaded from them.

Each model stage exports `<stage>/model/`: `model.safetensors`, the model's `config.yaml`,
and `args.json` with what its constructor takes from the other models (codebook size,
token grid, text width), so a model directory loads alone. Every consumer (generator,
VLM, evaluation, CLI) loads models through here, so they are built the same way.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import torch
from safetensors.torch import load_file, save_file

from synth2.configtools import dump_yaml, load_yaml
from synth2.models.lm import FrozenLM
from synth2.models.t2i import T2IConfig, T2IModel
from synth2.models.vlm import VLM, TrainableParts, VLMConfig
from synth2.models.vq import VQConfig, VQModel
from synth2.models.vq_diffusers import DiffusersVQ
from synth2.synthesis import TokenGenerator
from synth2.train.checkpoint import untie


def save_module(directory: str | Path, module: torch.nn.Module, config, state: dict | None = None, **args) -> Path:
    """Weights (`state`, else `module`'s own), config and constructor arguments of `module` in `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in (module.state_dict() if state is None else state).items()}
    save_file(untie(tensors), directory / "model.safetensors")
    dump_yaml(config, directory / "config.yaml")
    (directory / "args.json").write_text(json.dumps(args, indent=2) + "\n")
    return directory


def _args(directory: Path) -> dict:
    return json.loads((directory / "args.json").read_text())


def load_vq(directory: str | Path) -> torch.nn.Module:
    """synth2's VQ, or a diffusers VQModel directory (or a pipeline's, with the VQ in `vqvae/`)."""
    directory = Path(directory)
    if any((directory / name).exists() for name in ("model_index.json", "config.json", "vqvae/config.json")):
        return DiffusersVQ.from_pretrained(directory)
    model = VQModel(load_yaml(VQConfig, directory / "config.yaml"))
    model.load_state_dict(load_file(directory / "model.safetensors"))
    return model.eval()


def load_t2i(directory: str | Path) -> T2IModel:
    directory = Path(directory)
    args = _args(directory)
    model = T2IModel(load_yaml(T2IConfig, directory / "config.yaml"), args["codebook_size"], tuple(args["grid"]), args["text_width"],
                     args.get("code_factors"))
    model.load_state_dict(load_file(directory / "model.safetensors"))
    return model.eval()


def load_vlm(directory: str | Path, lm: FrozenLM, vq: torch.nn.Module) -> VLM:
    """A trained VLM's own parts from `directory`, around the frozen `lm` and `vq` it was trained with."""
    directory = Path(directory)
    args = _args(directory)
    if (args["lm_width"], args["media_width"]) != (lm.hidden_size, vq.embed_dim):
        raise ValueError(f"{directory}: trained for an LM of width {args['lm_width']} and a VQ of width {args['media_width']}, "
                         f"given {lm.hidden_size} and {vq.embed_dim}")
    model = VLM(load_yaml(VLMConfig, directory / "config.yaml"), lm, vq, tuple(args["grid"]))
    TrainableParts(model).load_state_dict(load_file(directory / "model.safetensors"))
    return model.eval()


@lru_cache(maxsize=4)
def load_lm(path: str, max_length: int, dtype: str = "float32") -> FrozenLM:
    """A frozen LM, loaded once per process: every arm, generator and scorer of a run shares it."""
    return FrozenLM.from_pretrained(path, max_length=max_length, dtype=getattr(torch, dtype))


def token_generator(lm: FrozenLM, t2i_dir: str | Path, vq_dir: str | Path, sampler, device: torch.device | str = "cpu") -> TokenGenerator:
    """The trained generator with `sampler`, and the VQ for pixels, on `device` (the LM with them)."""
    return TokenGenerator(lm.to(device), load_t2i(Path(t2i_dir)).to(device), sampler, load_vq(vq_dir).to(device))


@contextmanager
def attached(vlm: VLM) -> Iterator[VLM]:
    """Use `vlm`, then take its cross-attention off the frozen LM it shares with other arms."""
    try:
        yield vlm
    finally:
        vlm.detach()
