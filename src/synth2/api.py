"""The Python API: one function per CLI command, same names and arguments.

    import synth2
    run = synth2.open_run("runs/quick", preset="quick")
    synth2.world("data/world", preset="quick")
"""

from __future__ import annotations

from pathlib import Path

from synth2 import config as config_mod
from synth2.configtools import apply_overrides
from synth2.run import Run


def open_run(root: str | Path, preset: str | None = None, config_file: str | Path | None = None, overrides=()) -> Run:
    """Open (or create) a run directory with a resolved config; see `synth2.config.resolve`."""
    root = Path(root)
    cfg = config_mod.resolve(preset, config_file, list(overrides), saved=root / "config.yaml")
    return Run(root, cfg)


def world(out: str | Path, preset: str = "quick", seed: int = 0, overrides=()) -> dict:
    """Render the embedded world's splits (shards + world.json) into `out`."""
    from synth2.world.splits import build_world

    cfg = apply_overrides(config_mod.preset(preset), list(overrides))
    return build_world(cfg.world, seed, out)


def ingest(fmt: str, src: str | Path, out: str | Path, **options) -> dict:
    """Real data -> pair shards + ingest_report.json; see `synth2.data.ingest.ingest`."""
    from synth2.data.ingest import ingest as run_ingest

    return run_ingest(fmt, src, out, **options)


def inspect(path: str | Path) -> dict:
    """Statistics of a world or shard directory, plus inspect.png grids."""
    from synth2.data.inspect import inspect_path

    return inspect_path(path)
