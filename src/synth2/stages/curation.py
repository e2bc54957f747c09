"""SynthVLM-style curation as run stages.

    clip:    the controlled dual encoder, trained contrastively on the paired data
             (AUC of CLIPScore on matched vs shuffled eval pairs is its sanity check)
    curate:  caption pool (the LLM captions) -> filters -> best-of-n synthesis ->
             CLIPScore + SSIM -> top K (or a ratio), K random, and all; exported as
             LLaVA JSON and WebDataset shards with the scores in the metadata
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.torch import load_file
from sklearn.metrics import roc_auc_score

from synth2.curate import curation
from synth2.curate.filters import filter_captions
from synth2.curate.scores import ControlledScorer, HFClipScorer, clip_score
from synth2.curate.synthesizers import DiffusersSynthesizer, OwnSynthesizer
from synth2.data.arrays import load_pairs
from synth2.data.corpus import read_captions
from synth2.encoding import encode_images
from synth2.models.clip import DualEncoder
from synth2.run import Run, StageResult
from synth2.stages import artifacts
from synth2.stages.captions import captions, world_llm
from synth2.stages.data import datasets, image_stream, stream_fingerprint, world_spec
from synth2.stages.generator import t2i, token_generator
from synth2.stages.models import frozen_lm, lm, load_vq, vq
from synth2.train import distributed
from synth2.train.clip import ClipTask
from synth2.train.loop import train


def clip(run: Run) -> StageResult:
    cfg = run.config
    data, inputs = datasets(run)
    l = lm(run)

    def build(directory: Path) -> dict:
        frozen = frozen_lm(run)
        dist = distributed.init(cfg.device)
        if cfg.data.stream:
            task = ClipTask(cfg.clip, frozen, image_stream(run, data["paired"], cfg.clip.train.batch_size, dist, captions=True), [], dist, cfg.seed)
        else:
            paired = load_pairs(data["paired"], resolution=cfg.world.resolution)
            task = ClipTask(cfg.clip, frozen, paired.images, paired.captions, dist, cfg.seed)
        train(task, cfg.clip.train, directory, dist, "clip", config_to_save=cfg.clip)
        artifacts.save_module(directory / "model", task.model, cfg.clip.model, text_width=frozen.hidden_size)
        auc = matched_vs_shuffled_auc(scorer(run, task.model.eval()), run, data["eval"]["a"])
        (directory / "metrics.json").write_text(json.dumps({"auc": auc}, indent=2))
        return {"path": str(directory / "model"), "auc": auc}

    return run.stage("clip", {"clip": cfg.clip, "seed": cfg.seed, **stream_fingerprint(cfg)}, inputs + [l], build)


def load_clip(run: Run) -> DualEncoder:
    stage = clip(run)
    model = DualEncoder(run.config.clip.model, frozen_lm(run).hidden_size)
    model.load_state_dict(load_file(Path(stage["path"]) / "model.safetensors"))
    return model.eval()


def scorer(run: Run, model: DualEncoder | None = None):
    if run.config.clip.hf_path:
        return HFClipScorer(run.config.clip.hf_path)
    return ControlledScorer(model or load_clip(run), frozen_lm(run))


def matched_vs_shuffled_auc(score, run: Run, eval_shards: str) -> float:
    """ROC AUC of CLIPScore separating each eval image's own caption from another image's."""
    pairs = load_pairs(eval_shards, limit=run.config.eval.max_images, resolution=run.config.world.resolution)
    matched = clip_score(score.cosine(pairs.images, pairs.captions))
    shuffled = clip_score(score.cosine(pairs.images, pairs.captions[1:] + pairs.captions[:1]))
    labels = np.r_[np.ones(len(matched)), np.zeros(len(shuffled))]
    return float(roc_auc_score(labels, np.r_[matched, shuffled]))


def curate(run: Run) -> StageResult:
    cfg = run.config
    inputs = [captions(run), t2i(run), vq(run)]
    if not cfg.clip.hf_path:
        inputs.append(clip(run))

    def build(directory: Path) -> dict:
        vq_model = load_vq(run)
        records = read_captions(captions(run)["path"])
        pool = [r["caption"] for r in records]
        kept, rejects = filter_captions(pool, cfg.curate.filters, frozen_lm(run))
        kept_captions = [pool[i] for i in kept]
        synthesizer = DiffusersSynthesizer(cfg.curate.diffusers_path) if cfg.curate.synthesizer == "diffusers" else OwnSynthesizer(token_generator(run))
        best = curation.best_of_n(synthesizer, scorer(run), vq_model, kept_captions, cfg.curate, cfg.world.resolution, cfg.seed)
        tokens = encode_images(vq_model, best["images"], cfg.world.resolution)
        k = cfg.curate.top_k or max(1, int(round(cfg.curate.ratio * len(kept_captions))))
        chosen = curation.selections(best["score"], k, cfg.seed)
        out = {"pool": len(pool), "after_filters": len(kept_captions), "filter_rejects": rejects, "k": k, "sets": {}}
        for name, index in chosen.items():
            np.save(directory / f"{name}.tokens.npy", tokens[index][:, None])
            (directory / f"{name}.captions.json").write_text(json.dumps([kept_captions[i] for i in index]))
            out["sets"][name] = {"tokens": str(directory / f"{name}.tokens.npy"), "captions": str(directory / f"{name}.captions.json"), "count": int(len(index))}
        scores = curation.score_table(best)
        curation.export(directory / "export", chosen["topk"], kept_captions, best["images"], tokens, scores)
        out["mean_scores"] = {name: {"topk": float(np.mean(v[chosen["topk"]])), "all": float(np.mean(v))} for name, v in scores.items()}
        spec = world_spec(run)
        if spec is not None and cfg.captions.backend == "world":
            out.update(curation.oracle_of_selections(spec, world_llm(cfg), [records[i] for i in kept], cfg.captions.prompt, best["images"], chosen))
        (directory / "report.json").write_text(json.dumps(out, indent=2))
        return out

    return run.stage("curate", {"curate": cfg.curate, "clip": cfg.clip.hf_path, "sampler": cfg.sampler, "seed": cfg.seed}, inputs, build)
