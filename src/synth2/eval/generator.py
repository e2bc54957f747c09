"""Generator metrics: masked-token accuracy, oracle accuracy of generated images (seen vs held-out
combinations), Fréchet distances, and a sample grid of real images beside generated ones.

Oracle accuracy: an image generated from a caption is right when the oracle reads
exactly the caption scene's (shape, colour) objects from it (sizes and positions are
free: captions often leave them out). It is measured on the captions the generator is asked
to draw: eval split A's scenes in the benchmark's style (a caption naming every object) and
in the world LLM's style (GenPair's), and GenPair's own captions; and by what the paired
data showed (`OracleContext.group`): held-out (shape, colour) combinations test attribute
binding, objects never seen together test scene composition. Two more splits say where the
errors lie: the same scenes named in the paired data's own style (drawing, apart from reading a
style the generator never trained on), and captions by the number of objects they name.

The same criterion on the VQ reconstructions of the eval images themselves
(`oracle_vq_*`) is the generator's ceiling in practice: it learns to draw the real images'
tokens, and a generator that drew exactly those would score this.

Fréchet distance (Heusel et al.) needs image features. Inception weights cannot be
downloaded here, so synth2 always reports FD on features of its own VQ encoder
(pooled pre-quantisation latents: a network trained on the paired data only; comparable
only within one run), and the standard FID (`synth2.eval.fid`) when `eval.inception_path`
names a local copy of the FID Inception.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import linalg

from synth2.data.inspect import write_grid
from synth2.eval.fid import inception_fid
from synth2.eval.schema import detail, metric
from synth2.models.device import device_of
from synth2.models.t2i import masked_prediction_loss
from synth2.models.vq import to_model_pixels
from synth2.world.llm import WorldLLM
from synth2.world.oracle import AGREEMENT_PARTS, Oracle, scene_agreement
from synth2.world.annotate import Annotator
from synth2.world.scene import Obj, Scene

_BENCHMARK = "oracle accuracy, benchmark-style captions: seen / held-out combination (binding) / novel composition"
_LLM = "oracle accuracy, the world LLM's captions of the same scenes, as prompted: all / seen / held-out / novel composition"
_CEILING = "its ceiling: the same on the eval images' own VQ reconstructions, seen / held-out"
_BINDING = "oracle accuracy, one object per caption (binding alone): held-out combinations / the same shapes in seen colours"
_PARTS = "right on its own (benchmark captions): object count / colours / shapes / every object drawn, extras allowed"
_MASKED = "masked-token accuracy, own / shuffled captions"
_STYLE = "oracle accuracy, the same scenes named completely in the paired data's own style: drawing, apart from reading a new style"
_OBJECTS = "oracle accuracy, benchmark captions naming 1 / 2 / 3 or more objects"


@dataclass
class GeneratorMetrics:
    """What `generator_metrics` measures; oracle fields are None off the embedded world.

    Scenes are grouped by what the paired data showed: "seen" scenes have no held-out
    (shape, colour) combination; "held-out" ones have one (attribute binding); "composition"
    scenes are seen scenes with two objects that never appeared together in a paired scene."""

    oracle_seen: float | None = metric(_BENCHMARK, pct=True)
    oracle_heldout: float | None = metric(_BENCHMARK, pct=True)
    oracle_composition: float | None = metric(_BENCHMARK, pct=True)
    oracle_llm: float | None = metric(_LLM, pct=True)
    oracle_llm_seen: float | None = metric(_LLM, pct=True)
    oracle_llm_heldout: float | None = metric(_LLM, pct=True)
    oracle_llm_composition: float | None = metric(_LLM, pct=True)
    oracle_genpair: float | None = metric("oracle accuracy on GenPair's own captions (the run's LLM captions, as prompted)", pct=True)
    oracle_binding_heldout: float | None = metric(_BINDING, pct=True)
    oracle_binding_seen: float | None = metric(_BINDING, pct=True)
    oracle_paired_style: float | None = metric(_STYLE, pct=True)
    oracle_objects_1: float | None = metric(_OBJECTS, pct=True)
    oracle_objects_2: float | None = metric(_OBJECTS, pct=True)
    oracle_objects_3plus: float | None = metric(_OBJECTS, pct=True)
    oracle_vq_seen: float | None = metric(_CEILING, pct=True)
    oracle_vq_heldout: float | None = metric(_CEILING, pct=True)
    oracle_count_right: float | None = metric(_PARTS, pct=True)
    oracle_colours_right: float | None = metric(_PARTS, pct=True)
    oracle_shapes_right: float | None = metric(_PARTS, pct=True)
    oracle_present_right: float | None = metric(_PARTS, pct=True)
    masked_token_accuracy: float | None = metric(_MASKED, pct=True)
    masked_token_accuracy_shuffled_captions: float | None = metric(_MASKED, pct=True)
    text_information_nats: float | None = metric("caption information: masked-token NLL shuffled - own (nats)")
    fd_vq: float | None = metric("Fréchet distance in VQ-embedding space")
    fid_inception: float | None = metric("FID (Inception, clean-fid resize; with eval.inception_path)")
    oracle_seen_count: int | None = detail()
    oracle_heldout_count: int | None = detail()
    oracle_composition_count: int | None = detail()
    oracle_genpair_count: int | None = detail()
    masked_token_nll: float | None = detail()
    masked_token_nll_shuffled_captions: float | None = detail()
    sample_grid: str | None = detail()


@dataclass(frozen=True)
class OracleContext:
    """What the oracle metrics need besides the eval scenes (embedded world only)."""

    spec: Any  # WorldSpec
    # pairs of (shape, colour) combinations that appeared together in a paired scene
    paired_pairs: frozenset
    # GenPair's captions and the scenes the world LLM described in them (None: not the world LLM)
    genpair: list[tuple[str, Scene]] | None = None

    @staticmethod
    def pairs_of(scene: Scene) -> set[tuple]:
        combos = sorted(scene.combos())
        return {(a, b) for i, a in enumerate(combos) for b in combos[i + 1 :]}

    @classmethod
    def from_paired(cls, spec, paired_scenes: list[Scene], genpair=None) -> "OracleContext":
        return cls(spec, frozenset(p for scene in paired_scenes for p in cls.pairs_of(scene)), genpair)

    def group(self, scene: Scene) -> str:
        """"heldout", "composition" or "familiar" (seen combinations, seen together)."""
        if any(c in self.spec.heldout for c in scene.combos()):
            return "heldout"
        return "composition" if self.pairs_of(scene) - self.paired_pairs else "familiar"


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
        z = vq.features(to_model_pixels(torch.from_numpy(images_uint8[start : start + batch_size])).to(device_of(vq)))
        feats.append(torch.cat([z.mean(dim=(2, 3)), z.amax(dim=(2, 3))], dim=1).cpu())
    return torch.cat(feats).numpy().astype(np.float64)


@torch.no_grad()
def masked_token_scores(gen, tokens: np.ndarray, captions: list[str], seed: int, batch_size: int = 128) -> tuple[float, float]:
    """(accuracy, cross-entropy in nats) on masked tokens, with masks drawn from `seed`."""
    generator = torch.Generator().manual_seed(seed)
    right = nll = total = 0.0
    for start in range(0, len(captions), batch_size):
        device = device_of(gen.model)
        ids = torch.from_numpy(tokens[start : start + batch_size].reshape(-1, gen.model.num_tokens)).long().to(device)
        states, mask = (t.to(device) for t in gen.lm.encode_texts(captions[start : start + batch_size], gen.model.cfg.text_layer))
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


def by_group(context: OracleContext, scenes: list, right: list[bool], prefix: str) -> dict:
    """Share of images right for seen scenes (`{prefix}_seen`: familiar and novel compositions),
    held-out ones (`{prefix}_heldout`) and novel compositions (`{prefix}_composition`), with counts."""
    groups: dict[str, list[bool]] = {"seen": [], "heldout": [], "composition": []}
    for scene, ok in zip(scenes, right):
        group = context.group(scene)
        groups["heldout" if group == "heldout" else "seen"].append(ok)
        if group == "composition":
            groups["composition"].append(ok)
    out = {}
    for group, values in groups.items():
        out[f"{prefix}_{group}"] = float(np.mean(values)) if values else float("nan")
        out[f"{prefix}_{group}_count"] = len(values)
    return out


def binding_scenes(spec, seed: int, per_shape: int = 4) -> dict[str, list[Scene]]:
    """One-object scenes that isolate attribute binding from scene composition: each shape in its
    held-out colours, and each shape in colours the paired data showed it in, `per_shape` scenes
    per shape and group, in a random cell, size and background."""
    rng = np.random.default_rng([seed, 4242])
    cfg = spec.cfg
    groups: dict[str, list[Scene]] = {"heldout": [], "seen": []}
    for shape in spec.shapes:
        colours = {"heldout": [c for c in spec.colours if (shape, c) in spec.heldout], "seen": spec.allowed_colours[shape]}
        for group, choices in colours.items():
            for _ in range(per_shape if choices else 0):
                cell = int(rng.integers(cfg.grid * cfg.grid))
                obj = Obj(shape, str(rng.choice(choices)), str(rng.choice(spec.sizes)), cell // cfg.grid, cell % cfg.grid)
                groups[group].append(Scene((obj,), str(rng.choice(spec.backgrounds))))
    return groups


def binding_captions(spec, style: str, seed: int, per_shape: int = 4) -> dict[str, tuple[list[Scene], list[str]]]:
    """The `binding_scenes` of each group with their captions, in `style` by an annotator who
    names every object."""
    annotator = Annotator(style, seed * 7919 + 31, spec.cfg.grid, omits=False)
    out = {}
    for group, scenes in binding_scenes(spec, seed, per_shape).items():
        out[group] = scenes, [annotator.describe(scene, np.random.default_rng([seed, i])) for i, scene in enumerate(scenes)]
    return out


def binding_accuracy(gen, spec, style: str, seed: int) -> dict[str, float]:
    """`oracle_binding_*`: the `binding_captions` in eval split A's style, drawn and read back by the oracle."""
    out = {}
    for group, (scenes, captions) in binding_captions(spec, style, seed).items():
        right = oracle_right(gen, spec, captions, scenes, seed + 99)
        out[f"oracle_binding_{group}"] = float(np.mean(right)) if right else float("nan")
    return out


