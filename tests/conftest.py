import os

import pytest

os.environ.setdefault("SYNTH2_PROGRESS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """The tiny preset's world, built once per test session."""
    from synth2.config import tiny
    from synth2.world.splits import build_world

    cfg = tiny()
    out = tmp_path_factory.mktemp("world")
    summary = build_world(cfg.world, cfg.seed, out)
    return out, summary, cfg
