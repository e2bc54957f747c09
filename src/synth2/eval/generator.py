"""Generator metrics: masked-token accuracy, oracle accuracy of generated images (seen vs held-out
combinations), Fréchet distances, and a sample grid of real images beside generated ones.

Oracle accuracy: an image generated from a caption is right when the oracle reads
exactly the caption scene's (shape, colour) objects from it (sizes and positions are
free: captions often leave them out). Captions with any (shape, colour) combination
the paired split never showed count as held-out.

The same criterion on the VQ reconstructions of the eval images themselves
(`oracle_vq_*`) is the generator's ceiling in practice: it learns to draw the real images'
tokens, and a generator that drew exactly those would score this.

Fréchet distance (Heusel et al.) needs image features. Inception weights cannot be
downloaded here, so synth2 always reports FD on features of its own VQ encoder
(pooled pre-quantisation latents: a network trained on the paired data only), and
FID with Inception when `eval.inception_path` names a local TorchScript Inception-v3.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from scipy import linalg

from synth2.data.inspect import write_grid
from synth2.eval.schema import detail, metric
from synth2.models.t2i import masked_prediction_loss
from synth2.models.vq import to_model_pixels
from synth2.world.llm import WorldLLM
from synth2.world.oracle import AGREEMENT_PARTS, Oracle, scene_agreement
from synth2.world.scene import Scene

_ORACLE = "oracle accuracy, seen / held-out combinations"
_CEILING = "its ceiling: the same on the eval images' own VQ reconstructions, seen / held-out"
_LLM_STYLE = "oracle accuracy, the same scenes captioned in the world LLM's style (GenPair's): as prompted / caption whole / first sentence only"
_PARTS = "right on its own: object count / colours / shapes"
_MASKED = "masked-token accuracy, own / shuffled captions"


@dataclass
class GeneratorMetrics:
    """What `generator_metrics` measures; oracle fields are None off the embedded world."""

    oracle_seen: float | None = metric(_ORACLE, pct=True)
    oracle_heldout: float | None = metric(_ORACLE, pct=True)
    oracle_vq_seen: float | None = metric(_CEILING, pct=True)
    oracle_vq_heldout: float | None = metric(_CEILING, pct=True)
    oracle_llm_style: float | None = metric(_LLM_STYLE, pct=True)
    oracle_llm_style_whole: float | None = metric(_LLM_STYLE, pct=True)
    oracle_llm_style_first_sentence: float | None = metric(_LLM_STYLE, pct=True)
    oracle_count_right: float | None = metric(_PARTS, pct=True)
    oracle_colours_right: float | None = metric(_PARTS, pct=True)
    oracle_shapes_right: float | None = metric(_PARTS, pct=True)
    masked_token_accuracy: float | None = metric(_MASKED, pct=True)
    masked_token_accuracy_shuffled_captions: float | None = metric(_MASKED, pct=True)
    text_information_nats: float | None = metric("caption information: masked-token NLL shuffled - own (nats)")
    fd_vq: float | None = metric("Fréchet distance in VQ-embedding space")
    fid_inception: float | None = detail()
    oracle_seen_count: int | None = detail()
    oracle_heldout_count: int | None = detail()
    oracle_vq_seen_count: int | None = detail()
    oracle_vq_heldout_count: int | None = detail()
    masked_token_nll: float | None = detail()
    masked_token_nll_shuffled_captions: float | None = detail()
    sample_grid: str | None = detail()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (rows = samples)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    if not np.isfinite(covmean).all():
        eps = np.eye(len(cov_a)) * 1e-6
        covmean = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean.real))


@torch.no_grad()
def vq_features(vq, images_uint8: np.ndarray, batch_size: int = 256) -> np.ndarray:
    feats = []
    for start in range(0, len(images_uint8), batch_size):
        z = vq.encoder(to_model_pixels(torch.from_numpy(images_uint8[start : start + batch_size])))
        feats.append(torch.cat([z.mean(dim=(2, 3)), z.amax(dim=(2, 3))], dim=1))
    return torch.cat(feats).numpy().astype(np.float64)


@torch.no_grad()
def inception_features(path: str | Path, images_uint8: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Features from a TorchScript Inception taking uint8-range float (B, 3, H, W) images, as clean-fid's does."""
    model = torch.jit.load(str(path), map_location="cpu").eval()
    feats = []
    for start in range(0, len(images_uint8), batch_size):
        x = torch.from_numpy(images_uint8[start : start + batch_size]).permute(0, 3, 1, 2).float()
        x = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        feats.append(model(x).flatten(1))
    return torch.cat(feats).numpy().astype(np.float64)


@torch.no_grad()
def masked_token_scores(gen, tokens: np.ndarray, captions: list[str], seed: int, batch_size: int = 128) -> tuple[float, float]:
    """(accuracy, cross-entropy in nats) on masked tokens, with masks drawn from `seed`."""
    generator = torch.Generator().manual_seed(seed)
    right = nll = total = 0.0
    for start in range(0, len(captions), batch_size):
        ids = torch.from_numpy(tokens[start : start + batch_size].reshape(-1, gen.model.num_tokens)).long()
        states, mask = gen.lm.encode_texts(captions[start : start + batch_size])
        loss, accuracy, share = masked_prediction_loss(gen.model, ids, states, mask, generator)
        n = share.item() * ids.numel()
        right, nll, total = right + accuracy.item() * n, nll + loss.item() * n, total + n
    return right / max(total, 1), nll / max(total, 1)


