"""SynthVLM-style curation as run stages.

    clip:    the controlled dual encoder, trained contrastively on the paired data
             (AUC of CLIPScore on matched vs shuffled eval pairs is its sanity check)
    curate:  caption pool (the LLM captions) -> filters -> best-of-n synthesis ->
             CLIPScore + SSIM -> top K (or a ratio), K random, and all; exported as
             LLaVA JSON and WebDataset shards with the scores in the metadata
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from synth2 import artifacts, pipeline
from synth2.curate.filters import FilterConfig, filter_captions
from synth2.curate.scores import ControlledScorer, HFClipScorer, clip_score, reconstruction_ssim, weighted_score
from synth2.curate.synthesizers import DiffusersSynthesizer, OwnSynthesizer
from synth2.data.arrays import load_pairs
from synth2.data.corpus import read_captions
from synth2.data.shards import Pair, ShardWriter
from synth2.models.clip import ClipConfig, DualEncoder
from synth2.models.lm import CaptionStates
from synth2.models.vq import to_model_pixels
from synth2.run import Run, StageResult
from synth2.train import distributed
from synth2.train.loop import StepContext, TrainConfig, adamw, cycle_indices, rank_slice, train


@dataclass
class ClipStageConfig:
    model: ClipConfig = field(default_factory=ClipConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=400, batch_size=128, lr=2e-3, warmup=20, weight_decay=0.01, checkpoint_every=200))
    # A local Hugging Face CLIP directory to score with instead of the controlled encoder.
    hf_path: str = ""
    # Run the frozen LM over the paired captions once, not at every step (see CaptionStates).
    cache_text: bool = True


@dataclass
class CurateConfig:
    filters: FilterConfig = field(default_factory=FilterConfig)
    synthesizer: str = "synth2"  # synth2 | diffusers
    diffusers_path: str = ""
    best_of: int = 2  # samples per caption; the best by weighted score is kept
    ssim: str = "vq_reconstruction"  # | none
    lam: float = 0.5
    top_k: int = 0  # 0 = use `ratio`
    ratio: float = 0.5


class ClipTask:
    def __init__(self, cfg: ClipStageConfig, lm, images: np.ndarray, captions: list[str], dist, seed: int):
        torch.manual_seed(seed)
        self.cfg, self.lm, self.dist, self.seed = cfg, lm, dist, seed
        self.images, self.captions = torch.from_numpy(images), captions
        self.model = DualEncoder(cfg.model, lm.hidden_size)
        self.modules = {"clip": self.model}
        self.optimizers = {"clip": adamw(self.model.parameters(), cfg.train)}
        self.ddp = distributed.wrap(self.model, dist)
        self.text = CaptionStates(lm, captions, cache=cfg.cache_text)

    def batch(self, step: int):
        indices = rank_slice(cycle_indices(len(self.captions), self.cfg.train.batch_size, step, self.seed), self.dist)
        states, mask = self.text[indices.tolist()]
        return to_model_pixels(self.images[indices]), states, mask

    def step(self, batch, step: int, ctx: StepContext) -> dict[str, float]:
        with ctx.autocast():
            loss = self.model.contrastive_loss(*batch)
        return {"loss": loss.item(), "grad_norm": ctx.update(loss, self.optimizers["clip"])}


def clip(run: Run) -> StageResult:
    cfg = run.config
    data, inputs = pipeline.datasets(run)
    l = pipeline.lm(run)

    def build(directory: Path) -> dict:
        frozen = pipeline.load_frozen_lm(run)
        paired = load_pairs(data["paired"], resolution=cfg.world.resolution)
        dist = distributed.init(cfg.device)
        task = ClipTask(cfg.clip, frozen, paired.images, paired.captions, dist, cfg.seed)
        train(task, cfg.clip.train, directory, dist, "clip", config_to_save=cfg.clip)
        artifacts.save_module(directory / "model", task.model, cfg.clip.model)
        auc = matched_vs_shuffled_auc(scorer(run, task.model.eval()), run, data["eval"]["a"])
        (directory / "metrics.json").write_text(json.dumps({"auc": auc}, indent=2))
        return {"path": str(directory / "model"), "auc": auc}

    return run.stage("clip", {"clip": cfg.clip, "seed": cfg.seed}, inputs + [l], build)


def load_clip(run: Run) -> DualEncoder:
    from safetensors.torch import load_file

    stage = clip(run)
    model = DualEncoder(run.config.clip.model, pipeline.load_frozen_lm(run).hidden_size)
    model.load_state_dict(load_file(Path(stage["path"]) / "model.safetensors"))
    return model.eval()


def scorer(run: Run, model: DualEncoder | None = None):
    if run.config.clip.hf_path:
        return HFClipScorer(run.config.clip.hf_path)
    return ControlledScorer(model or load_clip(run), pipeline.load_frozen_lm(run))


def matched_vs_shuffled_auc(score, run: Run, eval_shards: str) -> float:
    """ROC AUC of CLIPScore separating each eval image's own caption from another image's."""
    from sklearn.metrics import roc_auc_score

    pairs = load_pairs(eval_shards, limit=run.config.eval.max_images, resolution=run.config.world.resolution)
    matched = clip_score(score.cosine(pairs.images, pairs.captions))
    shuffled = clip_score(score.cosine(pairs.images, pairs.captions[1:] + pairs.captions[:1]))
    labels = np.r_[np.ones(len(matched)), np.zeros(len(shuffled))]
    return float(roc_auc_score(labels, np.r_[matched, shuffled]))


def curate(run: Run) -> StageResult:
    cfg = run.config
    inputs = [pipeline.captions(run), pipeline.t2i(run), pipeline.vq(run)]
    if not cfg.clip.hf_path:
        inputs.append(clip(run))

    def build(directory: Path) -> dict:
        frozen = pipeline.load_frozen_lm(run)
        vq = artifacts.load_vq(pipeline.vq(run)["path"])
        records = read_captions(pipeline.captions(run)["path"])
        pool = [r["caption"] for r in records]
        kept, rejects = filter_captions(pool, cfg.curate.filters, frozen)
        captions = [pool[i] for i in kept]
        synthesizer = (
            DiffusersSynthesizer(cfg.curate.diffusers_path) if cfg.curate.synthesizer == "diffusers" else OwnSynthesizer(pipeline.token_generator(run))
        )
        score = scorer(run)
        best = None
        for sample in range(cfg.curate.best_of):
            images = synthesizer.images(captions, seed=cfg.seed * 7_919 + sample)
            cosine = score.cosine(images, captions)
            ssim_values = reconstruction_ssim(vq, images, cfg.world.resolution) if cfg.curate.ssim == "vq_reconstruction" else None
            total = weighted_score(cosine, ssim_values, cfg.curate.lam)
            candidate = {"images": images, "cosine": cosine, "ssim": ssim_values if ssim_values is not None else np.zeros(len(images)), "score": total}
            if best is None:
                best = candidate
            else:
                better = total > best["score"]
                best = {k: np.where(better.reshape(-1, *([1] * (v.ndim - 1))), candidate[k], v) for k, v in best.items()}
        tokens = _tokens_of(vq, best["images"], cfg.world.resolution)
        k = cfg.curate.top_k or max(1, int(round(cfg.curate.ratio * len(captions))))
        order = np.argsort(-best["score"], kind="stable")
        rng = np.random.default_rng(cfg.seed)
        selections = {"topk": order[:k], "random": np.sort(rng.choice(len(captions), size=k, replace=False)), "all": np.arange(len(captions))}
        out = {"pool": len(pool), "after_filters": len(captions), "filter_rejects": rejects, "k": k, "sets": {}}
        for name, index in selections.items():
            np.save(directory / f"{name}.tokens.npy", tokens[index][:, None])
            (directory / f"{name}.captions.json").write_text(json.dumps([captions[i] for i in index]))
            out["sets"][name] = {"tokens": str(directory / f"{name}.tokens.npy"), "captions": str(directory / f"{name}.captions.json"), "count": int(len(index))}
        scores = {"clip_score": clip_score(best["cosine"]), "clip_cosine": best["cosine"], "ssim": best["ssim"], "weighted": best["score"]}
        export(directory / "export", order[:k], captions, best["images"], tokens, scores)
        out["mean_scores"] = {name: {"topk": float(np.mean(v[order[:k]])), "all": float(np.mean(v))} for name, v in scores.items()}
        spec = pipeline.world_spec(run)
        if spec is not None and cfg.captions.backend == "world":
            out.update(oracle_of_selections(spec, pipeline.world_llm(cfg), [records[i] for i in kept], cfg.captions.prompt, best["images"], selections))
        (directory / "report.json").write_text(json.dumps(out, indent=2))
        return out

    return run.stage("curate", {"curate": cfg.curate, "clip": cfg.clip.hf_path, "sampler": cfg.t2i.sampler, "seed": cfg.seed}, inputs, build)


def oracle_of_selections(spec, llm, records: list[dict], template: str, images: np.ndarray, selections: dict[str, np.ndarray]) -> dict:
    """Ground truth for curation, on the embedded world only: the share of each selection's
    synthetic images in which the oracle reads exactly their caption's objects (does CLIPScore +
    SSIM keep the right images?). Captions the world LLM would not have written are left out."""
    from synth2.eval.generator import oracle_agreements

    scenes = llm.described_scenes(records, template)
    checked = np.array([scene is not None for scene in scenes], dtype=bool)
    right = np.zeros(len(records), dtype=bool)
    right[checked] = [a["objects"] for a in oracle_agreements(spec, [s for s in scenes if s is not None], images[checked])]
    return {
        "oracle_checked": int(checked.sum()),
        "oracle_right": {name: float(right[index][checked[index]].mean()) if checked[index].any() else None for name, index in selections.items()},
    }


@torch.no_grad()
def _tokens_of(vq, images: np.ndarray, resolution: int) -> np.ndarray:
    from synth2.data.images import resize_center_crop

    if images.shape[1] != resolution:
        images = np.stack([resize_center_crop(i, resolution) for i in images])
    return np.concatenate([vq.encode(to_model_pixels(torch.from_numpy(images[s : s + 256]))).numpy() for s in range(0, len(images), 256)])


def export(directory: Path, index: np.ndarray, captions: list[str], images: np.ndarray, tokens: np.ndarray, scores: dict) -> None:
    """LLaVA-format JSON (image files + conversations) and WebDataset shards with the scores in the metadata."""
    from PIL import Image

    (directory / "images").mkdir(parents=True, exist_ok=True)
    llava = []
    with ShardWriter(directory / "shards", prefix="curated") as writer:
        for rank, i in enumerate(index.tolist()):
            key = f"curated_{rank:07d}"
            Image.fromarray(images[i]).save(directory / "images" / f"{key}.png")
            meta = {"rank": rank, **{name: float(v[i]) for name, v in scores.items()}}
            writer.write(Pair(key, captions[i], image=images[i], tokens=tokens[i].astype(np.uint16), meta=meta))
            llava.append({
                "id": key,
                "image": f"images/{key}.png",
                "conversations": [
                    {"from": "human", "value": "<image>\nDescribe the image."},
                    {"from": "gpt", "value": captions[i]},
                ],
                "scores": meta,
            })
    (directory / "llava.json").write_text(json.dumps(llava, indent=1))
