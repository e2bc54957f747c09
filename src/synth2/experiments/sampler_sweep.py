"""The generator's metrics against the sampler's guidance scale and step count.

MUSE (and Synth², which samples with guidance 4) choose these by such a sweep. Sweep on
eval split B and report on split A, so that the choice is not tuned on the numbers the
report quotes. Each setting is its own `t2i_eval_*` stage: a rerun skips finished
settings and an interrupted sweep resumes at the next one.
"""

from __future__ import annotations

import dataclasses
import json

from synth2.eval.generator import GeneratorMetrics
from synth2.models.sampler import SamplerConfig
from synth2.report.plots import plot_sampler_sweep
from synth2.run import Run
from synth2.stages.generator import t2i_eval

# what a sweep tabulates: the generator's oracle metrics and its Fréchet distances
SWEEP_KEYS = tuple(k for k in GeneratorMetrics.__dataclass_fields__ if k.startswith("oracle") and not k.endswith("_count")) + ("fd_vq", "fid_inception")


def sampler_sweep(run: Run, split: str, guidances: list[float], steps: list[int], base: SamplerConfig | None = None) -> dict:
    """One row per (steps, guidance) with the generator's metrics on eval split `split`, the other
    decoding settings taken from `base` (default: the run's); writes `sampler_sweep_<split>.json`
    and `.png` in the run directory."""
    if not guidances or not steps:
        raise ValueError("a sampler sweep needs at least one guidance scale and one step count")
    base = base or run.config.sampler
    rows = []
    for step_count in steps:
        for guidance in guidances:
            sampler = dataclasses.replace(base, steps=step_count, guidance=guidance)
            metrics = t2i_eval(run, split, sampler).artifacts
            rows.append({"steps": step_count, "guidance": guidance, **{k: metrics[k] for k in SWEEP_KEYS if k in metrics}})
    result = {"split": split, "sampler": dataclasses.asdict(base), "captions": run.config.eval.generator_captions, "rows": rows}
    stem = run.root / f"sampler_sweep_{split}"
    result["plot"] = str(plot_sampler_sweep(rows, stem.with_suffix(".png"), split))
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2))
    result["json"] = str(stem.with_suffix(".json"))
    return result
