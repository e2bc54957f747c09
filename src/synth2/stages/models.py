"""The frozen models every arm shares: the LM, the VQ tokenizer, and the data's token shards."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from synth2.data.arrays import load_pairs
from synth2.data.quality import QualityReport
from synth2.encoding import encode_shards
from synth2.eval.vq import evaluate_vq
from synth2.models.lm import FrozenLM, build_embedded_lm, train_tokenizer
from synth2.run import Run, StageResult
from synth2.stages import artifacts
from synth2.stages.captions import captions, lm_texts
from synth2.stages.data import EVAL_SPLIT_NAMES, datasets, eval_images_and_oracle, image_stream, stream_fingerprint
from synth2.train import distributed
from synth2.train.lm import LMTask, perplexity
from synth2.train.loop import train
from synth2.train.vq import VQTask


def lm(run: Run) -> StageResult:
    """The frozen LM: a local HF model, or the embedded one pre-trained on the world's text."""
    cfg = run.config
    if cfg.lm.path:
        # every stage reads the LM at this text length and dtype (frozen_lm), so they are part of it
        read_as = {"path": cfg.lm.path, "max_text_length": cfg.lm.max_text_length, "dtype": cfg.lm.dtype}
        return run.stage("lm", read_as, [], lambda d: {"path": cfg.lm.path})
    data, inputs = datasets(run)
    caps = captions(run)

    def build(directory: Path) -> dict:
        texts = lm_texts(run)
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


def stage_device(run: Run) -> torch.device:
    """The device the run's stages put their models on (`device`; `auto` = this process's GPU when CUDA is present)."""
    return distributed.resolve_device(run.config.device, distributed.local_rank())


def frozen_lm(run: Run) -> FrozenLM:
    """The run's frozen LM (loaded once per process and shared), on the stages' device."""
    return artifacts.load_lm(lm(run)["path"], run.config.lm.max_text_length, run.config.lm.dtype).to(stage_device(run))


def vq(run: Run) -> StageResult:
    cfg = run.config
    data, inputs = datasets(run)

    def build(directory: Path) -> dict:
        if cfg.vq.pretrained:
            model_dir = Path(cfg.vq.pretrained)
            model = artifacts.load_vq(model_dir)
            source = {}
        else:
            source = {"trained_on": data["vq_images"]}
            dist = distributed.init(cfg.device)
            if cfg.data.stream:
                images = image_stream(run, data["vq_images"], cfg.vq.train.batch_size, dist)
            else:
                report = QualityReport(source=data["vq_images"], max_bad_fraction=cfg.data.max_bad_fraction)
                images = load_pairs(data["vq_images"], report=report, resolution=cfg.world.resolution).images
            task = VQTask(cfg.vq, images, dist, cfg.seed)
            train(task, cfg.vq.train, directory, dist, "vq", config_to_save=cfg.vq)
            model_dir = artifacts.save_module(directory / "model", task.model, cfg.vq.model)
            model = task.model.eval()
        metrics = evaluate_vq(model, *eval_images_and_oracle(run, data["eval"]["a"]))
        (directory / "metrics.json").write_text(json.dumps(metrics, indent=2))
        return {"path": str(model_dir), **source, **metrics}

    # the user's image source, not data["vq_images"]: that holds the run's own path, and the
    # world's images reach this stage through the world stage's fingerprint
    fingerprint = {"vq": cfg.vq, "seed": cfg.seed, "resolution": cfg.world.resolution, "images": cfg.data.vq_images or cfg.data.paired,
                   **stream_fingerprint(cfg)}
    return run.stage("vq", fingerprint, inputs, build)


def load_vq(run: Run) -> torch.nn.Module:
    return artifacts.load_vq(vq(run)["path"]).to(stage_device(run))


def encode(run: Run) -> StageResult:
    """Token shards beside the paired and eval image splits, with the same keys (the open-muse
    convention): what the generator and every arm's evaluation read."""
    data, _ = datasets(run)
    return _encode_stage(run, "encode", {"paired": data["paired"], **{f"eval_{s}": data["eval"][s] for s in EVAL_SPLIT_NAMES}})


def encode_text_only(run: Run) -> StageResult:
    """Token shards beside the text-only corpora's images, which only the arms that train on
    them as real pairs read (gold, real_extra). A stage of its own, so that the generator, on
    the pipeline's critical path, does not wait for corpora many times the paired data."""
    data, _ = datasets(run)
    return _encode_stage(run, "encode_text_only", dict(data["text_only"]))


def token_stage(run: Run, split: str) -> StageResult:
    """The stage that encodes a real image split: "paired", "eval_a", ... or a text-only corpus."""
    return encode_text_only(run) if split in datasets(run)[0]["text_only"] else encode(run)


def real_tokens(run: Run, split: str) -> str:
    """The token shards of a real image split."""
    return token_stage(run, split)["splits"][split]


def _encode_stage(run: Run, name: str, splits: dict) -> StageResult:
    cfg = run.config
    _, inputs = datasets(run)
    v = vq(run)

    def build(directory: Path) -> dict:
        model = load_vq(run)
        out = {}
        for split, shards in splits.items():
            report = QualityReport(source=str(shards), max_bad_fraction=cfg.data.max_bad_fraction)
            encode_shards(model, shards, directory / split, report, cfg.world.resolution)
            report.write(directory / split / "encode_report.json")
            out[split] = str(directory / split)
        return {"splits": out}

    return run.stage(name, {"resolution": cfg.world.resolution}, inputs + [v], build)


def token_grid(run: Run) -> tuple[int, int]:
    """(h, w) of the run's token grids."""
    return tuple(load_pairs(encode(run)["splits"]["eval_a"], images=False, tokens=True, limit=1).tokens.shape[1:])
