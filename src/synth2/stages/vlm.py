"""The VLM arms: train one arm's VLM on its sources, then caption and score both eval splits;
and the image-blind floor every arm is compared with.

Every arm of a process runs on the same loaded frozen LM (`frozen_lm`), so each VLM built
here is detached from it when its stage is done (`artifacts.attached`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from synth2.data.arrays import load_pairs
from synth2.errors import UserError
from synth2.eval.captioning import METRICS, evaluate_captions
from synth2.models.decode import beam_search, decode_texts
from synth2.models.device import device_of
from synth2.models.vlm import VLM, TrainableParts
from synth2.run import Run, StageResult
from synth2.stages import artifacts
from synth2.stages.arms import Arm, run_arms, skipped_arms, vlm_stage_name
from synth2.stages.captions import caption_source
from synth2.stages.curation import curate
from synth2.stages.controls import CONTROL_SOURCES, genpair_controls
from synth2.stages.data import EVAL_SPLIT_NAMES, datasets
from synth2.stages.generator import synthesize, t2i, token_generator
from synth2.stages.models import encode, frozen_lm, lm, load_vq, real_tokens, token_grid, token_stage, vq
from synth2.train import distributed, sharded
from synth2.train.loop import train
from synth2.train.vlm import SourceData, VLMTask


logger = logging.getLogger("synth2")

def vlm(run: Run, arm_name: str = "baseline", seed: int | None = None) -> StageResult:
    """Train one experiment arm's VLM, with a CIDEr curve, then caption and score both eval splits."""
    cfg = run.config
    seed = cfg.seed if seed is None else seed
    arms = run_arms(run)
    if arm_name not in arms:
        why = skipped_arms(run).get(arm_name)
        raise UserError(f"arm {arm_name!r} cannot train on this run's data: {why}" if why else f"unknown arm {arm_name!r}; the arms are {sorted(arms)}")
    arm = arms[arm_name]
    synthetic = set().union(*(a.synthetic_sources for a in arms.values() if not a.curated))
    if set(cfg.synth.cached_sources) - synthetic:
        raise UserError(f"synth.cached_sources names {sorted(set(cfg.synth.cached_sources) - synthetic)}, "
                        f"not a caption-only source of this run ({sorted(synthetic)})")
    _, inputs = datasets(run)
    l, v, e = lm(run), vq(run), encode(run)
    drawn = drawn_on_the_fly(cfg, arm)
    on_the_fly = bool(drawn)
    if arm.curated:
        extra = [curate(run)]
    else:
        cached = arm.synthetic_sources - drawn
        extra = ([t2i(run)] if on_the_fly else []) + ([synthesize(run)] if cached else [])
    if arm.control:
        extra.append(genpair_controls(run))
    # the stages that encoded its real pairs' images (encode, or encode_text_only for a corpus)
    extra += [token_stage(run, s.data) for s in arm.sources if s.kind == "real" and s.data not in CONTROL_SOURCES]
    name = vlm_stage_name(arm_name, seed, cfg.seed)
    stage_cfg = {"vlm": cfg.vlm, "arm": arm, "seed": seed, "eval": cfg.eval, "synth": cfg.synth if arm.synthetic else None}
    if on_the_fly:  # the cached mode's sampler is in `synthesize`, the curated one's in `curate`
        stage_cfg["sampler"] = cfg.sampler

    def build(directory: Path) -> dict:
        sources = [source_data(run, source, source.data in drawn) for source in arm.sources]
        generator = token_generator(run) if on_the_fly else None
        frozen, vq_model, grid = frozen_lm(run), load_vq(run), token_grid(run)
        torch.manual_seed(seed)
        with artifacts.attached(VLM(cfg.vlm.model, frozen, vq_model, grid)) as model:
            dist = distributed.init(cfg.device)
            task = VLMTask(cfg.vlm, model, sources, dist, seed, generator, space=arm.space)
            eval_a = load_pairs(e["splits"]["eval_a"], images=False, tokens=True, limit=cfg.eval.curve_images)

            def curve(step: int) -> dict:
                return {"cider_a": caption_and_score(model, eval_a, cfg, directory / "curve", f"step{step}", ("CIDEr",))["CIDEr"]}

            fsdp = sharded.is_sharded(task.modules)
            evaluate = curve if cfg.eval.curve_every and arm_name in cfg.eval.curve_arms else None
            if evaluate is not None and fsdp:
                logger.warning("%s: no CIDEr curve with train.parallel=fsdp (rank 0 alone cannot run a sharded model)", name)
                evaluate = None
            train_cfg = dataclasses.replace(cfg.vlm.train, eval_every=cfg.eval.curve_every)
            result = train(task, train_cfg, directory, dist, name, evaluate=evaluate, config_to_save=stage_cfg)
            weights = sharded.full_state_dict(task.modules["vlm"]) if fsdp else None  # every rank gathers
            if not dist.is_main:  # rank 0 saves, captions and scores; the others are done
                distributed.barrier(dist)
                return {}
            with artifacts.attached(_whole(model, weights) if fsdp else model) as whole:
                save_vlm(directory / "model", TrainableParts(whole), whole, cfg)
                scores = score_splits(whole, run, directory)
                scores["gate_openness"] = whole.gate_openness()
        scores["train_seconds"] = result.seconds
        scores["steps_per_s"] = result.steps_per_s
        (directory / "scores.json").write_text(json.dumps(scores, indent=2))
        distributed.barrier(dist)
        return scores

    return run.stage(name, stage_cfg, inputs + [l, v, e, *extra], build)


