"""The stage graph: each function runs its inputs' stages, then its own (skipped when unchanged).

    world -> captions -> lm -> vq -> encode -> t2i -> synthesize -> vlm/<arm> -> eval -> report

Stages are plain functions from a config section and earlier artifacts to new
artifacts; `Run.stage` handles fingerprints, skipping and the manifest.
"""

from __future__ import annotations

from synth2.run import Run, StageResult
from synth2.world.splits import build_world


def world(run: Run) -> StageResult:
    cfg = run.config

    def build(directory):
        summary = build_world(cfg.world, cfg.seed, directory)
        return {"path": str(directory), "splits": sorted(summary["splits"])}

    return run.stage("world", {"world": cfg.world, "seed": cfg.seed}, [], build)
