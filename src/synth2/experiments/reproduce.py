"""`synth2 reproduce`: the whole pipeline and the paper's experiments, then the report.

Tables and figures (paper numbering; declared in `synth2.report.results`):
- Table 2: Baseline vs Synth² (text-only captions + synthetic images) vs Gold (true images);
- Tables 3 and 8: + GenPair vs + as many extra real pairs, with caption concentration and entropy;
- Table 5: training steps/s and CIDEr in embedding space vs pixel space;
- Figure 6: CIDEr against training steps for Baseline and Synth² (+GenPair), mean ± std over seeds;
- Figure 3: eval images beside the generator's images for the same captions;
and the tokenizer's and generator's own metrics, and SynthVLM curation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from synth2.eval.generator import GeneratorMetrics
from synth2.eval.schema import reported
from synth2.eval.vq import VQMetrics
from synth2.experiments.parallel import Target, build_in_parallel, threads_per_job
from synth2.hardware import describe as describe_hardware
from synth2.progress import console, read_metrics
from synth2.report.build import write_report
from synth2.report.results import CURATED_ARMS, CURVE_ARMS, Results, arm_row, arm_tables, claims, seed_mean, table_arms
from synth2.run import Run
from synth2.stages.arms import run_arms, skipped_arms
from synth2.stages.curation import clip, curate
from synth2.stages.data import world_spec
from synth2.stages.diversity import caption_diversity
from synth2.stages.generator import t2i_eval
from synth2.stages.models import lm, vq
from synth2.stages.vlm import blind, vlm


def curve(run: Run, stage: str) -> tuple[list[int], list[float]]:
    points = [(m["step"], m["eval/cider_a"]) for m in read_metrics(run.stage_dir(stage) / "metrics.jsonl") if "eval/cider_a" in m]
    return [p[0] for p in points], [p[1] for p in points]


def parity_fraction(steps: list[int], baseline: np.ndarray, synth: np.ndarray) -> float | None:
    """Share of Baseline's steps at which Synth² first reaches Baseline's final CIDEr (None: never)."""
    target = baseline[-1]
    for step, value in zip(steps, synth):
        if value >= target:
            return step / steps[-1]
    return None


def last_quarter_gain(steps: list[int], values: np.ndarray) -> float | None:
    """Relative CIDEr gain over a curve's last quarter of steps: from the last point at or before
    3/4 of the final step to the final point (None: no such earlier point). The protocol trains
    until this is small for Baseline, the paper's "until it plateaus"."""
    earlier = [i for i, step in enumerate(steps) if step <= 0.75 * steps[-1]]
    if not earlier or values[earlier[-1]] <= 0:
        return None
    start = values[earlier[-1]]
    return float((values[-1] - start) / start)


def figure6(run: Run) -> dict:
    """CIDEr curves of Baseline and Synth² (+GenPair), mean ± std over `experiments.seeds`."""
    curves: dict[str, list] = {arm: [] for arm in CURVE_ARMS}
    steps: list[int] = []
    for seed in run.config.experiments.seeds:
        for arm in CURVE_ARMS:
            steps, values = curve(run, vlm(run, arm, seed).name)
            curves[arm].append(values)
    out: dict = {"steps": steps}
    for arm, runs in curves.items():
        array = np.array(runs)
        out[f"{arm}_mean"] = array.mean(0).tolist()
        out[f"{arm}_std"] = array.std(0).tolist()
    baseline, genpair = CURVE_ARMS
    out["baseline_last_quarter_gain"] = last_quarter_gain(steps, np.array(out[f"{baseline}_mean"]))
    out["parity_fraction"] = parity_fraction(steps, np.array(out[f"{baseline}_mean"]), np.array(out[f"{genpair}_mean"]))
    return out


def diversity_table(run: Run) -> dict:
    """Tables 3/8's concentration and entropy (the `diversity` stage), by the content embedder when
    the world is used, because the small LM's states separate corpora by writing style first."""
    results = json.loads(Path(caption_diversity(run)["results"]).read_text())
    main = "concepts" if "concepts" in results else "lm"
    return {**results[main], "embedder": main, "by_embedder": results}


def added_corpus(run: Run) -> dict[str, str]:
    """The caption corpus each arm adds to the paired data (Baseline: the paired captions)."""
    return {"baseline": "paired", "genpair": "llm", "real_extra": run.config.experiments.real_extra_corpus}


def table_seeds(run: Run) -> list[int]:
    cfg = run.config
    return list(cfg.experiments.seeds) if cfg.experiments.table_seeds else [cfg.seed]


