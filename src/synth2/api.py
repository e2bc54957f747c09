"""The Python API: one function per CLI command, same names and arguments.

    import synth2
    run = synth2.open_run("runs/quick", preset="quick")
    synth2.world("data/world", preset="quick")
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from synth2 import config as config_mod
from synth2.captions.backends import make_backend
from synth2.captions.classes import load_classes
from synth2.captions.generate import generate_captions
from synth2.configtools import apply_overrides
from synth2.data.arrays import load_pairs
from synth2.data.corpus import read_captions
from synth2.data.images import read_image_file, resize_center_crop
from synth2.data.ingest import ingest as run_ingest
from synth2.data.inspect import inspect_path
from synth2.data.quality import QualityReport
from synth2.data.shards import Pair, ShardWriter
from synth2.encoding import encode_shards
from synth2.eval.captioning import score_files
from synth2.eval.diversity import DiversityConfig, embed_with_lm, embed_with_sentence_transformer, plot_diversity
from synth2.eval.diversity import diversity as run_diversity
from synth2.experiments.parallel import default_jobs
from synth2.experiments.reproduce import reproduce as run_reproduce
from synth2.experiments.sampler_sweep import sampler_sweep as run_sweep
from synth2.experiments.transfer import finetune as run_finetune
from synth2.experiments.transfer import zero_shot
from synth2.models.decode import beam_search, decode_texts
from synth2.models.device import device_of
from synth2.models.lm import FrozenLM
from synth2.models.vq import to_model_pixels
from synth2.report.arm_table import arm_scores, seed_table
from synth2.report.build import full_markdown, summary, update_readme as replace_readme_block, write_report
from synth2.report.results import Results
from synth2.run import Run
from synth2.stages.captions import world_llm
from synth2.stages.curation import clip
from synth2.stages.curation import curate as run_curate
from synth2.stages.data import check_inputs
from synth2.stages.generator import t2i, t2i_eval, token_generator
from synth2.stages.models import frozen_lm, lm, load_vq, vq
from synth2.stages.vlm import trained_vlm, vlm
from synth2.world.scene import WorldSpec
from synth2.world.splits import build_world


def open_run(root: str | Path, preset: str | None = None, config_file: str | Path | None = None, overrides=()) -> Run:
    """Open (or create) a run directory with a resolved config; see `synth2.config.resolve`."""
    root = Path(root)
    cfg = config_mod.resolve(preset, config_file, list(overrides), saved=root / "config.yaml")
    check_inputs(cfg)
    return Run(root, cfg)


def world(out: str | Path, preset: str = "quick", seed: int = 0, overrides=()) -> dict:
    """Render the embedded world's splits (shards + world.json) into `out`."""
    cfg = apply_overrides(config_mod.preset(preset), list(overrides))
    return build_world(cfg.world, seed, out)


def ingest(fmt: str, src: str | Path, out: str | Path, **options) -> dict:
    """Real data -> pair shards + ingest_report.json; see `synth2.data.ingest.ingest`."""
    return run_ingest(fmt, src, out, **options)


def inspect(path: str | Path) -> dict:
    """Statistics of a world or shard directory, plus inspect.png grids."""
    return inspect_path(path)


TRAINABLE = ("lm", "vq", "t2i", "vlm", "clip")


def train(run: Run, model: str, arm: str = "baseline", seed: int | None = None):
    """Train one model of the pipeline (its inputs first, finished stages skipped); returns its stage."""
    if model == "vlm":
        return vlm(run, arm, seed)
    stages = {"lm": lm, "vq": vq, "t2i": t2i, "clip": clip}
    if model not in stages:
        raise ValueError(f"unknown model {model!r}: {' | '.join(TRAINABLE)}")
    return stages[model](run)


def evaluate_generator(run: Run, split: str = "a"):
    """The trained generator's metrics (oracle accuracy, caption use, FD) on an eval split; returns the stage."""
    return t2i_eval(run, split)


def encode(run: Run, shards: list, out: str | Path, png: bool = False) -> int:
    """Token shards (same keys) for image shards, with the run's VQ; `png` also decodes them back."""
    model = load_vq(run)
    report = QualityReport(source=str(shards), max_bad_fraction=run.config.data.max_bad_fraction)
    count = encode_shards(model, list(map(str, shards)), Path(out), report, run.config.world.resolution, png=png)
    report.write(Path(out) / "encode_report.json")
    return count


def generate(run: Run, captions_file: str | Path, out: str | Path, pixels: bool = False, seed: int = 0) -> int:
    """Captions (JSONL with "caption", or text lines) -> token shards, plus decoded PNGs with `pixels`."""
    gen = token_generator(run)
    captions = [r["caption"] for r in read_captions(captions_file)]
    tokens, images = gen.generate(captions, seed=seed, pixels=pixels)
    with ShardWriter(out, prefix="generated") as writer:
        for i, caption in enumerate(captions):
            writer.write(Pair(f"gen_{i:07d}", caption, image=None if images is None else images[i], tokens=tokens[i].astype(np.uint16), meta={"seed": seed}))
    return len(captions)


def sampler_sweep(run: Run, split: str = "b", guidances=(1.0, 2.0, 3.0, 4.0), steps=(24,), sampler_overrides=()) -> dict:
    """The generator's oracle accuracies and FD against guidance and sampler steps, on one eval
    split. `sampler_overrides` (`sampler.key=value`) change the other decoding settings for this
    sweep only: the run's saved config keeps its own, which every later stage draws with."""
    outside = [o for o in sampler_overrides if not o.startswith("sampler.")]
    if outside:
        raise ValueError(f"a sweep's overrides set decoding settings only (sampler.key=value), got {outside}")
    return run_sweep(run, split, list(guidances), list(steps), apply_overrides(run.config, list(sampler_overrides)).sampler)


