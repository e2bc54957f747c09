"""The paper's experiment arms as data (which sources each VLM trains on), and their stage names.

- baseline: the paired data only (the paper's CCv2 baseline);
- synth2: + the text-only corpora's captions with synthetic images (Table 2);
- gold: + the same captions with their true images (Table 2's upper bound);
- genpair: + LLM captions with synthetic images (Table 3; "Synth²" in Figure 6);
- real_extra: + as many extra real pairs from a text-only corpus (Table 3, rows 3-4);
- genpair_true / genpair_blind: the LLM captions with the true images of their scenes / with one
  uninformative image (controls only the embedded world can run; `stages.controls`);
- genpair_pixel: genpair with synthetic tokens rendered to pixels and re-encoded (Table 5);
- curated_topk / curated_random / curated_all: the GenPair pool curated SynthVLM-style.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from synth2.curate.curation import SELECTIONS
from synth2.data.shards import count_records
from synth2.run import Run
from synth2.stages.captions import captions
from synth2.stages.controls import CONTROL_SOURCES
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
        return bool(self.synthetic_sources)

    @property
    def synthetic_sources(self) -> set[str]:
        """The data names of its sources paired with synthetic images."""
        return {s.data for s in self.sources if s.kind == "synthetic"}

    @property
    def control(self) -> bool:
        """Whether it trains on a GenPair control source (`stages.controls`)."""
        return any(s.data in CONTROL_SOURCES for s in self.sources)

    @property
    def curated(self) -> str | None:
        """The curation selection it trains on ("topk", "random", "all"), if any."""
        return next((s.data.removeprefix(CURATED_PREFIX) for s in self.sources if s.data.startswith(CURATED_PREFIX)), None)


def _prompt(name: str, enabled: bool) -> str:
    return f"<{name}>" if enabled else ""


def define_arms(sizes: dict[str, int], genpair_size: int, real_extra_corpus: str, source_prompts: bool,
                mixing: Literal["by_size", "equal"] = "by_size") -> dict[str, Arm]:
    """`sizes`: examples in "paired" and in each text-only corpus; `genpair_size`: LLM captions
    used (and as many extra real pairs). `mixing` sets each source's share of a batch: "by_size"
    its share of all the arm's examples (sampling the union uniformly, the paper's CCv2 + 1M
    GenPair), "equal" the paired data's share for every added corpus (their shares split it)."""
    text_only = sorted(n for n in sizes if n != "paired")
    by_size = mixing == "by_size"

    def weight(size: int, equal: float = 1.0) -> float:
        return float(size) if by_size else equal

    def added(kind: str, data: str, size: int, prompt_name: str, limit: int = 0, equal: float = 1.0) -> SourceConfig:
        return SourceConfig(kind=kind, data=data, weight=weight(size, equal), prompt=_prompt(prompt_name, source_prompts), limit=limit)

    paired = SourceConfig(kind="real", data="paired", weight=weight(sizes["paired"]))
    share = 1.0 / max(len(text_only), 1)
    synthetic_text = [added("synthetic", n, sizes[n], n, equal=share) for n in text_only]
    real_text = [added("real", n, sizes[n], n, equal=share) for n in text_only]
    genpair = added("synthetic", "llm", genpair_size, "llm", limit=genpair_size)
    extra = added("real", real_extra_corpus, genpair_size, real_extra_corpus, limit=genpair_size)
    missing = missing_inputs(text_only, real_extra_corpus)
    arms = [
        Arm("baseline", "paired", [paired]),
        Arm("synth2", "paired + text-only captions with synthetic images", [paired, *synthetic_text]),
        Arm("gold", "paired + the same captions with their true images", [paired, *real_text]),
        Arm("genpair", "paired + LLM captions with synthetic images", [paired, genpair]),
        Arm("real_extra", "paired + as many extra real pairs", [paired, extra]),
        *(
            Arm(f"genpair_{which}", f"paired + LLM captions with {what}", [paired, added("real", f"llm_{which}", genpair_size, "llm", limit=genpair_size)])
            for which, what in (("true", "the true images of their scenes"), ("blind", "one uninformative image (the mean paired image)"))
        ),
        Arm("genpair_pixel", "genpair, its synthetic images decoded to pixels and encoded again", [paired, genpair], space="pixel"),
        # SynthVLM curation of the GenPair pool: top K by CLIPScore + SSIM vs K random vs all,
        # each at GenPair's share of a batch
        *(
            Arm(f"{CURATED_PREFIX}{which}", f"paired + {which} of the curated GenPair pool", [paired, added("synthetic", f"{CURATED_PREFIX}{which}", genpair_size, "llm")])
            for which in SELECTIONS
        ),
    ]
    return {arm.name: arm for arm in arms if arm.name not in missing}


def missing_inputs(text_only: list[str], real_extra_corpus: str) -> dict[str, str]:
    """The arms whose data a run lacks, each with why (the arms the others need are always there)."""
    out = {}
    if not text_only:
        out["synth2"] = out["gold"] = "no text-only corpus (data.text_only)"
    if real_extra_corpus not in text_only:
        out["real_extra"] = f"experiments.real_extra_corpus {real_extra_corpus!r} is not a text-only corpus {text_only}"
    return out


@lru_cache(maxsize=64)
def _records(shards: str) -> int:
    return count_records(shards)


def run_arms(run: Run) -> dict[str, Arm]:
    """The arms of a run, sized by its data and its LLM captions."""
    cfg = run.config
    data, _ = datasets(run)
    llm_count = captions(run)["written"]
    size = min(cfg.experiments.genpair_size or llm_count, llm_count)
    sizes = {"paired": _records(str(data["paired"])), **{name: _records(str(path)) for name, path in data["text_only"].items()}}
    return define_arms(sizes, size, cfg.experiments.real_extra_corpus, cfg.experiments.source_prompts, cfg.experiments.mixing)


def skipped_arms(run: Run) -> dict[str, str]:
    """The arms this run cannot train, each with why."""
    data, _ = datasets(run)
    return missing_inputs(sorted(data["text_only"]), run.config.experiments.real_extra_corpus)


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