def _whole(model: VLM, weights: dict) -> VLM:
    """An unsharded copy of a sharded VLM's trainable parts, around the same frozen LM and VQ."""
    copy = VLM(model.cfg, model.lm, model.vq, model.grid)
    TrainableParts(copy).load_state_dict(weights)
    return copy.eval()


def save_vlm(directory: Path, trainable: torch.nn.Module, model: VLM, cfg) -> Path:
    return artifacts.save_module(directory, trainable, cfg.vlm.model, grid=list(model.grid), lm_width=model.lm.hidden_size, media_width=model.vq.embed_dim)


def score_splits(model: VLM, run: Run, directory: Path) -> dict:
    """Caption and score every eval split: {"CIDEr_a": ..., "CIDEr_b": ..., ...}."""
    cfg, e = run.config, encode(run)
    scores = {}
    for split in EVAL_SPLIT_NAMES:
        pairs = load_pairs(e["splits"][f"eval_{split}"], images=False, tokens=True, limit=cfg.eval.max_images)
        for metric, value in caption_and_score(model, pairs, cfg, directory, f"eval_{split}").items():
            scores[f"{metric}_{split}"] = value
    return scores


def drawn_on_the_fly(cfg, arm: Arm) -> set[str]:
    """The arm's synthetic sources whose images the generator draws while the VLM trains."""
    if arm.curated or cfg.synth.mode != "on_the_fly":
        return set()
    return arm.synthetic_sources - set(cfg.synth.cached_sources)


def source_data(run: Run, source, on_the_fly: bool) -> SourceData:
    """Captions and token grids of one VLM source: real (encoded once), a GenPair control, cached
    synthetic, curated, or on the fly."""
    if source.data in CONTROL_SOURCES:
        cached = genpair_controls(run)[source.data]
        return SourceData(source.data, source, json.loads(Path(cached["captions"]).read_text()), np.load(cached["tokens"]))
    if source.kind == "real":
        pairs = load_pairs(real_tokens(run, source.data), images=False, tokens=True)
        return SourceData(source.data, source, pairs.captions, pairs.tokens)
    curated = Arm(source.data, "", [source]).curated
    if curated:
        cached = curate(run)["sets"][curated]
    elif on_the_fly:
        return SourceData(source.data, source, caption_source(run, source.data), None)
    else:
        cached = synthesize(run)[source.data]
    return SourceData(source.data, source, json.loads(Path(cached["captions"]).read_text()), np.load(cached["tokens"]))


def caption_and_score(model, pairs, cfg, directory: Path, name: str, metrics=None) -> dict:
    """Caption `pairs`' token grids, write predictions + references, score the files."""
    was_training = model.training
    model.eval()
    predictions = []
    for start in range(0, len(pairs), 64):
        tokens = torch.from_numpy(pairs.tokens[start : start + 64]).long().to(device_of(model))
        ids = beam_search(model, tokens, cfg.vlm.eval_prompt, cfg.eval.beams, cfg.eval.max_new_tokens)
        predictions += decode_texts(model, ids)
    model.train(was_training)
    # an empty prediction is a legitimate (bad) answer, but PTB tokenisation needs a token
    predictions = [p if p.strip() else "." for p in predictions]
    scores = evaluate_captions(directory, name, pairs.keys, predictions, pairs.references(), metrics or METRICS)
    # a VLM that ignores its images says the same few captions for every image
    scores["distinct"] = len(set(predictions)) / max(len(predictions), 1)
    return scores


def blind(run: Run) -> StageResult:
    """The image-blind floor: the VLM before training, scored like every arm.

    Its gates start closed, so it is exactly the frozen LM and says the LM's own most likely
    caption for every image. An arm near this floor has learnt the caption prior, not to look.
    """
    cfg = run.config
    _, inputs = datasets(run)
    l, v, e = lm(run), vq(run), encode(run)

    def build(directory: Path) -> dict:
        frozen, vq_model, grid = frozen_lm(run), load_vq(run), token_grid(run)
        torch.manual_seed(cfg.seed)
        with artifacts.attached(VLM(cfg.vlm.model, frozen, vq_model, grid)) as model:
            out = score_splits(model, run, directory)
        out["caption"] = json.loads((directory / "eval_a.predictions.json").read_text())[0]["caption"]
        return out

    # with closed gates the VLM's own settings cannot change a caption: only the decoding can
    decoding = {"max_images": cfg.eval.max_images, "beams": cfg.eval.beams, "max_new_tokens": cfg.eval.max_new_tokens, "prompt": cfg.vlm.eval_prompt}
    return run.stage("eval/blind", decoding, inputs + [l, v, e], build)


@contextmanager
def trained_vlm(run: Run, arm: str = "baseline", seed: int | None = None) -> Iterator[VLM]:
    """A trained arm's VLM (trained first if needed), detached from the shared LM afterwards."""
    stage = vlm(run, arm, seed)
    with artifacts.attached(artifacts.load_vlm(stage.directory / "model", frozen_lm(run), load_vq(run))) as model:
        yield model
