"""The paper's experiment arms as data: which sources each VLM trains on.

- baseline: the paired data only (the paper's CCv2 baseline);
- synth2: + the text-only corpora's captions with synthetic images (Table 2);
- gold: + the same captions with their true images (Table 2's upper bound);
- genpair: + LLM captions with synthetic images (Table 3; "Synth²" in Figure 6);
- real_extra: + as many extra real pairs from a text-only corpus (Table 3, rows 3-4);
- genpair_pixel: genpair with synthetic tokens rendered to pixels and re-encoded (Table 5);
- curated_topk / curated_random / curated_all: the GenPair pool curated SynthVLM-style.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from synth2.train.vlm import SourceConfig


@dataclass
class Arm:
    name: str
    sources: list[SourceConfig]
    space: str = "embedding"
    seed_offset: int = 0
    tags: list[str] = field(default_factory=list)


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
    return {
        "baseline": Arm("baseline", [paired]),
        "synth2": Arm("synth2", [paired, *synthetic_text]),
        "gold": Arm("gold", [paired, *real_text]),
        "genpair": Arm("genpair", [paired, genpair]),
        "real_extra": Arm("real_extra", [paired, extra]),
        "genpair_pixel": Arm("genpair_pixel", [paired, genpair], space="pixel"),
        # SynthVLM curation of the GenPair pool: top K by CLIPScore + SSIM vs K random vs all
        **{
            f"curated_{which}": Arm(f"curated_{which}", [paired, SourceConfig(kind="synthetic", data=f"curated_{which}", weight=1.0, prompt=_prompt("llm", source_prompts))])
            for which in ("topk", "random", "all")
        },
    }