def caption(run: Run, images: list, arm: str = "baseline", seed: int | None = None) -> list[str]:
    """Caption image files with an arm's trained VLM."""
    cfg = run.config
    pixels = np.stack([resize_center_crop(read_image_file(p)[0], cfg.world.resolution) for p in images])
    with trained_vlm(run, arm, seed) as model:
        tokens = model.vq.encode(to_model_pixels(torch.from_numpy(pixels)).to(device_of(model.vq)))
        return decode_texts(model, beam_search(model, tokens, cfg.vlm.eval_prompt, cfg.eval.beams, cfg.eval.max_new_tokens))


def evaluate(run: Run, shards: str | Path, arm: str = "baseline", seed: int | None = None, limit: int | None = None) -> dict:
    """Zero-shot captioning scores of an arm's VLM on benchmark shards (e.g. an ingested Karpathy test split)."""
    return zero_shot(run, str(shards), arm, seed, limit).artifacts


def finetune(run: Run, train_shards: str | Path, eval_shards: str | Path, arm: str = "baseline", seed: int | None = None,
             limit: int | None = None) -> dict:
    """Fine-tune an arm's VLM on benchmark training pairs, then score it on `eval_shards` (Table 4's
    setting), with `run.config.finetune`'s steps, learning rate and dropout (open the run with
    `overrides=["finetune.lr=..."]` to change them)."""
    return run_finetune(run, str(train_shards), str(eval_shards), arm, seed, limit).artifacts


def curate(run: Run) -> dict:
    """SynthVLM curation of the run's caption pool: filters, synthesis, CLIPScore + SSIM, top K; exports in the stage directory."""
    result = run_curate(run)
    return {**result.artifacts, "directory": str(result.directory)}


def captions(out: str | Path, backend: str = "world", classes: str = "world", n: int = 1000, seed: int = 0, preset: str = "quick", overrides=()) -> dict:
    """Synthetic captions from class-based prompts; see `synth2.captions.generate`."""
    cfg = apply_overrides(config_mod.preset(preset), [f"captions.backend={backend}", f"captions.classes={classes}", f"captions.n={n}", f"seed={seed}", *overrides])
    spec = WorldSpec(cfg.world, seed)
    backend_impl = make_backend(cfg.captions, world_llm(cfg) if cfg.captions.backend == "world" else None)
    return generate_captions(backend_impl, load_classes(cfg.captions.classes, spec.shapes), cfg.captions, out, seed)


def score(predictions: str | Path, references: str | Path) -> dict:
    """pycocoevalcap CIDEr-D, BLEU-4, METEOR, ROUGE-L of a COCO results file against COCO captions references."""
    return score_files(predictions, references)


def arms(run_dir: str | Path, relative_to: str = "baseline") -> list[dict]:
    """Every VLM arm a run trained, per seed plus a mean row per arm with several seeds, each with
    `CIDEr_a_relative` (over `relative_to`'s CIDEr A on the same seeds)."""
    return seed_table(arm_scores(run_dir), relative_to)


def reproduce(out: str | Path, preset: str | None = "quick", config_file=None, overrides=(), jobs: int | None = None) -> dict:
    """The whole pipeline and the paper's experiments, then report.md/report.html/results.json in `out`.

    `jobs`: worker processes building independent stages side by side (None: two on a CPU with
    two or more cores, else one; `synth2.experiments.parallel`)."""
    run = open_run(out, preset=preset, config_file=config_file, overrides=overrides)
    return run_reproduce(run, default_jobs() if jobs is None else jobs).to_json()


def report(run_dir: str | Path) -> dict:
    """Render report.md and report.html again from a run's results.json (no stage runs)."""
    results = Results.read(Path(run_dir) / "results.json")
    md, html = write_report(Path(run_dir), results)
    return {"markdown": str(md), "html": str(html)}


def results_table(run_dir: str | Path) -> str:
    """The README's results table (markdown) of a run, from its results.json."""
    return summary(Results.read(Path(run_dir) / "results.json"))


def results_document(run_dir: str | Path) -> str:
    """Every table of a run's report (markdown), from its results.json."""
    return full_markdown(Results.read(Path(run_dir) / "results.json"))


def update_readme(readme: str | Path, run_dir: str | Path, table: str | None = None) -> None:
    """Write a run's results table into `readme`'s `<!-- results:PRESET -->` block (PRESET: the run's)."""
    results = Results.read(Path(run_dir) / "results.json")
    replace_readme_block(readme, results.preset, table or summary(results))


def diversity(corpora: list, run=None, lm=None, sentence_transformer=None, k: int = 0, json_out=None, plot=None, seed: int = 0, balance: bool = True, center: bool = False) -> dict:
    """Semantic diversity of caption corpora (see `synth2.eval.diversity`)."""
    texts = {}
    for path in map(Path, corpora):
        name = path.stem if path.is_file() else path.name
        texts[name] = load_pairs(path, images=False).captions if path.is_dir() else [r["caption"] for r in read_captions(path)]
    if sentence_transformer:
        embed = lambda c: embed_with_sentence_transformer(sentence_transformer, c)  # noqa: E731
    elif lm or run:
        frozen = FrozenLM.from_pretrained(lm) if lm else frozen_lm(open_run(run))
        embed = lambda c: embed_with_lm(frozen, c)  # noqa: E731
    else:
        raise ValueError("choose an embedder: --run RUN, --lm PATH or --sentence-transformer PATH")
    result = run_diversity(texts, embed, DiversityConfig(k=k, seed=seed, balance=balance, center=center))
    if json_out:
        Path(json_out).write_text(json.dumps(result, indent=2))
    if plot:
        plot_diversity(result, plot)
    return result
