"""Trained models as files: each model stage exports `<stage>/model/` (weights + config.yaml).

Loading goes through here so every consumer (generator, VLM, evaluation, CLI) builds
models the same way from a run directory.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from synth2.configtools import dump_yaml, load_yaml
from synth2.models.lm import FrozenLM
from synth2.models.t2i import T2IConfig, T2IModel
from synth2.models.vq import VQConfig, VQModel
from synth2.train.checkpoint import _untie


def save_module(directory: str | Path, module: torch.nn.Module, config, extra: dict | None = None) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    save_file(_untie(tensors), directory / "model.safetensors", metadata={k: str(v) for k, v in (extra or {}).items()})
    dump_yaml(config, directory / "config.yaml")
    return directory


def load_vq(directory: str | Path) -> torch.nn.Module:
    directory = Path(directory)
    if (directory / "model_index.json").exists() or (directory / "config.json").exists():
        from synth2.models.vq_diffusers import DiffusersVQ

        return DiffusersVQ.from_pretrained(directory)
    model = VQModel(load_yaml(VQConfig, directory / "config.yaml"))
    model.load_state_dict(load_file(directory / "model.safetensors"))
    return model.eval()


def load_t2i(directory: str | Path, codebook_size: int, grid: tuple[int, int], text_width: int) -> T2IModel:
    directory = Path(directory)
    model = T2IModel(load_yaml(T2IConfig, directory / "config.yaml"), codebook_size, grid, text_width)
    model.load_state_dict(load_file(directory / "model.safetensors"))
    return model.eval()


def load_lm(directory: str | Path, max_length: int = 64) -> FrozenLM:
    return FrozenLM.from_pretrained(directory, max_length=max_length)
