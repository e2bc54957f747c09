"""The stage graph: each function runs its inputs' stages, then its own (skipped when unchanged).

    world ─┬─ captions ── lm ──┬── t2i ──┬── synthesize ──┐
           └─ vq ── encode ────┴─────────┼────────────────┴── vlm/<arm> ── report
                                         └── t2i_eval (per sampler and eval split) ──┘

Stages are plain functions from a config section and earlier artifacts to new
artifacts; `Run.stage` handles fingerprints, skipping and the manifest. Heavy
objects (models, datasets) are loaded from the stages' files by the helpers at the
bottom, so every consumer builds them the same way.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from synth2 import artifacts
from synth2.data.arrays import load_pairs
from synth2.data.corpus import read_captions
from synth2.data.quality import QualityReport
from synth2.data.shards import Pair, ShardWriter, read_pairs
from synth2.run import Run, StageResult
from synth2.train import distributed
from synth2.train.loop import train
from synth2.world.scene import Scene, WorldSpec
from synth2.world.splits import EVAL_SPLITS, VQ_IMAGES_SPLIT, build_world

logger = logging.getLogger("synth2")


# --- data -------------------------------------------------------------------------


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
            "eval": {"a": str(root / EVAL_SPLITS[0]), "b": str(root / EVAL_SPLITS[1])},
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


def captions(run: Run) -> StageResult:
    """LLM captions from class-based prompts (GenPair's text)."""
    from synth2.captions.classes import load_classes
    from synth2.captions.generate import generate_captions

    cfg = run.config
    inputs = [world(run)] if cfg.captions.backend == "world" else []

    def build(directory: Path) -> dict:
        backend = make_caption_backend(cfg)
        spec = world_spec(run) or WorldSpec(cfg.world, cfg.seed)
        classes = load_classes(cfg.captions.classes, spec.shapes)
        report = generate_captions(backend, classes, cfg.captions, directory / "llm.jsonl", cfg.seed)
        return {"path": str(directory / "llm.jsonl"), "written": report["written"]}

    return run.stage("captions", {"captions": cfg.captions, "seed": cfg.seed}, inputs, build)


def world_llm(cfg):
    """The world LLM as the captions stage configures it."""
    from synth2.world.llm import WorldLLM

    return WorldLLM(WorldSpec(cfg.world, cfg.seed), noise=cfg.captions.world_noise)


def make_caption_backend(cfg):
    """The caption backend a config asks for."""
    from synth2.captions.backends import GenerationParams, HFBackend, OpenAIBackend, WorldBackend

    c = cfg.captions
    params = GenerationParams(c.temperature, c.top_p, c.max_tokens)
    if c.backend == "world":
        return WorldBackend(world_llm(cfg), params)
    if c.backend == "openai":
        if not c.base_url or not c.model:
            raise ValueError("captions.backend=openai needs captions.base_url and captions.model")
        return OpenAIBackend(c.base_url, c.model, params, c.api_key_env, c.concurrency, c.timeout, c.max_retries)
    if c.backend == "hf":
        if not c.model:
            raise ValueError("captions.backend=hf needs captions.model (a local model directory)")
        return HFBackend(c.model, params, batch_size=c.batch_size)
    raise ValueError(f"unknown captions.backend {c.backend!r}: world | openai | hf")


# --- models -----------------------------------------------------------------------


def lm(run: Run) -> StageResult:
    """The frozen LM: a local HF model, or the embedded one pre-trained on the world's text."""
    from synth2.models.lm import FrozenLM, build_embedded_lm, train_tokenizer
    from synth2.train.lm import LMTask, perplexity

    cfg = run.config
    if cfg.lm.path:
        return run.stage("lm", {"path": cfg.lm.path}, [], lambda d: {"path": cfg.lm.path})
    data, inputs = datasets(run)
    caps = captions(run)

    def build(directory: Path) -> dict:
        texts = training_texts(run, data, caps)
        tokenizer = train_tokenizer(texts, cfg.lm.model.vocab_size)
        torch.manual_seed(cfg.seed)
        model = build_embedded_lm(cfg.lm.model, tokenizer)
        frozen = FrozenLM(model, tokenizer, cfg.lm.max_text_length)
        dist = distributed.init(cfg.device)
        task = LMTask(cfg.lm, frozen, texts, dist, cfg.seed)
        train(task, cfg.lm.train, directory, dist, "lm", config_to_save=cfg.lm)
        model.requires_grad_(False)
        frozen.save(directory / "model")
        eval_refs = [r for refs in load_pairs(data["eval"]["a"], images=False).references() for r in refs]
        ppl = perplexity(frozen, eval_refs[:2000])
        (directory / "metrics.json").write_text(json.dumps({"eval_perplexity": ppl, "train_texts": len(texts)}, indent=2))
        return {"path": str(directory / "model"), "eval_perplexity": ppl}

    return run.stage("lm", {"lm": cfg.lm, "seed": cfg.seed}, inputs + [caps], build)


def training_texts(run: Run, data: dict, caps: StageResult) -> list[str]:
    """Every training caption the world has: paired, text-only corpora, LLM captions (never eval references)."""
    texts = load_pairs(data["paired"], images=False).captions
    for path in data["text_only"].values():
        texts += load_pairs(path, images=False).captions
    texts += [r["caption"] for r in read_captions(caps["path"])]
    return texts


def vq(run: Run) -> StageResult:
    from synth2.eval.vq import evaluate_vq
    from synth2.train.vq import VQTask

    cfg = run.config
    data, inputs = datasets(run)

    def build(directory: Path) -> dict:
        if cfg.vq.pretrained:
            model_dir = Path(cfg.vq.pretrained)
            model = artifacts.load_vq(model_dir)
            source = {}
        else:
            source = {"trained_on": data["vq_images"]}
            report = QualityReport(source=data["vq_images"], max_bad_fraction=cfg.data.max_bad_fraction)
            images = load_pairs(data["vq_images"], report=report, resolution=cfg.world.resolution).images
            dist = distributed.init(cfg.device)
            task = VQTask(cfg.vq, images, dist, cfg.seed)
            train(task, cfg.vq.train, directory, dist, "vq", config_to_save=cfg.vq)
            model_dir = artifacts.save_module(directory / "model", task.model, cfg.vq.model)
            model = task.model.eval()
        metrics = evaluate_vq(model, *eval_images_and_oracle(run, data["eval"]["a"]))
        (directory / "metrics.json").write_text(json.dumps(metrics, indent=2))
        return {"path": str(model_dir), **source, **metrics}

    # the user's image source, not data["vq_images"]: that holds the run's own path, and the
    # world's images reach this stage through the world stage's fingerprint
    fingerprint = {"vq": cfg.vq, "seed": cfg.seed, "resolution": cfg.world.resolution, "images": cfg.data.vq_images or cfg.data.paired}
    return run.stage("vq", fingerprint, inputs, build)


def eval_images_and_oracle(run: Run, shards: str, limit: int | None = None):
    """(images, scenes or None, oracle or None) of an eval split."""
    from synth2.world.oracle import Oracle

    cfg = run.config
    pairs = load_pairs(shards, limit=limit or cfg.eval.max_images, resolution=cfg.world.resolution)
    spec = world_spec(run)
    if spec is None:
        return pairs.images, None, None
    return pairs.images, [Scene.from_json(m["scene"]) for m in pairs.meta], Oracle(spec)


def encode(run: Run) -> StageResult:
    """Token shards beside every image split, with the same keys (the open-muse convention)."""
    cfg = run.config
    data, inputs = datasets(run)
    v = vq(run)

    def build(directory: Path) -> dict:
        model = artifacts.load_vq(v["path"])
        splits = {"paired": data["paired"], **data["text_only"], "eval_a": data["eval"]["a"], "eval_b": data["eval"]["b"]}
        out = {}
        for name, shards in splits.items():
            report = QualityReport(source=str(shards), max_bad_fraction=cfg.data.max_bad_fraction)
            encode_shards(model, shards, directory / name, report, cfg.world.resolution)
            report.write(directory / name / "encode_report.json")
            out[name] = str(directory / name)
        return {"splits": out}

    return run.stage("encode", {"resolution": cfg.world.resolution}, inputs + [v], build)


@torch.no_grad()
def encode_shards(model, shards, out: Path, report: QualityReport | None, resolution: int, batch_size: int = 256, png: bool = False) -> int:
    """Encode every image of `shards` to tokens; write token shards (and decoded PNGs with `png`)."""
    from synth2.data.images import resize_center_crop
    from synth2.models.vq import to_model_pixels, to_uint8

    count = 0
    with ShardWriter(out, prefix="tokens", shard_size=10_000) as writer:
        batch: list[Pair] = []

        def flush():
            nonlocal count
            if not batch:
                return
            pixels = np.stack([p.image if p.image.shape[:2] == (resolution, resolution) else resize_center_crop(p.image, resolution) for p in batch])
            ids = model.encode(to_model_pixels(torch.from_numpy(pixels)))
            decoded = to_uint8(model.decode(ids)).numpy() if png else None
            for i, p in enumerate(batch):
                writer.write(Pair(p.key, p.caption, image=None if decoded is None else decoded[i], tokens=ids[i].numpy().astype(np.uint16), meta=p.meta))
            count += len(batch)
            batch.clear()

        for pair in read_pairs(shards, report=report, split=False):
            batch.append(pair)
            if len(batch) == batch_size:
                flush()
        flush()
    return count


def t2i(run: Run) -> StageResult:
    """Train the generator. The sampler is not part of this stage: changing it re-runs only the
    stages that draw with it (t2i_eval, synthesize, curate, on-the-fly VLM arms)."""
    from synth2.train.t2i import T2ITask

    cfg = run.config
    data, inputs = datasets(run)
    l, v, e = lm(run), vq(run), encode(run)

    def build(directory: Path) -> dict:
        frozen = load_frozen_lm(run)
        paired = load_pairs(e["splits"]["paired"], images=False, tokens=True)
        codebook = artifacts.load_vq(v["path"]).codebook_size
        dist = distributed.init(cfg.device)
        task = T2ITask(cfg.t2i, frozen, paired.tokens, paired.captions, codebook, dist, cfg.seed)
        train(task, cfg.t2i.train, directory, dist, "t2i", config_to_save=cfg.t2i)
        artifacts.save_module(directory / "model", task.model, cfg.t2i.model)
        return {"path": str(directory / "model")}

    training = {k: v for k, v in dataclasses.asdict(cfg.t2i).items() if k != "sampler"}
    return run.stage("t2i", {"t2i": training, "seed": cfg.seed}, inputs + [l, v, e], build)


EVAL_SPLIT_NAMES = ("a", "b")  # the keys of datasets(run)["eval"]


def t2i_eval(run: Run, split: str = "a", sampler=None) -> StageResult:
    """The generator's metrics (synth2.eval.generator) on eval split `split` ("a" or "b"), drawn
    with `sampler` (default: the config's). The config's sampler on split A is the stage the
    report reads, `t2i_eval`; other settings get a stage each, named after them, so a sweep
    resumes where it stopped."""
    from synth2.eval.generator import METRICS_VERSION, generator_metrics

    cfg = run.config
    if split not in EVAL_SPLIT_NAMES:
        raise ValueError(f"eval split must be 'a' or 'b', got {split!r}")
    sampler = sampler or cfg.t2i.sampler
    data, inputs = datasets(run)
    g, e = t2i(run), encode(run)
    name = "t2i_eval"
    if (split, sampler) != ("a", cfg.t2i.sampler):
        name += f"_{split}_steps{sampler.steps}_g{sampler.guidance:g}_temp{sampler.temperature:g}_choice{sampler.choice_temperature:g}"

    def build(directory: Path) -> dict:
        pairs = load_pairs(e["splits"][f"eval_{split}"], images=False, tokens=True, limit=cfg.eval.max_images)
        real = load_pairs(data["eval"][split], limit=cfg.eval.max_images, resolution=cfg.world.resolution).images
        metrics = generator_metrics(token_generator(run, sampler), pairs, real, world_spec(run), cfg.eval, directory, cfg.seed)
        (directory / "metrics.json").write_text(json.dumps(metrics, indent=2))
        return metrics

    scope = {"split": split, "sampler": sampler, "captions": cfg.eval.generator_captions, "max_images": cfg.eval.max_images, "inception": cfg.eval.inception_path, "metrics": METRICS_VERSION}
    return run.stage(name, {"eval": scope, "seed": cfg.seed}, inputs + [g, e], build)


def synthesize(run: Run) -> StageResult:
    """Cached synthetic tokens for every caption-only source: text-only corpora and LLM captions."""
    cfg = run.config
    data, inputs = datasets(run)
    g, caps = t2i(run), captions(run)

    def build(directory: Path) -> dict:
        gen = token_generator(run)
        out = {}
        for name, captions_list in caption_sources(run, data, caps).items():
            variants = []
            for v in range(cfg.synth.variants):
                tokens, _ = gen.generate(captions_list, seed=cfg.seed * 1000 + 17 * v + len(name), batch_size=cfg.synth.batch_size)
                variants.append(tokens)
            np.save(directory / f"{name}.tokens.npy", np.stack(variants, axis=1))
            (directory / f"{name}.captions.json").write_text(json.dumps(captions_list))
            out[name] = {"tokens": str(directory / f"{name}.tokens.npy"), "captions": str(directory / f"{name}.captions.json"), "count": len(captions_list)}
        return out

    return run.stage("synthesize", {"synth": cfg.synth, "sampler": cfg.t2i.sampler, "seed": cfg.seed}, inputs + [g, caps], build)


def caption_sources(run: Run, data: dict, caps: StageResult) -> dict[str, list[str]]:
    sources = {name: load_pairs(path, images=False).captions for name, path in data["text_only"].items()}
    sources["llm"] = [r["caption"] for r in read_captions(caps["path"])]
    return sources


# --- loading helpers ----------------------------------------------------------------


@lru_cache(maxsize=4)
def _cached_lm(path: str, max_length: int):
    return artifacts.load_lm(path, max_length)


def load_frozen_lm(run: Run):
    return _cached_lm(lm(run)["path"], run.config.lm.max_text_length)


def token_generator(run: Run, sampler=None):
    """The trained generator with `sampler` (default: the config's)."""
    from synth2.synthesis import TokenGenerator

    frozen = load_frozen_lm(run)
    vq_model = artifacts.load_vq(vq(run)["path"])
    grid = tuple(load_pairs(encode(run)["splits"]["eval_a"], images=False, tokens=True, limit=1).tokens.shape[1:])
    directory = run.stage_dir("t2i") / "model"
    model = artifacts.load_t2i(directory, vq_model.codebook_size, grid, frozen.hidden_size)
    return TokenGenerator(frozen, model, sampler or run.config.t2i.sampler, vq_model)


# --- the VLM and its evaluation -------------------------------------------------------


def arms(run: Run) -> dict:
    from synth2.experiments.arms import define_arms

    cfg = run.config
    data, _ = datasets(run)
    llm_count = captions(run)["written"]
    size = min(cfg.experiments.genpair_size or llm_count, llm_count)
    return define_arms(sorted(data["text_only"]), size, cfg.experiments.real_extra_corpus, cfg.experiments.source_prompts)


def vlm_stage_name(arm_name: str, seed: int, run_seed: int) -> str:
    """`vlm/ARM` on the run's seed, `vlm/ARM-sN` on any other seed N."""
    return f"vlm/{arm_name}" + (f"-s{seed}" if seed != run_seed else "")


def arm_and_seed(stage_name: str, run_seed: int) -> tuple[str, int]:
    """The inverse of `vlm_stage_name`."""
    arm = stage_name.removeprefix("vlm/")
    head, sep, tail = arm.rpartition("-s")
    return (head, int(tail)) if sep and tail.isdigit() else (arm, run_seed)


def vlm(run: Run, arm_name: str = "baseline", seed: int | None = None) -> StageResult:
    """Train one experiment arm's VLM, with a CIDEr curve, then caption and score both eval splits."""
    from synth2.models.vlm import VLM
    from synth2.train.vlm import VLMTask

    cfg = run.config
    seed = cfg.seed if seed is None else seed
    arm = arms(run)[arm_name]
    data, inputs = datasets(run)
    l, v, e = lm(run), vq(run), encode(run)
    synthetic = any(s.kind == "synthetic" for s in arm.sources)
    curated = any(s.data.startswith("curated_") for s in arm.sources)
    on_the_fly = synthetic and cfg.synth.mode == "on_the_fly" and not curated
    extra = [t2i(run)] if on_the_fly else ([synthesize(run)] if synthetic and not curated else [])
    if curated:
        from synth2.curate.pipeline import curate

        extra.append(curate(run))
    name = vlm_stage_name(arm_name, seed, cfg.seed)
    stage_cfg = {"vlm": cfg.vlm, "arm": arm, "seed": seed, "eval": cfg.eval, "synth": cfg.synth if synthetic else None}
    if on_the_fly:  # the cached mode's sampler is in `synthesize`
        stage_cfg["sampler"] = cfg.t2i.sampler

    def build(directory: Path) -> dict:
        frozen = load_frozen_lm(run)
        vq_model = artifacts.load_vq(v["path"])
        sources = [source_data(run, source, on_the_fly) for source in arm.sources]
        generator = token_generator(run) if on_the_fly else None
        grid = tuple(sources[0].tokens.shape[1:3]) if sources[0].tokens is not None else (generator or token_generator(run)).grid
        torch.manual_seed(seed)
        model = VLM(cfg.vlm.model, frozen, vq_model, grid)
        stage_vlm = dataclasses.replace(cfg.vlm, space=arm.space)
        dist = distributed.init(cfg.device)
        task = VLMTask(stage_vlm, model, sources, dist, seed, generator)
        eval_a = load_pairs(e["splits"]["eval_a"], images=False, tokens=True, limit=cfg.eval.curve_images)

        def curve(step: int) -> dict:
            return {"cider_a": caption_and_score(model, eval_a, cfg, directory / "curve", f"step{step}", ("CIDEr",))["CIDEr"]}

        evaluate = curve if cfg.eval.curve_every and arm_name in cfg.eval.curve_arms else None
        train_cfg = dataclasses.replace(cfg.vlm.train, eval_every=cfg.eval.curve_every)
        result = train(task, train_cfg, directory, dist, name, evaluate=evaluate, config_to_save=stage_cfg)
        artifacts.save_module(directory / "model", task.modules["vlm"], cfg.vlm.model)
        scores = {}
        for split in ("a", "b"):
            pairs = load_pairs(e["splits"][f"eval_{split}"], images=False, tokens=True, limit=cfg.eval.max_images)
            for metric, value in caption_and_score(model, pairs, cfg, directory, f"eval_{split}").items():
                scores[f"{metric}_{split}"] = value
        scores["gate_openness"] = model.gate_openness()
        scores["train_seconds"] = result.seconds
        scores["steps_per_s"] = cfg.vlm.train.steps / max(result.seconds, 1e-9)
        (directory / "scores.json").write_text(json.dumps(scores, indent=2))
        return scores

    return run.stage(name, stage_cfg, inputs + [l, v, e, *extra], build)


def source_data(run: Run, source, on_the_fly: bool):
    """Captions and token grids of one VLM source: real (encoded once), cached synthetic, curated, or on the fly."""
    from synth2.train.vlm import SourceData

    if source.kind == "real":
        pairs = load_pairs(encode(run)["splits"][source.data], images=False, tokens=True)
        return SourceData(source.data, source, pairs.captions, pairs.tokens)
    if source.data.startswith("curated_"):
        from synth2.curate.pipeline import curate

        cached = curate(run)["sets"][source.data.removeprefix("curated_")]
    elif on_the_fly:
        data, _ = datasets(run)
        return SourceData(source.data, source, caption_sources(run, data, captions(run))[source.data], None)
    else:
        cached = synthesize(run)[source.data]
    return SourceData(source.data, source, json.loads(Path(cached["captions"]).read_text()), np.load(cached["tokens"]))


def caption_and_score(model, pairs, cfg, directory: Path, name: str, metrics=None) -> dict:
    """Caption `pairs`' token grids, write predictions + references, score the files."""
    from synth2.eval.captioning import METRICS, evaluate_captions
    from synth2.models.decode import beam_search, decode_texts

    was_training = model.training
    model.eval()
    predictions = []
    for start in range(0, len(pairs), 64):
        tokens = torch.from_numpy(pairs.tokens[start : start + 64]).long()
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
    from synth2.models.vlm import VLM

    cfg = run.config
    _, inputs = datasets(run)
    l, v, e = lm(run), vq(run), encode(run)

    def build(directory: Path) -> dict:
        splits = {split: load_pairs(e["splits"][f"eval_{split}"], images=False, tokens=True, limit=cfg.eval.max_images) for split in ("a", "b")}
        torch.manual_seed(cfg.seed)
        model = VLM(cfg.vlm.model, load_frozen_lm(run), artifacts.load_vq(v["path"]), tuple(splits["a"].tokens.shape[1:3]))
        out: dict = {}
        for split, pairs in splits.items():
            out.update({f"{metric}_{split}": value for metric, value in caption_and_score(model, pairs, cfg, directory, f"eval_{split}").items()})
        out["caption"] = json.loads((directory / "eval_a.predictions.json").read_text())[0]["caption"]
        return out

    # with closed gates the VLM's own settings cannot change a caption: only the decoding can
    decoding = {"max_images": cfg.eval.max_images, "beams": cfg.eval.beams, "max_new_tokens": cfg.eval.max_new_tokens, "prompt": cfg.vlm.eval_prompt}
    return run.stage("eval/blind", decoding, inputs + [l, v, e], build)


def load_vlm(run: Run, stage: StageResult):
    """A trained arm's VLM (frozen LM and VQ from the run, trained parts from the stage)."""
    from safetensors.torch import load_file

    from synth2.models.vlm import VLM
    from synth2.train.vlm import _Trainable

    vq_model = artifacts.load_vq(vq(run)["path"])
    grid = tuple(load_pairs(encode(run)["splits"]["eval_a"], images=False, tokens=True, limit=1).tokens.shape[1:])
    model = VLM(run.config.vlm.model, load_frozen_lm(run), vq_model, grid)
    _Trainable(model).load_state_dict(load_file(stage.directory / "model" / "model.safetensors"))
    return model.eval()
