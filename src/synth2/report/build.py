"""report.md and a self-contained report.html (tables, plots and sample grids inlined), and the
README's results table, all rendered from results.json (`synth2.report.results`)."""

from __future__ import annotations

import base64
import html
import re
import shutil
from pathlib import Path

from synth2.eval.generator import GeneratorMetrics
from synth2.eval.schema import rows
from synth2.eval.vq import VQMetrics
from synth2.report.plots import plot_figure6
from synth2.report.results import ARM_COLUMNS, ARM_TABLES, CLAIMS, CURATED_ARMS, Results


def _fmt(value, pct: bool = False) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.1%}" if pct else f"{value:.3f}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v, pct)}" for k, v in value.items())
    return str(value)


Table = tuple[str, list[str], list[list[str]], str]  # title, header, rows, note


def _cell(row: dict, column: str) -> str:
    """A table value, with ± its standard deviation over seeds when the table has several."""
    pct = ARM_COLUMNS[column].pct
    std = row.get(f"{column}_std")
    return _fmt(row[column], pct) + (f" ± {_fmt(std, pct)}" if std is not None else "")


def setting(results: Results) -> str:
    seeds = f"seeds {results.table_seeds}, mean ± std" if len(results.table_seeds) > 1 else f"seed {results.seed}" + (f" (Figure 6: seeds {results.seeds})" if results.seeds != [results.seed] else "")
    return f"preset `{results.preset}`, {seeds}, {results.steps['vlm']} VLM steps, {results.hardware}"


def arm_tables(results: Results) -> list[Table]:
    out = []
    for table in (t for t in ARM_TABLES if t.key in results.tables):
        header = ["arm", "training data"] + [ARM_COLUMNS[c].label for c in table.columns]
        rows = results.tables[table.key]
        body = [[label, results.arm_data.get(arm, ""), *(_cell(rows[arm], c) for c in table.columns)] for label, arm in table.rows if arm in rows]
        if table.key == "table2":
            blind = results.blind
            values = {"cider_a": blind["cider_a"], "cider_b": blind["cider_b"], "distinct_a": blind["distinct_a"], "gate_openness": 0.0}
            body.append(["Blind floor", f"none (untrained VLM = frozen LM): \"{blind['caption']}\"", *(_fmt(values[c], ARM_COLUMNS[c].pct) for c in table.columns)])
        note = setting(results) + (f"; {table.note}" if table.note else "")
        skipped = {arm: results.skipped_arms[arm] for arm in table.arms if arm in results.skipped_arms}
        note += "".join(f"; {arm} not trained: {why}" for arm, why in skipped.items())
        out.append((table.title, header, body, note))
    return out


def metric_rows(cls: type, values: dict, model: str) -> list[list[str]]:
    """One row per metric label; a label none of whose values was measured (the oracle's, off the
    embedded world) is left out."""
    return [[model, label, " / ".join(_fmt(values.get(f.name), f.metadata["pct"]) for f in fields)]
            for label, fields in rows(cls) if any(values.get(f.name) is not None for f in fields)]


def on_embedded_world(results: Results) -> bool:
    """Whether the run's data is the embedded world (only there does an oracle read images)."""
    return results.vq.get("oracle_accuracy") is not None


def tables(results: Results) -> list[Table]:
    """(title, header, rows, note) for every table of the report."""
    out = arm_tables(results)
    out.append((
        "The shared tokenizer and the generator",
        ["model", "metric", "value"],
        metric_rows(VQMetrics, results.vq, "VQ") + metric_rows(GeneratorMetrics, results.generator, "generator"),
        f"preset `{results.preset}`: {results.steps['vq']} VQ steps, {results.steps['t2i']} generator steps; eval split A"
        + ("; oracle = the world's parser" if on_embedded_world(results) else ""),
    ))
    div = results.diversity
    for embedder in (e for e in ("concepts", "lm") if e in div):
        d = div[embedder]
        out.append((
            f"Table 8: caption diversity, {embedder} embedder (k = {d['k']}, elbow {d['elbow_k']})",
            ["corpus", "concentration top-3", "concentration top-5", "entropy (bits)"],
            [[name, _fmt(c["concentration_top3"], True), _fmt(c["concentration_top5"], True), _fmt(c["entropy"])] for name, c in d.items() if isinstance(c, dict)],
            {"concepts": "concepts: the world shapes and colours each caption mentions; ", "lm": "lm: the frozen LM's mean-pooled states; "}[embedder]
            + ("each corpus centred before co-clustering" if div["centred"] else "embeddings co-clustered as they are (not centred)"),
        ))
    out.append(curation_table(results))
    out.append(("The paper's claims on this run", ["claim", "target", "measured"], claim_rows(results), setting(results)))
    return out


