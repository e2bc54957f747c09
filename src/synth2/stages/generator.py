"""The controlled generator: its training, its evaluation, and the synthetic tokens it draws.

Training does not depend on the sampler (`config.sampler`); every stage that draws with it
(`t2i_eval*`, `synthesize`, `curate`, on-the-fly VLM arms) has it in its own config.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from synth2.data.arrays import load_pairs
from synth2.errors import UserError
from synth2.eval.generator import GeneratorMetrics, OracleContext, generator_metrics
from synth2.eval.schema import field_names
from synth2.models.sampler import SamplerConfig
from synth2.progress import warn
from synth2.run import Run, StageResult, fingerprint
from synth2.stages import artifacts
from synth2.stages.captions import caption_sources, captions, llm_captions_and_scenes
from synth2.stages.data import EVAL_SPLIT_NAMES, datasets, world_spec
from synth2.stages.models import encode, frozen_lm, lm, stage_device, vq
from synth2.synthesis import TokenGenerator
from synth2.train import distributed, sharded
from synth2.train.composed_scenes import composed_scenes
from synth2.train.join_phrases import JoinPhrases, join_phrases
from synth2.train.loop import train
from synth2.train.t2i import T2IStageConfig, T2ITask, class_balance_weights, object_count_weights
from synth2.train.unseen_words import caption_variants, unseen_words
from synth2.world.scene import Scene, WorldSpec


def t2i(run: Run) -> StageResult:
    """Train the generator on the paired data's captions and token grids."""
    cfg = run.config
    data, inputs = datasets(run)
    l, v, e = lm(run), vq(run), encode(run)

    def build(directory: Path) -> dict:
        frozen = frozen_lm(run)
        paired = load_pairs(e["splits"]["paired"], images=False, tokens=True)
        tokenizer = artifacts.load_vq(v["path"])
        dist = distributed.init(cfg.device)
        weights = sampling_weights(cfg.t2i, paired.meta)
        tokens, captions = with_composed_scenes(cfg.t2i, world_spec(run), paired.tokens, paired.captions, paired.meta, cfg.seed)
        task = T2ITask(cfg.t2i, frozen, tokens, captions, tokenizer.codebook_size, dist, cfg.seed + cfg.t2i.seed_offset, weights,
                        code_factors=tokenizer.code_factors, variants=unseen_word_variants(cfg.t2i, captions, data["text_only"], cfg.seed))
        train(task, cfg.t2i.train, directory, dist, "t2i", config_to_save=cfg.t2i)
        model = task.trained_model()
        weights = sharded.full_state_dict(model) if sharded.is_sharded(task.modules) else None  # every rank gathers
        if dist.is_main:
            artifacts.save_module(directory / "model", model, cfg.t2i.model, weights, codebook_size=model.codebook_size, grid=list(model.grid),
                                  code_factors=list(model.code_factors),
                                  text_width=frozen.hidden_size)
        distributed.barrier(dist)
        return {"path": str(directory / "model")}

    return run.stage("t2i", {"t2i": cfg.t2i, "seed": cfg.seed}, inputs + [l, v, e], build)


def sampling_weights(t2i_cfg: T2IStageConfig, meta: list[dict]) -> np.ndarray | None:
    """Per-example sampling probabilities of the paired split under `t2i.balance_classes` and
    `t2i.count_weights` (None when neither is set: epochs over the data, as the paper)."""
    if not (t2i_cfg.balance_classes or t2i_cfg.count_weights):
        return None
    if not all("scene" in m for m in meta):
        raise UserError("t2i.balance_classes and t2i.count_weights need the scenes of the embedded world's paired split")
    objects = [m["scene"]["objects"] for m in meta]
    weights = np.ones(len(meta))
    if t2i_cfg.balance_classes:
        weights *= class_balance_weights([[o["shape"] for o in objs] for objs in objects])
    if t2i_cfg.count_weights:
        weights *= object_count_weights([len(objs) for objs in objects], t2i_cfg.count_weights)
    if weights.sum() <= 0:
        raise UserError(f"t2i.balance_classes={t2i_cfg.balance_classes} and t2i.count_weights={t2i_cfg.count_weights} "
                        "give every paired example weight 0")
    return weights / weights.sum()