def text_use(gen, tokens: np.ndarray, captions: list[str], seed: int) -> dict[str, float]:
    """How much the generator uses its captions: the same masks scored with every caption swapped
    for another image's. Accuracy is dominated by background tokens, so it barely moves; the
    cross-entropy gap (shuffled - own, nats per masked token) is the sensitive measure: an
    estimate of the information the caption adds about a masked token (0 = ignored)."""
    shuffled = captions[1:] + captions[:1]
    accuracy, nll = masked_token_scores(gen, tokens, captions, seed)
    accuracy_shuffled, nll_shuffled = masked_token_scores(gen, tokens, shuffled, seed)
    return {
        "masked_token_accuracy": accuracy,
        "masked_token_accuracy_shuffled_captions": accuracy_shuffled,
        "masked_token_nll": nll,
        "masked_token_nll_shuffled_captions": nll_shuffled,
        "text_information_nats": nll_shuffled - nll,
    }


def oracle_agreements(spec, scenes: list, images: np.ndarray) -> list[dict[str, bool]]:
    """What the world's oracle reads right in each image of its scene (see `scene_agreement`)."""
    oracle = Oracle(spec)
    return [scene_agreement(scene, oracle.parse(image)) for scene, image in zip(scenes, images)]


def seen_and_heldout(spec, scenes: list, agreements: list[dict[str, bool]], prefix: str) -> dict:
    """Share of images with every object right, for scenes whose combinations the paired split
    showed (`{prefix}_seen`) and for those with a held-out one (`{prefix}_heldout`), and their counts."""
    groups: dict[str, list[bool]] = {"seen": [], "heldout": []}
    for scene, agreement in zip(scenes, agreements):
        groups["heldout" if any(c in spec.heldout for c in scene.combos()) else "seen"].append(agreement["objects"])
    out = {}
    for group, right in groups.items():
        out[f"{prefix}_{group}"] = float(np.mean(right)) if right else float("nan")
        out[f"{prefix}_{group}_count"] = len(right)
    return out


def llm_style_samplers(sampler) -> dict:
    """How `oracle_in_llm_style` prompts the generator, by metric: as `sampler` does
    (`drop_prefix` dropped; only the first sentence if `first_sentence`), with the captions whole,
    and with only their first sentence (which lists every object), `drop_prefix` dropped."""
    return {
        "oracle_llm_style": sampler,
        "oracle_llm_style_whole": replace(sampler, drop_prefix="", first_sentence=False),
        "oracle_llm_style_first_sentence": replace(sampler, first_sentence=True),
    }


def oracle_in_llm_style(gen, spec, scenes: list, seed: int) -> dict[str, float]:
    """Oracle accuracy (all objects right) for the same scenes described the way the world LLM
    writes GenPair's captions: whether the generator, trained on the paired captions' styles,
    follows the captions it is given in GenPair, prompted the three ways of `llm_style_samplers`."""
    llm = WorldLLM(spec, noise=0.0)
    captions = [llm.describe(scene, seed + i) for i, scene in enumerate(scenes)]
    by_prompting: dict[str, float] = {}  # two metrics may prompt the same way: draw once
    out = {}
    for metric, sampler in llm_style_samplers(gen.sampler).items():
        key = repr(sampler)
        if key not in by_prompting:
            _, images = replace(gen, sampler=sampler).generate(captions, seed=seed + 12345, pixels=True)
            by_prompting[key] = float(np.mean([a["objects"] for a in oracle_agreements(spec, scenes, images)])) if scenes else float("nan")
        out[metric] = by_prompting[key]
    return out


def generator_metrics(gen, pairs, real_images: np.ndarray, spec, eval_cfg, directory: Path, seed: int) -> dict:
    """`pairs`: eval split with tokens and metadata; `real_images`: the same split's pixels.
    Returns the fields of `GeneratorMetrics` as a dict."""
    n = min(eval_cfg.generator_captions, len(pairs))
    prompts = [m.get("complete_caption", c) for m, c in zip(pairs.meta[:n], pairs.captions[:n])]
    tokens, images = gen.generate(prompts, seed=seed + 12345, pixels=True)
    metrics = text_use(gen, pairs.tokens, pairs.captions, seed)
    if spec is not None:
        scenes = [Scene.from_json(meta["scene"]) for meta in pairs.meta[:n]]
        parts = oracle_agreements(spec, scenes, images)
        metrics.update(seen_and_heldout(spec, scenes, parts, "oracle"))
        reconstructions = gen.pixels(torch.from_numpy(pairs.tokens[:n].astype(np.int64)))
        metrics.update(seen_and_heldout(spec, scenes, oracle_agreements(spec, scenes, reconstructions), "oracle_vq"))
        # which part of the scene wrong images miss (all eval captions)
        for part in AGREEMENT_PARTS:
            metrics[f"oracle_{part}_right"] = float(np.mean([p[part] for p in parts])) if parts else float("nan")
        metrics.update(oracle_in_llm_style(gen, spec, scenes, seed))
    real = real_images[: len(images)]
    metrics["fd_vq"] = frechet_distance(vq_features(gen.vq, real), vq_features(gen.vq, images))
    if eval_cfg.inception_path:
        metrics["fid_inception"] = frechet_distance(inception_features(eval_cfg.inception_path, real), inception_features(eval_cfg.inception_path, images))
    # Figure 3: eval images above the generator's images for the same captions
    count = min(8, len(images))
    samples = [(real[i], "real: " + prompts[i]) for i in range(count)] + [(images[i], "generated") for i in range(count)]
    metrics["sample_grid"] = str(write_grid(samples, directory / "samples.png", columns=count))
    return asdict(GeneratorMetrics(**metrics))
