"""`synth2 reproduce`: the whole pipeline and the paper's experiments, then the report.

Tables and figures (paper numbering):
- Table 2: Baseline vs Synth² (text-only captions + synthetic images) vs Gold (true images);
- Tables 3 and 8: + GenPair vs + as many extra real pairs, with caption concentration and entropy;
- Table 5: training steps/s and CIDEr in embedding space vs pixel space;
- Figure 6: CIDEr against training steps for Baseline and Synth² (+GenPair), mean ± std over seeds;
- Figure 3: eval images beside the generator's images for the same captions;
and the tokenizer's and generator's own metrics.
"""

from __future__ import annotations

import json
import time

import numpy as np

from synth2 import pipeline
from synth2.hardware import describe as describe_hardware
from synth2.progress import console, read_metrics
from synth2.run import Run
from synth2.eval.generator import ORACLE_KEYS
from synth2.world.oracle import ERROR_CAUSES

# the VQ oracle metrics results.json carries: accuracy, then the errors by cause
VQ_ORACLE_KEYS = ("oracle_accuracy", "oracle_accuracy_by_shape") + tuple(f"oracle_{cause}_errors" for cause in ERROR_CAUSES)


def looking(scores: dict) -> dict:
    """How much an arm looks at its images: distinct captions on eval A and gate openness
    (None for arms trained before synth2 recorded them)."""
    return {"distinct_a": scores.get("distinct_a"), "gate_openness": scores.get("gate_openness")}


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


def figure6(run: Run) -> dict:
    cfg = run.config
    curves = {"baseline": [], "synth2": []}
    steps: list[int] = []
    for seed in cfg.experiments.seeds:
        for arm, key in (("baseline", "baseline"), ("genpair", "synth2")):
            stage = pipeline.vlm(run, arm, seed)
            steps, values = curve(run, stage.name)
            curves[key].append(values)
    out: dict = {"steps": steps}
    for key, runs in curves.items():
        array = np.array(runs)
        out[f"{key}_mean"] = array.mean(0).tolist()
        out[f"{key}_std"] = array.std(0).tolist()
    out["parity_fraction"] = parity_fraction(steps, np.array(out["baseline_mean"]), np.array(out["synth2_mean"]))
    return out


def diversity_table(run: Run) -> dict:
    """Tables 3/8's concentration and entropy: paired captions, LLM captions, text-only corpora, co-clustered.

    Two embedders, both reported: the frozen LM's mean-pooled states (the paper's kind of
    measure) and, on the embedded world, the shapes and colours each caption mentions
    (content only). Tables 3 and 8 show the content measure when the world is used,
    because the small LM's states separate corpora by writing style first.
    """
    from synth2.eval.diversity import diversity, embed_with_lm, embed_with_world_concepts, plot_diversity

    data, _ = pipeline.datasets(run)
    caps = pipeline.captions(run)
    corpora = {"paired": pipeline.load_pairs(data["paired"], images=False).captions}
    corpora.update(pipeline.caption_sources(run, data, caps))
    frozen = pipeline.load_frozen_lm(run)
    directory = run.root / "report"
    directory.mkdir(exist_ok=True)
    results = {"lm": diversity(corpora, lambda c: embed_with_lm(frozen, c), run.config.diversity)}
    spec = pipeline.world_spec(run)
    if spec is not None:
        results["concepts"] = diversity(corpora, lambda c: embed_with_world_concepts(c, spec.shapes, spec.colours), run.config.diversity)
    for name, result in results.items():
        plot_diversity(result, directory / f"diversity_{name}.png")
    (directory / "diversity.json").write_text(json.dumps(results, indent=2))
    main = "concepts" if "concepts" in results else "lm"
    return {**results[main], "embedder": main, "by_embedder": results}


