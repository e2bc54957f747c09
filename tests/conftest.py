import os

import pytest

os.environ.setdefault("SYNTH2_PROGRESS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CAPTIONS = [
    "a small red circle above a large blue square",
    "there is a green star on the left",
    "two shapes, a yellow heart and a purple ring",
    "a big orange triangle by itself on a grey background",
    "a pink cross to the right of a cyan diamond",
    "three shapes, a red bar, a blue moon and a green block",
] * 4


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """The tiny preset's world, built once per test session."""
    from synth2.config import tiny
    from synth2.world.splits import build_world

    cfg = tiny()
    out = tmp_path_factory.mktemp("world")
    summary = build_world(cfg.world, cfg.seed, out)
    return out, summary, cfg


@pytest.fixture(scope="session")
def tokenizer():
    from synth2.models.lm import train_tokenizer

    return train_tokenizer(CAPTIONS, 300)


def _save_lm(tmp_path_factory, architecture, tokenizer):
    import torch

    from synth2.models.lm import EmbeddedLMConfig, build_embedded_lm

    torch.manual_seed(0)
    model = build_embedded_lm(EmbeddedLMConfig(architecture=architecture, hidden=32, layers=2, heads=2, intermediate=64, max_length=64), tokenizer)
    path = tmp_path_factory.mktemp(architecture)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, tokenizer):
    """A tiny Llama saved to a local directory, loaded back like any real model."""
    return _save_lm(tmp_path_factory, "llama", tokenizer)


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory, tokenizer):
    return _save_lm(tmp_path_factory, "gpt2", tokenizer)