def with_composed_scenes(t2i_cfg: T2IStageConfig, spec: WorldSpec | None, tokens: np.ndarray, captions: list[str], meta: list[dict],
                         seed: int) -> tuple[np.ndarray, list[str]]:
    """The paired token grids and captions, followed by `t2i.composed_scenes` two-object scenes
    composed from the one-object ones of the embedded world `spec` (train/composed_scenes.py). A
    preset that composes still trains on other data: without the world's scenes, or with cells that
    are not whole token blocks, the paired data comes as it is, with a warning."""
    count = t2i_cfg.composed_scenes
    if count <= 0:
        return tokens, captions
    if t2i_cfg.balance_classes or t2i_cfg.count_weights:
        raise UserError("t2i.composed_scenes adds scenes that t2i.balance_classes and t2i.count_weights do not weigh; "
                        "set t2i.composed_scenes=0 to weigh the paired scenes")
    if spec is None or not all("scene" in m for m in meta):
        warn(f"t2i.composed_scenes={count} composes the embedded world's scenes, which this run's paired data does not have; "
             "the generator trains on the paired data as it is")
        return tokens, captions
    cell, rest = divmod(tokens.shape[1], spec.cfg.grid)
    if rest or tokens.shape[2] != tokens.shape[1]:
        warn(f"t2i.composed_scenes={count} needs the world's {spec.cfg.grid}x{spec.cfg.grid} cells on whole tokens, and the "
             f"token grid is {tokens.shape[1]}x{tokens.shape[2]}; the generator trains on the paired data as it is")
        return tokens, captions
    scenes = [Scene.from_json(m["scene"]) for m in meta]
    extra_tokens, extra_captions = composed_scenes(tokens, captions, scenes, cell, count, seed)
    return np.concatenate([tokens, extra_tokens]), captions + extra_captions


def unseen_word_variants(t2i_cfg: T2IStageConfig, captions: list[str], text_only: dict[str, str], seed: int) -> list[list[str]] | None:
    """Versions of the paired captions with words from the text-only corpora that no paired
    caption uses (`t2i.unseen_words_p`; None when it is 0, or when there are no such words: a
    preset that turns it on still trains on data without text-only corpora), and with their joins
    in the corpora's wordings (`t2i.join_phrases_p`)."""
    if t2i_cfg.unseen_words_p <= 0:
        reworded = [k for k in ("unseen_connective_p", "join_phrases_p") if getattr(t2i_cfg, k) > 0]
        if reworded:
            raise UserError(f"t2i.{reworded[0]} rewords the versions t2i.unseen_words_p draws, and that is 0: set it above 0")
        return None
    corpora = [c for path in text_only.values() for c in load_pairs(path, images=False).captions]
    words, probabilities = unseen_words(captions, corpora)
    if not words:
        warn(f"t2i.unseen_words_p={t2i_cfg.unseen_words_p:g} inserts nothing: the text-only corpora ({len(corpora)} captions) "
             "use no word the paired captions do not; the generator trains on the captions as they are")
        return None
    joins = None
    if t2i_cfg.join_phrases_p > 0:
        phrases, frequencies = join_phrases(corpora)
        if not phrases:
            raise UserError(f"t2i.join_phrases_p={t2i_cfg.join_phrases_p:g}: no text-only caption ({len(corpora)}) joins two "
                            "objects named in the embedded world's words; set it to 0")
        joins = JoinPhrases(phrases, frequencies, t2i_cfg.join_phrases_p)
    return caption_variants(captions, words, probabilities, t2i_cfg.unseen_word_variants, t2i_cfg.unseen_words_max, seed,
                            t2i_cfg.unseen_connective_p, joins)


def token_generator(run: Run, sampler: SamplerConfig | None = None) -> TokenGenerator:
    """The trained generator with `sampler` (default: the config's)."""
    return artifacts.token_generator(frozen_lm(run), t2i(run)["path"], vq(run)["path"], sampler or run.config.sampler, stage_device(run))


def finished_generator(run: Run, sampler: SamplerConfig | None = None, also: tuple[str, ...] = ()) -> tuple[TokenGenerator, dict]:
    """The trained generator as the run holds it, with the results of `lm`, `vq`, `t2i` and the
    stages `also` names, for analyses: unlike `token_generator`, it never retrains a stage whose
    config differs, and raises a UserError naming those not finished."""
    done = {name: run.done(name) for name in ("lm", "vq", "t2i", *also)}
    missing = [name for name, result in done.items() if result is None]
    if missing:
        raise UserError(f"{run.root}: stage(s) {', '.join(missing)} not finished; train the generator first")
    cfg = run.config
    frozen = artifacts.load_lm(done["lm"]["path"], cfg.lm.max_text_length, cfg.lm.dtype)
    return artifacts.token_generator(frozen, done["t2i"]["path"], done["vq"]["path"], sampler or cfg.sampler), done


