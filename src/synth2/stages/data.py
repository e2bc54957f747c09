"""Where a run's pairs come from: the embedded world (a stage) or the user's shards."""

from __future__ import annotations

from pathlib import Path

import torch

from synth2.config import on_own_images, world_colour_codebooks
from synth2.data.arrays import load_pairs
from synth2.data.shards import shard_urls
from synth2.data.stream import ImageStream
from synth2.errors import UserError
from synth2.run import Run, StageResult
from synth2.world.oracle import Oracle
from synth2.world.scene import Scene, WorldSpec
from synth2.world.splits import EVAL_SPLITS, LM_TEXT, VQ_IMAGES_SPLIT, build_world

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
    """Shard locations: {"paired": ..., "vq_images": ..., "text_only": {name: ...}, "eval": {"a": ..., "b": ...},
    "lm_text": captions file or None}, and the stages they came from."""
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
            "lm_text": str(root / LM_TEXT / "captions.jsonl") if cfg.world.lm_text else None,
        }, [w]
    if len(cfg.data.eval) < 1:
        raise ValueError("data.eval needs at least one eval set when data.paired is set")
    names = list(cfg.data.eval)
    return {
        "paired": cfg.data.paired,
        "vq_images": cfg.data.vq_images or cfg.data.paired,
        "text_only": dict(cfg.data.text_only),
        "eval": {"a": cfg.data.eval[names[0]], "b": cfg.data.eval[names[min(1, len(names) - 1)]]},
        "lm_text": None,
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


def image_stream(run: Run, shards, batch_size: int, dist, captions: bool = False) -> ImageStream:
    """A training stage's images streamed from `shards` (`data.stream`), this rank's share of
    each global batch of `batch_size`."""
    cfg = run.config
    return ImageStream(str(shards), batch_size // dist.world_size, cfg.seed, cfg.world.resolution, dist.rank, dist.world_size, cfg.data.workers,
                       captions=captions)


def stream_fingerprint(cfg) -> dict:
    """What a streamed stage adds to its fingerprint: the number of workers sets the batches' order."""
    return {"stream_workers": cfg.data.workers} if cfg.data.stream else {}


def _check_world_codes(cfg) -> None:
    """The world's codes need a code per background and per object colour
    (`config.world_colour_codebooks`): fewer would merge colours the captions tell apart, which
    `--set world.colours=...` alone does silently, since the preset sized the codebooks."""
    vq = cfg.vq.model
    if on_own_images(cfg) or vq.quantizer != "product" or vq.colour_input != "layers" or len(vq.product_codebooks) != 3:
        return  # not the world's codes (VQModel names a wrong number of parts itself)
    needed = world_colour_codebooks(cfg.world)
    if any(have < need for have, need in zip(vq.product_codebooks[1:], needed)):
        fitting = ",".join(str(size) for size in [vq.product_codebooks[0], *needed])
        raise UserError(f"vq.model.product_codebooks: {list(vq.product_codebooks)} is too small for the world's {len(cfg.world.backgrounds)} "
                        f"backgrounds and {len(cfg.world.colours)} colours (they need {needed[0]} and {needed[1]} codes); "
                        f"set vq.model.product_codebooks=[{fitting}]")


def check_inputs(cfg) -> None:
    """Every path the config names exists, and settings that must agree do, before any stage
    runs: a wrong path fails in a second, not after the stages before the one that reads it.
    Raises UserError naming the key."""
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device: {cfg.device} asked for, but torch sees no CUDA device (set device=cpu, or auto)")
    # key -> (path, alternatives: each a set of files the path must hold; "" = the path is a file)
    models = {
        "lm.path": (cfg.lm.path, [("config.json",)]),
        "vq.pretrained": (cfg.vq.pretrained, [("config.json",), ("vqvae/config.json",), ("config.yaml", "model.safetensors")]),
        "vq.lpips_path": (cfg.vq.lpips_path, [("vgg16.pth", "vgg.pth")]),
        "eval.inception_path": (cfg.eval.inception_path, [("",)]),
        "clip.hf_path": (cfg.clip.hf_path, [("config.json",)]),
        "curate.diffusers_path": (cfg.curate.diffusers_path, [("model_index.json",)]),
        "captions.model": (cfg.captions.model if cfg.captions.backend == "hf" else "", [("config.json",)]),
        "captions.classes": (cfg.captions.classes if cfg.captions.classes not in ("world", "imagenet21k") else "", [("",)]),
    }
    for key, (value, alternatives) in models.items():
        if not value:
            continue
        path = Path(value)
        if not path.exists():
            raise UserError(f"{key}: {value} does not exist")
        if not any(all((path / name).exists() if name else path.is_file() for name in files) for files in alternatives):
            wanted = " or ".join("a file" if files == ("",) else " + ".join(files) for files in alternatives)
            raise UserError(f"{key}: {value} is not what it should be ({wanted})")
    shards = {"data.paired": cfg.data.paired, "data.vq_images": cfg.data.vq_images,
              **{f"data.text_only.{k}": v for k, v in cfg.data.text_only.items()}, **{f"data.eval.{k}": v for k, v in cfg.data.eval.items()}}
    for key, value in shards.items():
        if value:
            try:
                shard_urls(value)
            except FileNotFoundError as error:
                raise UserError(f"{key}: {error}") from None
    _check_world_codes(cfg)
    if cfg.data.paired and cfg.captions.backend == "world":
        raise UserError("captions.backend: the world LLM writes captions of the embedded world's shapes, not of data.paired's "
                        "concepts; set captions.backend to openai or hf (with captions.model) for GenPair on your data")
