"""The one typed config of a synth2 run, and its named presets.

Presets are small functions over `Config`:
- `tiny`: the tests; every stage runs in seconds.
- `quick`: the main job; `synth2 reproduce --preset quick` in <= 15 min on a 2-core CPU.
- `small`: an hour-scale CPU run, 3 seeds, for the paper's claims on the embedded world.
- `paper`: the paper's hyperparameters (256 px, 16x16 tokens, codebook 8192, ...), for GPUs.

A YAML file or `--set a.b=c` overrides any field; unknown keys are errors that name the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from synth2.configtools import apply_overrides, from_dict, load_yaml
from synth2.world.scene import WorldConfig


@dataclass
class DataConfig:
    """Where pairs come from. Empty = the run's own embedded world."""

    # WebDataset shards (directory, glob or brace pattern) of real paired data.
    paired: str = ""
    # name -> shards (with images, for Gold) of text-only corpora.
    text_only: dict[str, str] = field(default_factory=dict)
    # name -> shards whose json metadata holds "references"; the first two are eval "a" and "b".
    eval: dict[str, str] = field(default_factory=dict)
    # Stop a stage when more than this share of its records are bad.
    max_bad_fraction: float = 0.2


@dataclass
class Config:
    preset: str = "quick"
    seed: int = 0
    world: WorldConfig = field(default_factory=WorldConfig)
    data: DataConfig = field(default_factory=DataConfig)


# --- presets --------------------------------------------------------------------


def quick() -> Config:
    return Config(preset="quick")


def tiny() -> Config:
    cfg = Config(preset="tiny")
    cfg.world.paired = 400
    cfg.world.eval = 40
    for corpus in cfg.world.text_only.values():
        corpus.size = 200
    return cfg


def small() -> Config:
    cfg = Config(preset="small")
    cfg.world.paired = 12000
    cfg.world.eval = 500
    for corpus in cfg.world.text_only.values():
        corpus.size = 6000
    return cfg


def paper() -> Config:
    cfg = Config(preset="paper")
    cfg.world.resolution = 256
    cfg.world.sizes = ["small", "medium", "large"]
    cfg.world.paired = 200_000
    cfg.world.eval = 5000
    for corpus in cfg.world.text_only.values():
        corpus.size = 200_000
    return cfg


PRESETS: dict[str, Callable[[], Config]] = {"tiny": tiny, "quick": quick, "small": small, "paper": paper}


def preset(name: str) -> Config:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()


def resolve(
    preset_name: str | None = None,
    config_file: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    saved: str | Path | None = None,
) -> Config:
    """Preset, else a config file, else a run's saved config.yaml, else `quick`; then overrides."""
    if preset_name:
        cfg = preset(preset_name)
    elif config_file:
        cfg = load_yaml(Config, config_file)
    elif saved and Path(saved).exists():
        cfg = load_yaml(Config, saved)
    else:
        cfg = quick()
    return apply_overrides(cfg, list(overrides))


def from_mapping(data: dict) -> Config:
    return from_dict(Config, data)