def curation_table(results: Results) -> Table:
    cur = results.curation
    oracle = cur["oracle_right"]
    counts = {"topk": cur["k"], "random": cur["k"], "all": cur["after_filters"]}
    header = ["training data", "synthetic pairs"] + (["images right (oracle)"] if oracle else []) + ["CIDEr eval A"]
    body = [[results.arm_data.get(arm, arm), str(counts[which])] + ([_fmt(oracle.get(which), True)] if oracle else []) + [_fmt(cur[f"{which}_cider_a"])]
            for which, arm in CURATED_ARMS.items()]
    note = (f"{setting(results)}; pool {cur['pool']} LLM captions, filter rejects {cur['filter_rejects']}; "
            f"controlled CLIPScore AUC (matched vs shuffled eval pairs) = {_fmt(cur['auc'])}; top K by CLIPScore + lambda SSIM")
    if oracle:
        note += "; images right: the share of the selection's synthetic images in which the world's oracle reads exactly their caption's objects"
    return "SynthVLM curation of the GenPair pool", header, body, note


def claim_rows(results: Results) -> list[list[str]]:
    c = results.claims
    measured = {
        "genpair_gain_over_baseline": _fmt(c["genpair_gain_over_baseline"], True)
        + (" (seeds: " + " / ".join(_fmt(v, True) for v in c["genpair_gain_by_seed"].values()) + ")" if "genpair_gain_by_seed" in c else ""),
        "synth2_share_of_gold": _fmt(c["synth2_share_of_gold"], True),
        "parity_fraction": "never" if c["parity_fraction"] is None else _fmt(c["parity_fraction"]),
        "genpair_ordering_margin": _fmt(c["genpair_ordering_margin"]),
        "embedding_over_pixel_speed": f"{c['embedding_over_pixel_speed']:.2f}x",
        "baseline_last_quarter_gain": _fmt(c.get("baseline_last_quarter_gain"), True),
    }
    return [[claim.text, claim.target, measured[claim.key]] for claim in CLAIMS]


def markdown_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def summary(results: Results) -> str:
    """The README's results table for one run: each table's headline numbers and the claims."""
    t2, t3, controls = results.tables.get("table2", {}), results.tables["table3"], results.tables.get("controls")
    gen, vq = results.generator, results.vq

    def cider(table: dict, arms: tuple[str, ...]) -> str:
        return " / ".join(_fmt(table[a]["cider_a"] if a in table else None) for a in arms)

    body = [
        ["Table 2: CIDEr A, Baseline / Synth² / Gold", cider(t2, ("baseline", "synth2", "gold"))],
        ["Table 3: CIDEr A, + GenPair / + extra real", cider(t3, ("genpair", "real_extra"))],
        *([["controls: CIDEr A, GenPair-blind / GenPair / GenPair-true", cider(controls, ("genpair_blind", "genpair", "genpair_true"))]]
          if controls else []),
    ] + ([
        ["VQ: oracle accuracy of reconstructions / codebook usage", f"{_fmt(vq['oracle_accuracy'], True)} / {_fmt(vq['codebook_usage'], True)}"],
        ["generator: oracle, seen / held-out combinations / novel compositions",
         " / ".join(_fmt(gen[k], True) for k in ("oracle_seen", "oracle_heldout", "oracle_composition"))],
        ["generator: oracle, the world LLM's captions / GenPair's own", f"{_fmt(gen['oracle_llm'], True)} / {_fmt(gen['oracle_genpair'], True)}"],
    ] if on_embedded_world(results) else [
        ["VQ: PSNR / codebook usage", f"{_fmt(vq['psnr'])} dB / {_fmt(vq['codebook_usage'], True)}"],
        ["generator: Fréchet distance in VQ-embedding space", _fmt(gen["fd_vq"])],
    ]) + [[f"claim: {text} (target {target})", value] for text, target, value in claim_rows(results)]
    return markdown_table(["measured", "value"], body) + f"\n\n*{setting(results)}*"


