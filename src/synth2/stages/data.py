"""Where a run's pairs come from: the embedded world (a stage) or the user's shards."""

from __future__ import annotations

from pathlib import Path

from synth2.data.arrays import load_pairs
from synth2.run import Run, StageResult
from synth2.world.oracle import Oracle
from synth2.world.scene import Scene, WorldSpec
from synth2.world.splits import EVAL_SPLITS, VQ_IMAGES_SPLIT, build_world

# the keys of datasets(run)["eval"]: eval split A (COCO's role) and B (Flickr30k's)
EVAL_SPLIT_NAMES = ("a", "b")


def world(run: Run) -> StageResult:
    cfg = run.config

    def build(directory: Path) -> dict:
        summary = build_world(cfg.world, cfg.seed, directory)
        return {"splits": sorted(summary["splits"])}

    return run.stage("world", {"world": cfg.world, "seed": cfg.seed}, [], build)


def uses_world(run: Run) -> bool:
    return not run.config.data.paired


def datasets(run: Run) -> tuple[dict, list[StageResult]]:
    """Shard locations: {"paired": ..., "vq_images": ..., "text_only": {name: ...}, "eval": {"a": ..., "b": ...}},
    and the stages they came from."""
    cfg = run.config
    if uses_world(run):
        w = world(run)
        root = w.directory
        paired = str(root / "paired")
        return {
            "paired": paired,
            "vq_images": cfg.data.vq_images or (str(root / VQ_IMAGES_SPLIT) if cfg.world.images else paired),
            "text_only": {name: str(root / name) for name in sorted(cfg.world.text_only)},
            "eval": dict(zip(EVAL_SPLIT_NAMES, (str(root / split) for split in EVAL_SPLITS))),
        }, [w]
    if len(cfg.data.eval) < 1:
        raise ValueError("data.eval needs at least one eval set when data.paired is set")
    names = list(cfg.data.eval)
    return {
        "paired": cfg.data.paired,
        "vq_images": cfg.data.vq_images or cfg.data.paired,
        "text_only": dict(cfg.data.text_only),
        "eval": {"a": cfg.data.eval[names[0]], "b": cfg.data.eval[names[min(1, len(names) - 1)]]},
    }, []


def world_spec(run: Run) -> WorldSpec | None:
    return WorldSpec(run.config.world, run.config.seed) if uses_world(run) else None


def eval_images_and_oracle(run: Run, shards: str, limit: int | None = None):
    """(images, scenes or None, oracle or None) of an eval split."""
    cfg = run.config
    pairs = load_pairs(shards, limit=limit or cfg.eval.max_images, resolution=cfg.world.resolution)
    spec = world_spec(run)
    if spec is None:
        return pairs.images, None, None
    return pairs.images, [Scene.from_json(m["scene"]) for m in pairs.meta], Oracle(spec)
