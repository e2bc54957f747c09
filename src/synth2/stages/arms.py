"""The paper's experiment arms as data (which sources each VLM trains on), and their stage names.

- baseline: the paired data only (the paper's CCv2 baseline);
- synth2: + the text-only corpora's captions with synthetic images (Table 2);
- gold: + the same captions with their true images (Table 2's upper bound);
- genpair: + LLM captions with synthetic images (Table 3; "Synth²" in Figure 6);
- real_extra: + as many extra real pairs from a text-only corpus (Table 3, rows 3-4);
- genpair_pixel: genpair with synthetic tokens rendered to pixels and re-encoded (Table 5);
- curated_topk / curated_random / curated_all: the GenPair pool curated SynthVLM-style.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from synth2.curate.curation import SELECTIONS
from synth2.run import Run
from synth2.stages.captions import captions
from synth2.stages.data import datasets
from synth2.train.vlm import SourceConfig

CURATED_PREFIX = "curated_"


@dataclass(frozen=True)
class Arm:
    name: str
    data: str  # what it trains on, in words (the report's tables)
    sources: list[SourceConfig]
    space: Literal["embedding", "pixel"] = "embedding"

    @property
    def synthetic(self) -> bool:
        return any(s.kind == "synthetic" for s in self.sources)

    @property
    def curated(self) -> str | None:
        """The curation selection it trains on ("topk", "random", "all"), if any."""
        return next((s.data.removeprefix(CURATED_PREFIX) for s in self.sources if s.data.startswith(CURATED_PREFIX)), None)


def _prompt(name: str, enabled: bool) -> str:
    return f"<{name}>" if enabled else ""


def define_arms(text_only: list[str], genpair_size: int, real_extra_corpus: str, source_prompts: bool) -> dict[str, Arm]:
    paired = SourceConfig(kind="real", data="paired", weight=1.0)
    share = 1.0 / max(len(text_only), 1)
    synthetic_text = [SourceConfig(kind="synthetic", data=n, weight=share, prompt=_prompt(n, source_prompts)) for n in text_only]
    real_text = [SourceConfig(kind="real", data=n, weight=share, prompt=_prompt(n, source_prompts)) for n in text_only]
    genpair = SourceConfig(kind="synthetic", data="llm", weight=1.0, prompt=_prompt("llm", source_prompts), limit=genpair_size)
    if real_extra_corpus not in text_only:
        raise ValueError(f"experiments.real_extra_corpus {real_extra_corpus!r} is not a text-only corpus ({text_only})")
    extra = SourceConfig(kind="real", data=real_extra_corpus, weight=1.0, prompt=_prompt(real_extra_corpus, source_prompts), limit=genpair_size)
    arms = [
        Arm("baseline", "paired", [paired]),
        Arm("synth2", "paired + text-only captions with synthetic images", [paired, *synthetic_text]),
        Arm("gold", "paired + the same captions with their true images", [paired, *real_text]),
        Arm("genpair", "paired + LLM captions with synthetic images", [paired, genpair]),
        Arm("real_extra", "paired + as many extra real pairs", [paired, extra]),
        Arm("genpair_pixel", "genpair, its synthetic images decoded to pixels and encoded again", [paired, genpair], space="pixel"),
        # SynthVLM curation of the GenPair pool: top K by CLIPScore + SSIM vs K random vs all
        *(
            Arm(f"{CURATED_PREFIX}{which}", f"paired + {which} of the curated GenPair pool",
                [paired, SourceConfig(kind="synthetic", data=f"{CURATED_PREFIX}{which}", weight=1.0, prompt=_prompt("llm", source_prompts))])
            for which in SELECTIONS
        ),
    ]
    return {arm.name: arm for arm in arms}


def run_arms(run: Run) -> dict[str, Arm]:
    """The arms of a run, sized by its LLM captions."""
    cfg = run.config
    data, _ = datasets(run)
    llm_count = captions(run)["written"]
    size = min(cfg.experiments.genpair_size or llm_count, llm_count)
    return define_arms(sorted(data["text_only"]), size, cfg.experiments.real_extra_corpus, cfg.experiments.source_prompts)


def vlm_stage_name(arm_name: str, seed: int, run_seed: int) -> str:
    """`vlm/ARM` on the run's seed, `vlm/ARM-sN` on any other seed N."""
    return f"vlm/{arm_name}{seed_suffix(seed, run_seed)}"


def seed_suffix(seed: int | None, run_seed: int) -> str:
    """"" on the run's own seed, "-sN" on any other seed N (stage names of seeded arms)."""
    return f"-s{seed}" if seed is not None and seed != run_seed else ""


def arm_and_seed(stage_name: str, run_seed: int) -> tuple[str, int]:
    """The inverse of `vlm_stage_name`."""
    arm = stage_name.removeprefix("vlm/")
    head, sep, tail = arm.rpartition("-s")
    return (head, int(tail)) if sep and tail.isdigit() else (arm, run_seed)