def schedule(run: Run) -> Iterator[Target]:
    """The stages reproduce reads, in the order parallel workers take them: the tokenizer beside
    the LM and CLIP (they read no image tokens), then the generator beside the caption diversity
    and the arms that need no generator, then the arms that train on its images. The generator is
    taken as soon as the tokenizer is done, before the caption diversity: every synthetic arm
    waits for it, so any stage taken before it lengthens the run.

    Those first stages are yielded before the arms, which need the world and the LLM captions to
    be sized: the workers then start (a fresh interpreter each, seconds of imports) while this
    process builds the world."""
    text: Target = (lm, ()) if run.config.clip.hf_path else (clip, ())  # CLIP trains on the LM's states: one worker builds both
    yield from [(vq, ()), text, (t2i_eval, ()), (caption_diversity, ())]
    available = run_arms(run)
    arms = [(name, seed) for seed in table_seeds(run) for name in table_arms(world_spec(run) is not None, available)]
    draws = {name for name, arm in available.items() if arm.synthetic}  # curated sets are synthetic too
    yield from [(vlm, (name, seed)) for name, seed in arms if name not in draws]
    yield (blind, ())
    yield from [(vlm, (name, seed)) for name, seed in arms if name in draws]


def reproduce(run: Run, jobs: int = 1) -> Results:
    """Run everything (finished stages are skipped) and write results.json, report.md, report.html.

    `jobs` > 1 builds the stages in that many worker processes first (`experiments.parallel`),
    each with an equal share of the torch threads; the results are then assembled here."""
    cfg = run.config
    started = time.time()
    if jobs > 1:
        # a worker may be building a stage the schedule reads (the world): wait for it
        build_in_parallel(run, schedule(Run(run.root, cfg, wait_for_writers=True)), jobs)
    v = vq(run)
    g = t2i_eval(run)
    seeds = table_seeds(run)
    world = world_spec(run) is not None
    available = run_arms(run)
    skipped = skipped_arms(run)
    for name, why in skipped.items():
        console.log(f"arm {name} skipped: {why}")
    per_seed = {seed: {name: vlm(run, name, seed).artifacts for name in table_arms(world, available)} for seed in seeds}
    scores = per_seed[cfg.seed] if cfg.seed in per_seed else per_seed[seeds[0]]
    curation = curate(run).artifacts
    floor = blind(run).artifacts
    fig6 = figure6(run)
    div = diversity_table(run)
    corpus_of = added_corpus(run)
    by_seed = {
        seed: {table.key: {arm: arm_row(table, arms[arm], div["corpora"].get(corpus_of.get(arm))) for arm in table.arms} for table in arm_tables(world, available)}
        for seed, arms in per_seed.items()
    }
    tables = {table.key: {arm: seed_mean([by_seed[s][table.key][arm] for s in seeds]) for arm in table.arms} for table in arm_tables(world, available)}
    results = Results(
        preset=cfg.preset,
        seed=cfg.seed,
        seeds=list(cfg.experiments.seeds),
        table_seeds=seeds,
        hardware=describe_hardware(jobs, threads_per_job(jobs)),
        steps={"vq": cfg.vq.train.steps, "t2i": cfg.t2i.train.steps, "vlm": cfg.vlm.train.steps},
        tables=tables,
        arm_data={name: arm.data for name, arm in available.items()},
        skipped_arms=skipped,
        blind={"caption": floor["caption"], "cider_a": floor["CIDEr_a"], "cider_b": floor["CIDEr_b"], "distinct_a": floor["distinct_a"]},
        figure6=fig6,
        diversity={
            "embedder": div["embedder"],
            "centred": cfg.diversity.center,
            **{
                embedder: {"k": d["k"], "elbow_k": d["elbow_k"], **{n: {k: c[k] for k in ("concentration_top3", "concentration_top5", "entropy")} for n, c in d["corpora"].items()}}
                for embedder, d in div["by_embedder"].items()
            },
        },
        curation={
            "auc": clip(run)["auc"] if not cfg.clip.hf_path else None,
            "k": curation["k"],
            "pool": curation["pool"],
            "after_filters": curation["after_filters"],
            "filter_rejects": curation["filter_rejects"],
            "mean_scores": curation["mean_scores"],
            # on the embedded world: the share of each selection's images the oracle reads right
            "oracle_right": curation.get("oracle_right"),
            **{f"{which}_cider_a": scores[arm]["CIDEr_a"] for which, arm in CURATED_ARMS.items()},
        },
        generator=reported(GeneratorMetrics(**g.artifacts)),
        vq=reported(VQMetrics(**{k: v.artifacts.get(k) for k in VQMetrics.__dataclass_fields__})),
        arms=scores,
        claims=claims(tables, fig6, {seed: t["table3"] for seed, t in by_seed.items()}),
    )
    results.wall_seconds = round(time.time() - started, 1)
    results.stage_seconds = {name: entry.get("seconds") for name, entry in run.manifest()["stages"].items()}
    # wall_seconds is this invocation only (seconds when a rerun skips finished stages); the
    # stages keep the time they took when they ran, so their sum is the run's compute time
    results.compute_seconds = round(sum(s for s in results.stage_seconds.values() if s), 1)
    results.write(run.root / "results.json")
    write_report(run.root, results)
    console.log(f"report: {run.root / 'report.md'}  {run.root / 'report.html'}")
    return results
