"""The LLM captions stage (GenPair's text), and the caption corpora other stages read."""

from __future__ import annotations

from pathlib import Path

from synth2.captions.backends import make_backend
from synth2.captions.classes import load_classes
from synth2.captions.generate import generate_captions
from synth2.data.arrays import load_pairs
from synth2.data.corpus import read_captions
from synth2.run import Run, StageResult
from synth2.stages.data import datasets, world
from synth2.world.llm import WorldLLM
from synth2.world.scene import WorldSpec


def world_llm(cfg) -> WorldLLM:
    """The world LLM as the captions stage configures it."""
    return WorldLLM(WorldSpec(cfg.world, cfg.seed), noise=cfg.captions.world_noise)


def captions(run: Run) -> StageResult:
    """LLM captions from class-based prompts."""
    cfg = run.config
    inputs = [world(run)] if cfg.captions.backend == "world" else []

    def build(directory: Path) -> dict:
        backend = make_backend(cfg.captions, world_llm(cfg) if cfg.captions.backend == "world" else None)
        classes = load_classes(cfg.captions.classes, WorldSpec(cfg.world, cfg.seed).shapes)
        report = generate_captions(backend, classes, cfg.captions, directory / "llm.jsonl", cfg.seed)
        return {"path": str(directory / "llm.jsonl"), "written": report["written"]}

    return run.stage("captions", {"captions": cfg.captions, "seed": cfg.seed}, inputs, build)


def llm_captions(run: Run) -> list[str]:
    return [r["caption"] for r in read_captions(captions(run)["path"])]


def llm_captions_and_scenes(run: Run) -> tuple[list[dict], list]:
    """The LLM caption records and the scene behind each (None where the world LLM, as
    configured, would not have written that caption)."""
    records = read_captions(captions(run)["path"])
    return records, world_llm(run.config).described_scenes(records, run.config.captions.prompt)


def caption_sources(run: Run) -> dict[str, list[str]]:
    """Every caption-only source: the text-only corpora and the LLM captions ("llm")."""
    return {name: caption_source(run, name) for name in [*datasets(run)[0]["text_only"], "llm"]}


def caption_source(run: Run, name: str) -> list[str]:
    """One caption-only source's captions: a text-only corpus, or "llm". A VLM arm reads only
    its own: a text-only corpus's captions take seconds to read out of its image shards."""
    if name == "llm":
        return llm_captions(run)
    return load_pairs(datasets(run)[0]["text_only"][name], images=False).captions


def lm_texts(run: Run) -> list[str]:
    """What the embedded LM reads: every training caption of the run (paired, text-only corpora,
    LLM captions) and, on the embedded world, its web text in every style; never eval references."""
    data, _ = datasets(run)
    texts = load_pairs(data["paired"], images=False).captions
    for captions_list in caption_sources(run).values():
        texts += captions_list
    if data["lm_text"]:
        texts += [r["caption"] for r in read_captions(data["lm_text"])]
    return texts