def t2i_eval(run: Run, split: str = "a", sampler: SamplerConfig | None = None) -> StageResult:
    """The generator's metrics (`GeneratorMetrics`) on eval split `split`, drawn with `sampler`
    (default: the config's). The config's sampler on split A is the stage the report reads,
    `t2i_eval`; other settings get a stage each, named after them, so a sweep resumes where it
    stopped."""
    cfg = run.config
    if split not in EVAL_SPLIT_NAMES:
        raise ValueError(f"eval split must be one of {EVAL_SPLIT_NAMES}, got {split!r}")
    sampler = sampler or cfg.sampler
    data, inputs = datasets(run)
    g, e = t2i(run), encode(run)
    name = "t2i_eval" if (split, sampler) == ("a", cfg.sampler) else f"t2i_eval_{split}_{sampler_name(sampler)}"

    def build(directory: Path) -> dict:
        pairs = load_pairs(e["splits"][f"eval_{split}"], images=False, tokens=True, limit=cfg.eval.max_images)
        real = load_pairs(data["eval"][split], limit=cfg.eval.max_images, resolution=cfg.world.resolution).images
        metrics = generator_metrics(token_generator(run, sampler), pairs, real, oracle_context(run), cfg.eval, directory, cfg.seed)
        (directory / "metrics.json").write_text(json.dumps(metrics, indent=2))
        return metrics

    if cfg.captions.backend == "world":
        inputs.append(captions(run))  # GenPair's captions are drawn too
    scope = {"split": split, "sampler": sampler, "captions": cfg.eval.generator_captions, "max_images": cfg.eval.max_images,
             "inception": cfg.eval.inception_path, "metrics": field_names(GeneratorMetrics)}
    return run.stage(name, {"eval": scope, "seed": cfg.seed}, inputs + [g, e], build)


def sampler_name(sampler: SamplerConfig) -> str:
    """A stage-name suffix naming every decoding setting, e.g. `steps8_g1_temp0_choice4.5`; the
    caption settings and the precision are named where they differ from the defaults, so that two
    sweeps that differ only there do not share (and keep recomputing) one stage."""
    name = f"steps{sampler.steps}_g{sampler.guidance:g}_temp{sampler.temperature:g}_choice{sampler.choice_temperature:g}"
    if sampler.schedule != "cosine":
        name += f"_{sampler.schedule}"
    if sampler.first_sentence:
        name += "_first_sentence"
    if sampler.drop_prefix != SamplerConfig.drop_prefix:
        name += f"_prefix{fingerprint(sampler.drop_prefix)[:6]}"  # a prefix is free text, not a path
    if sampler.precision != SamplerConfig.precision:
        name += f"_{sampler.precision}"
    return name


def oracle_context(run: Run) -> OracleContext | None:
    """What the generator's oracle metrics need: the paired scenes, and on the world LLM's
    captions the scenes they describe (None off the embedded world)."""
    spec = world_spec(run)
    if spec is None:
        return None
    data, _ = datasets(run)
    paired = [Scene.from_json(m["scene"]) for m in load_pairs(data["paired"], images=False).meta]
    genpair = None
    if run.config.captions.backend == "world":
        records, scenes = llm_captions_and_scenes(run)
        genpair = [(r["caption"], scene) for r, scene in zip(records, scenes) if scene is not None]
    return OracleContext.from_paired(spec, paired, genpair)


def synthesize(run: Run) -> StageResult:
    """Cached synthetic tokens for every caption-only source: text-only corpora and LLM captions."""
    cfg = run.config
    _, inputs = datasets(run)
    g, caps = t2i(run), captions(run)

    def build(directory: Path) -> dict:
        gen = token_generator(run)
        out = {}
        for name, captions_list in caption_sources(run).items():
            variants = []
            for v in range(cfg.synth.variants):
                tokens, _ = gen.generate(captions_list, seed=cfg.seed * 1000 + 17 * v + len(name), batch_size=cfg.synth.batch_size)
                variants.append(tokens)
            np.save(directory / f"{name}.tokens.npy", np.stack(variants, axis=1))
            (directory / f"{name}.captions.json").write_text(json.dumps(captions_list))
            out[name] = {"tokens": str(directory / f"{name}.tokens.npy"), "captions": str(directory / f"{name}.captions.json"), "count": len(captions_list)}
        return out

    return run.stage("synthesize", {"synth": cfg.synth, "sampler": cfg.sampler, "seed": cfg.seed}, inputs + [g, caps], build)
