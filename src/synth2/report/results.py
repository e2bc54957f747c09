"""What `synth2 reproduce` measured: the one declaration that results.json, report.md/html and the
README's results table are built from.

- `ARM_TABLES`: the paper's tables whose rows are VLM arms, with the columns each shows;
  adding a row or a column is one edit here (columns are declared in `ARM_COLUMNS`).
- `GeneratorMetrics` and `VQMetrics` (synth2.eval) declare the tokenizer's and the generator's
  reported metrics; `CLAIMS` the paper's claims and their targets.
- `Results`: the whole results.json.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection

import numpy as np

from synth2.files import atomic_write_text


@dataclass(frozen=True)
class Column:
    label: str
    pct: bool = False
    # where an arm's value comes from: its scores.json key, or the diversity of the corpus it adds
    score: str = ""
    diversity: str = ""


ARM_COLUMNS = {
    "cider_a": Column("CIDEr eval A", score="CIDEr_a"),
    "cider_b": Column("CIDEr eval B", score="CIDEr_b"),
    "distinct_a": Column("distinct captions (A)", pct=True, score="distinct_a"),
    "gate_openness": Column("gate openness", score="gate_openness"),
    "steps_per_s": Column("training steps/s", score="steps_per_s"),
    "concentration_top3": Column("concentration top-3", pct=True, diversity="concentration_top3"),
    "concentration_top5": Column("concentration top-5", pct=True, diversity="concentration_top5"),
    "entropy": Column("entropy (bits)", diversity="entropy"),
}


@dataclass(frozen=True)
class ArmTable:
    key: str  # results.json key
    title: str
    rows: tuple[tuple[str, str], ...]  # (label, arm name)
    columns: tuple[str, ...]  # keys of ARM_COLUMNS
    note: str = ""
    world_only: bool = False  # its arms need the embedded world (skipped on the user's data)

    @property
    def arms(self) -> list[str]:
        return [arm for _, arm in self.rows]


ARM_TABLES = (
    ArmTable(
        "table2", "Table 2: synthetic images for real captions (zero-shot CIDEr)",
        (("Baseline", "baseline"), ("Synth²", "synth2"), ("Gold", "gold")),
        ("cider_a", "cider_b", "distinct_a", "gate_openness"),
        "blind floor = the VLM before training, whose closed gates make it the frozen LM, saying one caption for every image: "
        "an arm near it has learnt the caption prior, not to look; distinct captions = share of unique predictions; "
        "gate openness = mean |tanh(gate)| of the cross-attention gates (0 = blind)",
    ),
    ArmTable(
        "table3", "Tables 3 and 8: fully synthetic pairs vs extra real pairs",
        (("Baseline", "baseline"), ("+ GenPair", "genpair"), ("+ extra real", "real_extra")),
        ("cider_a", "distinct_a", "gate_openness", "concentration_top3", "concentration_top5", "entropy"),
        "concentration and entropy of the captions each arm adds (Baseline: the paired captions), co-clustered with every corpus",
    ),
    ArmTable(
        "controls", "GenPair's gain split into the text and the synthetic images (controls only the embedded world can run)",
        (("Baseline", "baseline"), ("GenPair-blind (one uninformative image)", "genpair_blind"), ("GenPair (synthetic images)", "genpair"),
         ("GenPair-true (the scenes' true images)", "genpair_true")),
        ("cider_a", "cider_b", "distinct_a", "gate_openness"),
        "all three train on the same LLM captions; blind = every caption with the VQ tokens of the mean paired image; "
        "the ordering margin is the smaller of (true - GenPair) and (GenPair - blind): positive when the synthetic images carry part of the gain",
        world_only=True,
    ),
    ArmTable(
        "table5", "Table 5: embedding space vs pixel space",
        (("image embeddings (tokens)", "genpair"), ("pixels (decode + re-encode)", "genpair_pixel")),
        ("steps_per_s", "cider_a"),
    ),
)

# the curated arms: SynthVLM's top K against K random and all (curation table)
CURATED_ARMS = {"topk": "curated_topk", "random": "curated_random", "all": "curated_all"}
# Figure 6's curves: Baseline and Synth² (+GenPair) on every seed
CURVE_ARMS = ("baseline", "genpair")


def arm_tables(world: bool, available: Collection[str] | None = None) -> list[ArmTable]:
    """The tables a run shows, each with the rows of the arms it can train (`available`; None =
    all): the world-only tables only on the embedded world, and no table left with Baseline alone."""
    out = []
    for table in ARM_TABLES:
        rows = tuple(row for row in table.rows if available is None or row[1] in available)
        if (world or not table.world_only) and any(arm != "baseline" for _, arm in rows):
            out.append(dataclasses.replace(table, rows=rows))
    return out


def table_arms(world: bool = True, available: Collection[str] | None = None) -> list[str]:
    """Every arm a table shows, in table order (the order reproduce trains them)."""
    names: list[str] = []
    for table in arm_tables(world, available):
        names += [a for a in table.arms if a not in names]
    return names + [a for a in CURATED_ARMS.values() if a not in names]


def arm_row(table: ArmTable, scores: dict, corpus_diversity: dict | None) -> dict:
    """One arm's values for `table`'s columns."""
    row = {}
    for key in table.columns:
        column = ARM_COLUMNS[key]
        row[key] = scores[column.score] if column.score else corpus_diversity[column.diversity]
    return row


def seed_mean(rows: list[dict]) -> dict:
    """One row from the same arm's rows on several seeds: each number's mean, with its standard
    deviation beside it as `KEY_std` (one seed: the row as it is)."""
    if len(rows) == 1:
        return rows[0]
    out = {}
    for key in rows[0]:
        values = [row[key] for row in rows]
        if all(isinstance(v, (int, float)) for v in values):
            out[key], out[f"{key}_std"] = float(np.mean(values)), float(np.std(values))
        else:
            out[key] = values[0]
    return out


@dataclass(frozen=True)
class Claim:
    key: str
    text: str
    target: str


CLAIMS = (
    Claim("genpair_gain_over_baseline", "GenPair improves CIDEr over Baseline", ">= 0.17"),
    Claim("synth2_share_of_gold", "Synth² reaches Gold", ">= 0.90"),
    Claim("parity_fraction", "GenPair reaches Baseline's final CIDEr early (share of steps)", "<= 0.33"),
    Claim("genpair_ordering_margin", "GenPair-true > GenPair > GenPair-blind: the synthetic images carry part of the gain (CIDEr A margin)", "> 0"),
    Claim("embedding_over_pixel_speed", "embedding space faster than pixel space", ">= 1.25"),
    # not a claim but the protocol's condition for the others: Baseline trained until it plateaus
    Claim("baseline_last_quarter_gain", "protocol: Baseline's CIDEr A is flat over its last quarter of steps (relative gain)", "<= 0.03"),
)


def _genpair_gain(table3: dict) -> float | None:
    base = table3["baseline"]["cider_a"]
    return (table3["genpair"]["cider_a"] - base) / base if base else None


def _ordering_margin(controls: dict) -> float:
    cider = {arm: row["cider_a"] for arm, row in controls.items()}
    return min(cider["genpair_true"] - cider["genpair"], cider["genpair"] - cider["genpair_blind"])


def claims(tables: dict, figure6: dict, seed_tables: dict[int, dict] | None = None) -> dict:
    """The paper's claims as numbers measured on this run (no thresholds tuned to pass); with
    tables on several seeds (`seed_tables`: seed -> table3), GenPair's gain on each seed too."""
    t2, t3, t5, controls = tables.get("table2"), tables["table3"], tables["table5"], tables.get("controls")
    values = {
        "genpair_gain_over_baseline": _genpair_gain(t3),
        "synth2_share_of_gold": t2["synth2"]["cider_a"] / t2["gold"]["cider_a"] if t2 and t2["gold"]["cider_a"] else None,
        "parity_fraction": figure6["parity_fraction"],
        "genpair_ordering_margin": _ordering_margin(controls) if controls else None,
        "embedding_over_pixel_speed": t5["genpair"]["steps_per_s"] / t5["genpair_pixel"]["steps_per_s"],
        "baseline_last_quarter_gain": figure6.get("baseline_last_quarter_gain"),
    }
    out = {**{c.key: values[c.key] for c in CLAIMS}, "targets": {c.key: c.target for c in CLAIMS}}
    if seed_tables and len(seed_tables) > 1:
        out["genpair_gain_by_seed"] = {str(seed): _genpair_gain(t) for seed, t in seed_tables.items()}
    return out