def full_markdown(results: Results) -> str:
    """Every table of the report as markdown, for a generated results document in docs/."""
    parts = []
    for title, header, body, note in tables(results):
        parts += [f"### {title}", "", markdown_table(header, body), "", f"*{note}*", ""]
    return "\n".join(parts).rstrip()


def update_readme(path: Path, preset: str, table: str) -> None:
    """Replace the README block between `<!-- results:PRESET -->` and `<!-- /results:PRESET -->`."""
    text = Path(path).read_text()
    begin, end = f"<!-- results:{preset} -->", f"<!-- /results:{preset} -->"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise ValueError(f"{path}: no {begin} ... {end} block to fill")
    Path(path).write_text(pattern.sub(lambda _: f"{begin}\n{table}\n{end}", text))


def write_report(root: Path, results: Results) -> tuple[Path, Path]:
    root = Path(root)
    directory = root / "report"
    directory.mkdir(exist_ok=True)
    figures = {"Figure 6: CIDEr against training steps": plot_figure6(results.figure6, directory / "figure6.png")}
    samples = root / "t2i_eval" / "samples.png"
    if samples.exists():
        figures["Figure 3: eval images (top) and the generator's images for the same captions (bottom)"] = Path(shutil.copy(samples, directory / "figure3.png"))
    for embedder in ("concepts", "lm"):
        plot = root / "diversity" / f"diversity_{embedder}.png"
        if plot.exists():
            title = f"Figure 5: caption diversity, {embedder} embedder (normalised cluster sizes per corpus; elbow of WCSS)"
            figures[title] = Path(shutil.copy(plot, directory / plot.name))

    intro = (f"Wall time {results.wall_seconds} s for this invocation, {results.compute_seconds} s in all stages "
             f"(as they first ran) on {results.hardware}. CIDEr is pycocoevalcap's CIDEr-D on its own scale (1.0 = 100 in papers).")
    if results.skipped_arms:
        intro += " Not trained, for want of data: " + "; ".join(f"{arm} ({why})" for arm, why in results.skipped_arms.items()) + "."
    md = [f"# synth2 report: preset `{results.preset}`", "", intro, ""]
    for title, header, body, note in tables(results):
        md += [f"## {title}", "", markdown_table(header, body), "", f"*{note}*", ""]
    for title, path in figures.items():
        md += [f"## {title}", "", f"![{title}]({path.relative_to(root)})", ""]
    md_path = root / "report.md"
    md_path.write_text("\n".join(md))

    body = [f"<h1>synth2 report: preset <code>{html.escape(results.preset)}</code></h1>", f"<p>{html.escape(intro)}</p>"]
    for title, header, table_rows, note in tables(results):
        body.append(f"<h2>{html.escape(title)}</h2><table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
        body += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table_rows]
        body.append(f"</table><p class='note'>{html.escape(note)}</p>")
    for title, path in figures.items():
        data = base64.b64encode(path.read_bytes()).decode()
        body.append(f"<h2>{html.escape(title)}</h2><img src='data:image/png;base64,{data}' alt='{html.escape(title)}'>")
    style = "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:4px 8px}img{max-width:100%}.note{color:#555;font-size:90%}"
    html_path = root / "report.html"
    html_path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>synth2 report</title><style>{style}</style></head><body>{''.join(body)}</body></html>")
    return md_path, html_path