def by_objects_named(scenes: list, right: list[bool]) -> dict[str, float]:
    """`oracle_objects_*`: the share right among captions naming 1, 2, and 3 or more objects."""
    groups = {"1": [], "2": [], "3plus": []}
    for scene, ok in zip(scenes, right):
        groups[str(len(scene.objects)) if len(scene.objects) < 3 else "3plus"].append(ok)
    return {f"oracle_objects_{k}": float(np.mean(v)) if v else float("nan") for k, v in groups.items()}


def paired_style_accuracy(gen, spec, scenes: list, seed: int, writers: int = 8) -> float:
    """`oracle_paired_style`: the eval scenes captioned in the style the generator trained on, by
    careful annotators of that style (every object named, by its own colour and class word).
    Beside the benchmark-style accuracy, it says how much of the generator's error is reading a
    style it never trained on, and how much is drawing."""
    people = [Annotator(spec.cfg.paired_style, seed * 7919 + 57 + i, spec.cfg.grid, omits=False) for i in range(writers)]
    captions = [people[i % writers].describe(scene, np.random.default_rng([seed, 57, i])) for i, scene in enumerate(scenes)]
    right = oracle_right(gen, spec, captions, scenes, seed + 12345)
    return float(np.mean(right)) if right else float("nan")


def oracle_right(gen, spec, captions: list[str], scenes: list, seed: int) -> list[bool]:
    """Whether the oracle reads exactly each caption's scene's objects in the image drawn for it."""
    if not captions:
        return []
    _, images = gen.generate(captions, seed=seed, pixels=True)
    return [a["objects"] for a in oracle_agreements(spec, scenes, images)]


