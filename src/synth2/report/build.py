"""report.md and a self-contained report.html (tables, plots and sample grids inlined)."""

from __future__ import annotations

import base64
import html
import shutil
from pathlib import Path

from synth2.report.plots import plot_figure6
from synth2.run import Run
from synth2.world.oracle import AGREEMENT_PARTS, ERROR_CAUSES


def _fmt(value, pct: bool = False) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.1%}" if pct else f"{value:.3f}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v, pct)}" for k, v in value.items())
    return str(value)


def tables(results: dict) -> list[tuple[str, list[str], list[list[str]], str]]:
    """(title, header, rows, note) for every table of the report."""
    seeds = f"seed {results['seed']}" + (f" (Figure 6: seeds {results['seeds']})" if results["seeds"] != [results["seed"]] else "")
    setting = f"preset `{results['preset']}`, {seeds}, {results['steps']['vlm']} VLM steps, {results['hardware']}"
    t2, t3, t5, blind = results["table2"], results["table3"], results["table5"], results["blind"]
    out = [
        (
            "Table 2: synthetic images for real captions (zero-shot CIDEr)",
            ["arm", "training data", "CIDEr eval A (paired style)", "CIDEr eval B (other style)", "distinct captions (A)", "gate openness"],
            [
                [name, data, _fmt(t2[key]["cider_a"]), _fmt(t2[key]["cider_b"]), _fmt(t2[key].get("distinct_a"), True), _fmt(t2[key].get("gate_openness"))]
                for name, key, data in (
                    ("Baseline", "baseline", "paired"),
                    ("Synth²", "synth2", "paired + text-only captions with synthetic images"),
                    ("Gold", "gold", "paired + the same captions with their true images"),
                )
            ]
            + [["Blind floor", f"none (untrained VLM = frozen LM): \"{blind['caption']}\"", _fmt(blind["cider_a"]), _fmt(blind["cider_b"]), _fmt(blind["distinct_a"], True), "0 (closed)"]],
            f"{setting}; blind floor = the VLM before training, whose closed gates make it the frozen LM, saying one caption "
            "for every image: an arm near it has learnt the caption prior, not to look; distinct captions = share of unique predictions; "
            "gate openness = mean |tanh(gate)| of the cross-attention gates (0 = blind)",
        ),
        (
            "Tables 3 and 8: fully synthetic pairs vs extra real pairs",
            ["arm", "added captions", "CIDEr eval A", "distinct captions (A)", "gate openness", "concentration top-3", "concentration top-5", "entropy (bits)"],
            [
                [name, corpus, _fmt(t3[key]["cider_a"]), _fmt(t3[key].get("distinct_a"), True), _fmt(t3[key].get("gate_openness")), _fmt(t3[key]["concentration_top3"], True), _fmt(t3[key]["concentration_top5"], True), _fmt(t3[key]["entropy"])]
                for name, key, corpus in (("Baseline", "baseline", "(paired captions)"), ("+ GenPair", "genpair", "LLM captions + synthetic images"), ("+ extra real", "real_extra", "real pairs"))
            ],
            f"{setting}; concentration/entropy with the {results['diversity']['embedder']} embedder over "
            f"k={results['diversity'][results['diversity']['embedder']]['k']} co-clusters (all embedders: Table 8)",
        ),
        (
            "Table 5: embedding space vs pixel space",
            ["Synth² (+GenPair) in", "training steps/s", "CIDEr eval A"],
            [
                ["image embeddings (tokens)", _fmt(t5["embedding"]["steps_per_s"]), _fmt(t5["embedding"]["cider_a"])],
                ["pixels (decode + re-encode)", _fmt(t5["pixel"]["steps_per_s"]), _fmt(t5["pixel"]["cider_a"])],
            ],
            setting,
        ),
    ]
    vq, gen = results["vq"], results["generator"]
    out.append(
        (
            "The shared tokenizer and the generator",
            ["model", "metric", "value"],
            [
                ["VQ", "PSNR (dB) / SSIM", f"{_fmt(vq['psnr'])} / {_fmt(vq['ssim'])}"],
                ["VQ", "codebook usage / perplexity", f"{_fmt(vq['codebook_usage'], True)} / {_fmt(vq.get('perplexity'))}"],
                ["VQ", "oracle accuracy of reconstructions", _fmt(vq["oracle_accuracy"], True)],
                ["VQ", "oracle errors per occupied cell: shape / colour / size / missed / spurious",
                 " / ".join(_fmt(vq.get(f"oracle_{cause}_errors"), True) for cause in ERROR_CAUSES)],
                ["VQ", "oracle accuracy per shape (recall)", _fmt(vq.get("oracle_accuracy_by_shape"), True)],
                ["VQ", "encode-decode-encode token stability", _fmt(vq.get("token_stability"), True)],
                ["generator", "oracle accuracy, seen / held-out combinations", f"{_fmt(gen['oracle_seen'], True)} / {_fmt(gen['oracle_heldout'], True)}"],
                ["generator", "its ceiling: the same on the eval images' own VQ reconstructions, seen / held-out",
                 f"{_fmt(gen.get('oracle_vq_seen'), True)} / {_fmt(gen.get('oracle_vq_heldout'), True)}"],
                [
                    "generator",
                    "oracle accuracy, the same scenes captioned in the world LLM's style (GenPair's): as prompted / caption whole / first sentence only",
                    " / ".join(_fmt(gen.get(f"oracle_llm_style{way}"), True) for way in ("", "_whole", "_first_sentence")),
                ],
                ["generator", "right on its own: object count / colours / shapes",
                 " / ".join(_fmt(gen.get(f"oracle_{part}_right"), True) for part in AGREEMENT_PARTS)],
                ["generator", "masked-token accuracy, own / shuffled captions",
                 f"{_fmt(gen['masked_token_accuracy'], True)} / {_fmt(gen.get('masked_token_accuracy_shuffled_captions'), True)}"],
                ["generator", "caption information: masked-token NLL shuffled - own (nats)", _fmt(gen.get("text_information_nats"))],
                ["generator", "Fréchet distance in VQ-embedding space", _fmt(gen.get("fd_vq"))],
            ],
            f"preset `{results['preset']}`: {results['steps']['vq']} VQ steps, {results['steps']['t2i']} generator steps; "
            "eval split A; oracle = the world's parser",
        )
    )
    div = results["diversity"]
    for embedder in (e for e in ("concepts", "lm") if e in div):
        d = div[embedder]
        out.append(
            (
                f"Table 8: caption diversity, {embedder} embedder (k = {d['k']}, elbow {d['elbow_k']})",
                ["corpus", "concentration top-3", "concentration top-5", "entropy (bits)"],
                [[name, _fmt(c["concentration_top3"], True), _fmt(c["concentration_top5"], True), _fmt(c["entropy"])] for name, c in d.items() if isinstance(c, dict)],
                "concepts: the world shapes and colours each caption mentions; lm: the frozen LM's mean-pooled states; "
                + ("each corpus centred before co-clustering" if div.get("centred") else "embeddings co-clustered as they are (not centred)"),
            )
        )
    cur = results["curation"]
    oracle = cur.get("oracle_right") or {}
    out.append(
        (
            "SynthVLM curation of the GenPair pool",
            ["training data", "synthetic pairs", "images right (oracle)", "CIDEr eval A"],
            [
                ["paired + top K by CLIPScore + 0.5 SSIM", str(cur["k"]), _fmt(oracle.get("topk"), True), _fmt(cur["topk_cider_a"])],
                ["paired + K random", str(cur["k"]), _fmt(oracle.get("random"), True), _fmt(cur["random_cider_a"])],
                ["paired + all (after caption filters)", str(cur["after_filters"]), _fmt(oracle.get("all"), True), _fmt(cur["all_cider_a"])],
            ],
            f"{setting}; pool {cur['pool']} LLM captions, filter rejects {cur['filter_rejects']}; controlled CLIPScore AUC (matched vs shuffled eval pairs) = {_fmt(cur['auc'])}; "
            "images right: the share of the selection's synthetic images in which the world's oracle reads exactly their caption's objects",
        )
    )
    c = results["claims"]
    out.append(
        (
            "The paper's claims on this run",
            ["claim", "target", "measured"],
            [
                ["GenPair improves CIDEr over Baseline", c["targets"]["genpair_gain_over_baseline"], _fmt(c["genpair_gain_over_baseline"], True)],
                ["Synth² reaches Gold", c["targets"]["synth2_share_of_gold"], _fmt(c["synth2_share_of_gold"], True)],
                ["Synth² reaches Baseline's final CIDEr early (share of steps)", c["targets"]["parity_fraction"], "never" if c["parity_fraction"] is None else _fmt(c["parity_fraction"])],
                ["embedding space faster than pixel space", c["targets"]["embedding_over_pixel_speed"], f"{c['embedding_over_pixel_speed']:.2f}x"],
            ],
            setting,
        )
    )
    return out


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def write_report(run: Run, results: dict) -> tuple[Path, Path]:
    directory = run.root / "report"
    directory.mkdir(exist_ok=True)
    figures = {"Figure 6: CIDEr against training steps": plot_figure6(results["figure6"], directory / "figure6.png")}
    samples = run.stage_dir("t2i_eval") / "samples.png"
    if samples.exists():
        figures["Figure 3: eval images (top) and the generator's images for the same captions (bottom)"] = Path(shutil.copy(samples, directory / "figure3.png"))
    for embedder in ("concepts", "lm"):
        if (directory / f"diversity_{embedder}.png").exists():
            figures[f"Figure 5: caption diversity, {embedder} embedder (normalised cluster sizes per corpus; elbow of WCSS)"] = directory / f"diversity_{embedder}.png"

    md = [f"# synth2 report: preset `{results['preset']}`", "", f"Wall time {results['wall_seconds']} s for this invocation, {results['compute_seconds']} s in all stages "
          f"(as they first ran) on {results['hardware']}. "
          "CIDEr is pycocoevalcap's CIDEr-D on its own scale (1.0 = 100 in papers).", ""]
    for title, header, rows, note in tables(results):
        md += [f"## {title}", "", _markdown_table(header, rows), "", f"*{note}*", ""]
    for title, path in figures.items():
        md += [f"## {title}", "", f"![{title}]({path.relative_to(run.root)})", ""]
    md_path = run.root / "report.md"
    md_path.write_text("\n".join(md))

    body = [f"<h1>synth2 report: preset <code>{html.escape(results['preset'])}</code></h1>", f"<p>{html.escape(md[2])}</p>"]
    for title, header, rows, note in tables(results):
        body.append(f"<h2>{html.escape(title)}</h2><table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
        body += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows]
        body.append(f"</table><p class='note'>{html.escape(note)}</p>")
    for title, path in figures.items():
        data = base64.b64encode(path.read_bytes()).decode()
        body.append(f"<h2>{html.escape(title)}</h2><img src='data:image/png;base64,{data}' alt='{html.escape(title)}'>")
    style = "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:4px 8px}img{max-width:100%}.note{color:#555;font-size:90%}"
    html_path = run.root / "report.html"
    html_path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>synth2 report</title><style>{style}</style></head><body>{''.join(body)}</body></html>")
    return md_path, html_path