@dataclass
class Results:
    """results.json. Timings (`wall_seconds`, `stage_seconds`, `compute_seconds`) are the only
    values that differ between two runs of the same code, config and CPU kernels."""

    preset: str
    seed: int  # the tables' arms; Figure 6 runs every one of `seeds`
    seeds: list[int]
    hardware: str
    steps: dict[str, int]
    tables: dict[str, dict[str, dict]]  # ARM_TABLES key -> arm -> column -> value
    arm_data: dict[str, str]  # arm -> what it trains on, in words
    blind: dict[str, Any]
    figure6: dict[str, Any]
    diversity: dict[str, Any]
    curation: dict[str, Any]
    generator: dict[str, Any]  # reported(GeneratorMetrics)
    vq: dict[str, Any]  # reported(VQMetrics)
    arms: dict[str, dict]  # every arm's scores.json
    claims: dict[str, Any]
    table_seeds: list[int] = field(default_factory=list)  # the tables' seeds (several: mean ± std)
    skipped_arms: dict[str, str] = field(default_factory=dict)  # arm -> why the run's data cannot train it
    wall_seconds: float = 0.0
    stage_seconds: dict[str, float | None] = field(default_factory=dict)
    compute_seconds: float = 0.0

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        tables = data.pop("tables")
        # the tables sit at the top level of results.json, under their own keys
        return {**{k: v for k, v in data.items() if k in ("preset", "seed", "seeds", "hardware", "steps")}, **tables,
                **{k: v for k, v in data.items() if k not in ("preset", "seed", "seeds", "hardware", "steps")}}

    @classmethod
    def from_json(cls, data: dict) -> "Results":
        tables = {t.key: data[t.key] for t in ARM_TABLES if t.key in data}
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(tables=tables, **{k: v for k, v in data.items() if k in names and k != "tables"})

    def write(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> "Results":
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no results.json (run `synth2 reproduce` first)")
        return cls.from_json(json.loads(path.read_text()))