def reproduce(run: Run) -> dict:
    """Run everything (finished stages are skipped) and write results.json, report.md, report.html."""
    from synth2.report.build import write_report

    cfg = run.config
    started = time.time()
    v = pipeline.vq(run)
    g = pipeline.t2i_eval(run)
    seed = cfg.seed
    names = ("baseline", "synth2", "gold", "genpair", "real_extra", "genpair_pixel", "curated_topk", "curated_random", "curated_all")
    arm = {name: pipeline.vlm(run, name, seed).artifacts for name in names}
    from synth2.curate.pipeline import clip, curate

    curation = curate(run).artifacts
    floor = pipeline.blind(run).artifacts
    fig6 = figure6(run)
    div = diversity_table(run)
    corpus_of = {"baseline": "paired", "genpair": "llm", "real_extra": cfg.experiments.real_extra_corpus}
    results = {
        "preset": cfg.preset,
        "seed": seed,  # the tables' arms; Figure 6 runs every one of `seeds`
        "seeds": list(cfg.experiments.seeds),
        "hardware": describe_hardware(),
        "steps": {"vq": cfg.vq.train.steps, "t2i": cfg.t2i.train.steps, "vlm": cfg.vlm.train.steps},
        "table2": {k: {"cider_a": arm[k]["CIDEr_a"], "cider_b": arm[k]["CIDEr_b"], **looking(arm[k])} for k in ("baseline", "synth2", "gold")},
        "blind": {"caption": floor["caption"], "cider_a": floor["CIDEr_a"], "cider_b": floor["CIDEr_b"], "distinct_a": floor["distinct_a"]},
        "table3": {
            k: {
                "cider_a": arm[k]["CIDEr_a"],
                **looking(arm[k]),
                "concentration_top3": div["corpora"][corpus_of[k]]["concentration_top3"],
                "concentration_top5": div["corpora"][corpus_of[k]]["concentration_top5"],
                "entropy": div["corpora"][corpus_of[k]]["entropy"],
            }
            for k in ("baseline", "genpair", "real_extra")
        },
        "table5": {
            "embedding": {"steps_per_s": arm["genpair"]["steps_per_s"], "cider_a": arm["genpair"]["CIDEr_a"]},
            "pixel": {"steps_per_s": arm["genpair_pixel"]["steps_per_s"], "cider_a": arm["genpair_pixel"]["CIDEr_a"]},
        },
        "figure6": fig6,
        "diversity": {
            "embedder": div["embedder"],
            "centred": cfg.diversity.center,
            **{
                embedder: {"k": d["k"], "elbow_k": d["elbow_k"], **{n: {k: c[k] for k in ("concentration_top3", "concentration_top5", "entropy")} for n, c in d["corpora"].items()}}
                for embedder, d in div["by_embedder"].items()
            },
        },
        "curation": {
            "auc": clip(run)["auc"] if not cfg.clip.hf_path else None,
            "k": curation["k"],
            "pool": curation["pool"],
            "after_filters": curation["after_filters"],
            "filter_rejects": curation["filter_rejects"],
            "mean_scores": curation["mean_scores"],
            # on the embedded world: the share of each selection's images the oracle reads right
            "oracle_right": curation.get("oracle_right"),
            "topk_cider_a": arm["curated_topk"]["CIDEr_a"],
            "random_cider_a": arm["curated_random"]["CIDEr_a"],
            "all_cider_a": arm["curated_all"]["CIDEr_a"],
        },
        "generator": {k: g.artifacts[k] for k in ORACLE_KEYS + ("masked_token_accuracy", "masked_token_accuracy_shuffled_captions", "text_information_nats", "fd_vq") if k in g.artifacts},
        "vq": {k: v.artifacts[k] for k in ("psnr", "ssim", "codebook_usage", "perplexity", "token_stability") + VQ_ORACLE_KEYS if k in v.artifacts},
        "arms": arm,
    }
    results["claims"] = claims(results)
    results["wall_seconds"] = round(time.time() - started, 1)
    results["stage_seconds"] = {name: entry.get("seconds") for name, entry in run.manifest()["stages"].items()}
    # wall_seconds is this invocation only (seconds when a rerun skips finished stages); the
    # stages keep the time they took when they ran, so their sum is the run's compute time
    results["compute_seconds"] = round(sum(v for v in results["stage_seconds"].values() if v), 1)
    (run.root / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    write_report(run, results)
    console.log(f"report: {run.root / 'report.md'}  {run.root / 'report.html'}")
    return results


def claims(results: dict) -> dict:
    """The paper's claims as checks on this run's numbers (no thresholds tuned to pass)."""
    t2, t3, t5, f6 = results["table2"], results["table3"], results["table5"], results["figure6"]
    base = t3["baseline"]["cider_a"]
    return {
        "genpair_gain_over_baseline": (t3["genpair"]["cider_a"] - base) / base if base else None,
        "synth2_share_of_gold": t2["synth2"]["cider_a"] / t2["gold"]["cider_a"] if t2["gold"]["cider_a"] else None,
        "parity_fraction": f6["parity_fraction"],
        "embedding_over_pixel_speed": t5["embedding"]["steps_per_s"] / t5["pixel"]["steps_per_s"],
        "targets": {
            "genpair_gain_over_baseline": ">= 0.17",
            "synth2_share_of_gold": ">= 0.90",
            "parity_fraction": "<= 0.33",
            "embedding_over_pixel_speed": ">= 1.25",
        },
    }
