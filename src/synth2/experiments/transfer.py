"""Evaluation on a user's benchmark shards: zero-shot, and after fine-tuning (the paper's Table 4).

Real benchmarks are ingested first, one record per image with all its references:

    synth2 ingest karpathy dataset_coco.json --images COCO_ROOT --split test --out coco_test
    synth2 evaluate --run RUN --arm genpair coco_test
    synth2 ingest karpathy dataset_coco.json --images COCO_ROOT --split train --out coco_train
    synth2 finetune --run RUN --arm genpair --train coco_train --eval coco_test --steps 2000 --lr 1e-5 --dropout 0.1

Both are run stages keyed by the shard paths, the arm and the settings, so a rerun is
free and an interrupted fine-tune resumes from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from synth2.data.arrays import load_pairs
from synth2.data.quality import QualityReport
from synth2.encoding import encode_shards
from synth2.run import Run, StageResult
from synth2.stages.arms import seed_suffix
from synth2.stages.models import vq
from synth2.stages.vlm import caption_and_score, save_vlm, trained_vlm, vlm
from synth2.train import distributed
from synth2.train.loop import train
from synth2.train.vlm import SourceConfig, SourceData, VLMTask


def _tag(*paths) -> str:
    """A short, stable name for a set of shard locations (stage names must stay readable)."""
    text = "|".join(str(Path(p).resolve()) if Path(p).exists() else str(p) for p in paths)
    return f"{Path(str(paths[-1]).rstrip('/')).name or 'data'}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def _encoded(run: Run, vq_model, shards: str, directory: Path) -> str:
    """Encode a user split's images with the run's VQ (bad records skipped and counted)."""
    cfg = run.config
    report = QualityReport(source=str(shards), max_bad_fraction=cfg.data.max_bad_fraction)
    encode_shards(vq_model, shards, directory, report, cfg.world.resolution)
    report.write(directory / "encode_report.json")
    return str(directory)


def _score(run: Run, model, tokens_dir: str, directory: Path, limit: int | None) -> dict:
    pairs = load_pairs(tokens_dir, images=False, tokens=True, limit=limit)
    if not len(pairs):
        raise ValueError(f"{tokens_dir}: no readable records to evaluate")
    scores = caption_and_score(model, pairs, run.config, directory, "eval")
    return {**scores, "images": len(pairs)}


def zero_shot(run: Run, shards: str, arm: str = "baseline", seed: int | None = None, limit: int | None = None) -> StageResult:
    """Caption a benchmark split with an arm's VLM, untouched, and score it (files first, then pycocoevalcap)."""
    vlm_stage = vlm(run, arm, seed)
    name = f"zeroshot/{arm}{seed_suffix(seed, run.config.seed)}/{_tag(shards)}"

    def build(directory: Path) -> dict:
        with trained_vlm(run, arm, seed) as model:
            return _score(run, model, _encoded(run, model.vq, shards, directory / "tokens"), directory, limit)

    return run.stage(name, {"shards": str(shards), "limit": limit, "eval": run.config.eval}, [vlm_stage, vq(run)], build)


def finetune(run: Run, train_shards: str, eval_shards: str, arm: str = "baseline", seed: int | None = None, limit: int | None = None) -> StageResult:
    """Continue an arm's VLM on a benchmark's training pairs (every reference is a training caption), then score.
    Steps, learning rate and dropout are `run.config.finetune` (the paper's by default); the
    optimizer is the pre-training one (AdamW, same betas and weight decay)."""
    cfg = run.config
    seed = cfg.seed if seed is None else seed
    vlm_stage = vlm(run, arm, seed)
    settings = cfg.finetune
    train_cfg = dataclasses.replace(cfg.vlm.train, steps=settings.steps, eval_every=0, lr=settings.lr)
    name = f"finetune/{arm}-s{seed}/{_tag(train_shards, eval_shards)}"
    stage_cfg = {"train": str(train_shards), "eval": str(eval_shards), "finetune": settings, "seed": seed, "limit": limit, "train_cfg": train_cfg, "eval_cfg": cfg.eval}

    def build(directory: Path) -> dict:
        with trained_vlm(run, arm, seed) as model:
            model.set_dropout(settings.dropout)
            model.train()
            pairs = load_pairs(_encoded(run, model.vq, train_shards, directory / "train_tokens"), images=False, tokens=True)
            image_index = [i for i, refs in enumerate(pairs.references()) for _ in refs]
            texts = [r for refs in pairs.references() for r in refs]
            source = SourceData("finetune", SourceConfig(kind="real", data="finetune"), texts, pairs.tokens[image_index])
            dist = distributed.init(cfg.device)
            task = VLMTask(dataclasses.replace(cfg.vlm, train=train_cfg), model, [source], dist, seed)  # its optimizer takes the fine-tuning LR
            result = train(task, train_cfg, directory, dist, name, config_to_save=stage_cfg)
            save_vlm(directory / "model", task.modules["vlm"], model, cfg)
            scores = _score(run, model, _encoded(run, model.vq, eval_shards, directory / "eval_tokens"), directory, limit)
        return {**scores, "train_pairs": len(texts), "train_seconds": result.seconds}

    return run.stage(name, stage_cfg, [vlm_stage, vq(run)], build)