def draw_eval_captions(gen, pairs, n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """(prompts, pixels) of the first `n` eval images' captions drawn as the metrics draw them:
    each image's `complete_caption` (naming every object) where the split has one."""
    prompts = [m.get("complete_caption", c) for m, c in zip(pairs.meta[:n], pairs.captions[:n])]
    _, images = gen.generate(prompts, seed=seed + 12345, pixels=True)
    return prompts, images


def generator_metrics(gen, pairs, real_images: np.ndarray, context: OracleContext | None, eval_cfg, directory: Path, seed: int) -> dict:
    """`pairs`: eval split with tokens and metadata; `real_images`: the same split's pixels;
    `context`: the oracle's (None off the embedded world). Returns `GeneratorMetrics`' fields."""
    n = min(eval_cfg.generator_captions, len(pairs))
    prompts, images = draw_eval_captions(gen, pairs, n, seed)
    metrics = text_use(gen, pairs.tokens, pairs.captions, seed)
    if context is not None:
        spec = context.spec
        scenes = [Scene.from_json(meta["scene"]) for meta in pairs.meta[:n]]
        parts = oracle_agreements(spec, scenes, images)
        metrics.update(by_group(context, scenes, [p["objects"] for p in parts], "oracle"))
        reconstructions = gen.pixels(torch.from_numpy(pairs.tokens[:n].astype(np.int64)))
        ceiling = by_group(context, scenes, [a["objects"] for a in oracle_agreements(spec, scenes, reconstructions)], "oracle_vq")
        metrics.update({k: ceiling[k] for k in ("oracle_vq_seen", "oracle_vq_heldout")})
        # which part of the scene wrong images miss (all eval captions)
        for part in AGREEMENT_PARTS:
            metrics[f"oracle_{part}_right"] = float(np.mean([p[part] for p in parts])) if parts else float("nan")
        metrics.update(by_objects_named(scenes, [p["objects"] for p in parts]))
        metrics["oracle_paired_style"] = paired_style_accuracy(gen, spec, scenes, seed)
        metrics.update(binding_accuracy(gen, spec, spec.cfg.eval_styles[0], seed))
        # the same scenes as the world LLM writes GenPair's captions, prompted as GenPair is
        llm = WorldLLM(spec, noise=0.0)
        llm_right = oracle_right(gen, spec, [llm.describe(scene, seed + i) for i, scene in enumerate(scenes)], scenes, seed + 12345)
        metrics["oracle_llm"] = float(np.mean(llm_right)) if llm_right else float("nan")
        llm_groups = by_group(context, scenes, llm_right, "oracle_llm")
        metrics.update({k: v for k, v in llm_groups.items() if not k.endswith("_count")})
        if context.genpair is not None:
            chosen = context.genpair[:n]
            right = oracle_right(gen, spec, [c for c, _ in chosen], [s for _, s in chosen], seed + 777)
            metrics["oracle_genpair"] = float(np.mean(right)) if right else float("nan")
            metrics["oracle_genpair_count"] = len(right)
    real = real_images[: len(images)]
    metrics["fd_vq"] = frechet_distance(vq_features(gen.vq, real), vq_features(gen.vq, images))
    if eval_cfg.inception_path:
        metrics["fid_inception"] = inception_fid(eval_cfg.inception_path, real, images)
    # Figure 3: eval images above the generator's images for the same captions
    count = min(8, len(images))
    samples = [(real[i], "real: " + prompts[i]) for i in range(count)] + [(images[i], "generated") for i in range(count)]
    metrics["sample_grid"] = str(write_grid(samples, directory / "samples.png", columns=count))
    return asdict(GeneratorMetrics(**metrics))
