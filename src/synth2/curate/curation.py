"""SynthVLM curation of a caption pool: best-of-n synthesis, CLIPScore + SSIM, top K, export.

    captions -> filters (curate.filters) -> n images per caption -> weighted score ->
    keep each caption's best image -> top K / K random / all -> LLaVA JSON + WebDataset shards
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from synth2.curate.filters import FilterConfig
from synth2.curate.scores import clip_score, reconstruction_ssim, weighted_score
from synth2.data.shards import Pair, ShardWriter
from synth2.eval.generator import oracle_agreements

# the selections every curation makes, in the order reports list them
SELECTIONS = ("topk", "random", "all")


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


def best_of_n(synthesizer, score, vq, captions: list[str], cfg: CurateConfig, resolution: int, seed: int) -> dict[str, np.ndarray]:
    """Per caption, the best of `cfg.best_of` synthetic images by weighted score:
    {"images", "cosine", "ssim", "score"} (ssim is 0 when `cfg.ssim` is "none")."""
    best = None
    for sample in range(cfg.best_of):
        images = synthesizer.images(captions, seed=seed * 7_919 + sample)
        cosine = score.cosine(images, captions)
        ssim_values = reconstruction_ssim(vq, images, resolution) if cfg.ssim == "vq_reconstruction" else None
        total = weighted_score(cosine, ssim_values, cfg.lam)
        candidate = {"images": images, "cosine": cosine, "ssim": ssim_values if ssim_values is not None else np.zeros(len(images)), "score": total}
        if best is None:
            best = candidate
        else:
            better = total > best["score"]
            best = {k: np.where(better.reshape(-1, *([1] * (v.ndim - 1))), candidate[k], v) for k, v in best.items()}
    return best


def selections(scores: np.ndarray, k: int, seed: int) -> dict[str, np.ndarray]:
    """Indices of the top K by score, of K drawn at random, and of all."""
    order = np.argsort(-scores, kind="stable")
    rng = np.random.default_rng(seed)
    return {"topk": order[:k], "random": np.sort(rng.choice(len(scores), size=k, replace=False)), "all": np.arange(len(scores))}


def score_table(best: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The per-image scores exported with each selected pair."""
    return {"clip_score": clip_score(best["cosine"]), "clip_cosine": best["cosine"], "ssim": best["ssim"], "weighted": best["score"]}


def oracle_of_selections(spec, llm, records: list[dict], template: str, images: np.ndarray, chosen: dict[str, np.ndarray]) -> dict:
    """Ground truth for curation, on the embedded world only: the share of each selection's
    synthetic images in which the oracle reads exactly their caption's objects (does CLIPScore +
    SSIM keep the right images?). Captions the world LLM would not have written are left out."""
    scenes = llm.described_scenes(records, template)
    checked = np.array([scene is not None for scene in scenes], dtype=bool)
    right = np.zeros(len(records), dtype=bool)
    right[checked] = [a["objects"] for a in oracle_agreements(spec, [s for s in scenes if s is not None], images[checked])]
    return {
        "oracle_checked": int(checked.sum()),
        "oracle_right": {name: float(right[index][checked[index]].mean()) if checked[index].any() else None for name, index in chosen.items()},
    }


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
