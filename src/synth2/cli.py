"""The `synth2` command line: thin commands over the library (synth2.api).

Every command that works on a run takes `--run DIR` plus optional `--preset`,
`--config FILE` and repeated `--set key.path=value`; without them an existing run's
saved config.yaml is used. Finished stages are skipped, so rerunning resumes.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from typer.exceptions import TyperException
from rich.table import Table

from synth2 import api
from synth2.errors import USER_ERRORS, one_line
from synth2.progress import is_rank_zero
from synth2.stages.data import EVAL_SPLIT_NAMES

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Synthetic captions and image embeddings for VLMs.")
train_app = typer.Typer(no_args_is_help=True, help="Train one model of the pipeline in a run directory.")
data_app = typer.Typer(no_args_is_help=True, help="Look at pair shards.")
app.add_typer(train_app, name="train")
app.add_typer(data_app, name="data")

out = Console()

# `--run-dir` is the same option under a name torchrun's own parser cannot mistake for its
# `--run-path` (it rejects `--run` as an ambiguous abbreviation)
RunOpt = typer.Option(..., "--run", "--run-dir", help="Run directory (created if missing).")
PresetOpt = typer.Option(None, "--preset", help="tiny | quick | small | paper")
ConfigOpt = typer.Option(None, "--config", help="YAML config file.")
SetOpt = typer.Option(None, "--set", help="Override a config field: key.path=value (repeatable).")


def _open(run: Path, preset: Optional[str], config: Optional[Path], overrides: Optional[List[str]]):
    return api.open_run(run, preset=preset, config_file=config, overrides=overrides or [])


# --- world and data ---------------------------------------------------------------


@app.command()
def world(
    out_dir: Path = typer.Option(..., "--out", help="Directory for the splits and world.json."),
    preset: str = typer.Option("quick", "--preset", help="tiny | quick | small | paper"),
    seed: int = typer.Option(0, "--seed"),
    overrides: Optional[List[str]] = SetOpt,
):
    """Render the embedded world's splits as shards plus world.json."""
    summary = api.world(out_dir, preset=preset, seed=seed, overrides=overrides or [])
    table = Table(title=f"world -> {out_dir}")
    for column in ("split", "style", "images", "top-3 class share", "held-out combination objects"):
        table.add_column(column)
    for name, s in summary["splits"].items():
        table.add_row(name, s["style"], str(s["images"]), f"{s['top3_class_share']:.1%}", str(s["heldout_combination_objects"]))
    out.print(table)
    if "lm_text" in summary:
        out.print(f"lm_text: {summary['lm_text']['captions']} captions for the embedded LM ({', '.join(summary['lm_text']['styles'])})")


@app.command()
def ingest(
    fmt: str = typer.Argument(..., help="coco | karpathy | jsonl | csv"),
    src: Path = typer.Argument(..., help="Captions JSON, Karpathy JSON, or a JSONL/CSV list."),
    out_dir: Path = typer.Option(..., "--out"),
    images: Optional[Path] = typer.Option(None, "--images", help="Image root (default: beside SRC)."),
    split: Optional[str] = typer.Option(None, "--split", help="Karpathy split: train (with restval) | val | test."),
    size: Optional[int] = typer.Option(None, "--size", help="Resize shorter side and centre-crop to SIZE px."),
    shard_size: int = typer.Option(5000, "--shard-size"),
    max_bad_fraction: float = typer.Option(0.2, "--max-bad-fraction"),
):
    """Write pair shards plus ingest_report.json from a real dataset."""
    report = api.ingest(fmt, src, out_dir, images=images, split=split, size=size, shard_size=shard_size, max_bad_fraction=max_bad_fraction)
    out.print_json(json.dumps(report))


@data_app.command("inspect")
def data_inspect(
    path: Path = typer.Argument(..., help="A world directory or a shard directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the statistics as JSON."),
):
    """Counts and statistics of shards, and a grid PNG of samples (inspect.png)."""
    stats = api.inspect(path)
    if as_json:
        print(json.dumps(stats, indent=2))
        return
    if "heldout_combinations" in stats:
        out.print(f"held-out (shape, colour) combinations: {', '.join(' '.join(c[::-1]) for c in stats['heldout_combinations'])}")
    table = Table(title=str(path))
    for column in ("split", "records", "caption words", "refs", "top-3 class share", "rarest class", "held-out objects", "grid"):
        table.add_column(column)
    for name, s in stats["splits"].items():
        table.add_row(
            name,
            str(s["records"]),
            str(s["caption_words"].get("mean", "-")),
            str(s["references_per_record"].get("mean", "-")),
            f"{s['top3_class_share']:.1%}" if "top3_class_share" in s else "-",
            f"{s['rarest_class_share']:.1%}" if "rarest_class_share" in s else "-",
            str(s.get("heldout_combination_objects", "-")),
            s.get("grid", "-"),
        )
    out.print(table)


# --- models -------------------------------------------------------------------------


def _print_stage(result) -> None:
    if not is_rank_zero():  # under torchrun every rank runs the command; one prints
        return
    out.print_json(json.dumps({"stage": result.name, "skipped": result.skipped, **{k: v for k, v in result.artifacts.items() if not isinstance(v, (dict, list))}}))


def _train(model: str, run: Path, preset, config, overrides, arm: str = "baseline", seed: Optional[int] = None):
    _print_stage(api.train(_open(run, preset, config, overrides), model, arm=arm, seed=seed))


@train_app.command("lm")
def train_lm(run: Path = RunOpt, preset: Optional[str] = PresetOpt, config: Optional[Path] = ConfigOpt, overrides: Optional[List[str]] = SetOpt):
    """Pre-train the embedded LM on the world's text (or register lm.path), then freeze it."""
    _train("lm", run, preset, config, overrides)


@train_app.command("vq")
def train_vq(run: Path = RunOpt, preset: Optional[str] = PresetOpt, config: Optional[Path] = ConfigOpt, overrides: Optional[List[str]] = SetOpt):
    """Train the VQ-GAN image tokenizer on the paired images (or data.vq_images / the world's images split); report PSNR, SSIM, codebook usage, oracle accuracy."""
    _train("vq", run, preset, config, overrides)


@train_app.command("t2i")
def train_t2i(run: Path = RunOpt, preset: Optional[str] = PresetOpt, config: Optional[Path] = ConfigOpt, overrides: Optional[List[str]] = SetOpt):
    """Train the MUSE-style text-to-image-token generator on the paired data, then evaluate it on eval split A."""
    opened = _open(run, preset, config, overrides)
    _print_stage(api.train(opened, "t2i"))
    _print_stage(api.evaluate_generator(opened))


@train_app.command("vlm")
def train_vlm(
    run: Path = RunOpt,
    arm: str = typer.Option("baseline", "--arm", help="baseline | synth2 | gold | genpair | real_extra | genpair_pixel | curated_topk | curated_random | curated_all"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    preset: Optional[str] = PresetOpt,
    config: Optional[Path] = ConfigOpt,
    overrides: Optional[List[str]] = SetOpt,
):
    """Train the captioning VLM of one experiment arm; works under torchrun."""
    _train("vlm", run, preset, config, overrides, arm=arm, seed=seed)


@train_app.command("clip")
def train_clip(run: Path = RunOpt, preset: Optional[str] = PresetOpt, config: Optional[Path] = ConfigOpt, overrides: Optional[List[str]] = SetOpt):
    """Train the controlled dual encoder (CLIPScore for curation) contrastively on the paired data; report its AUC."""
    _train("clip", run, preset, config, overrides)


@app.command()
def evaluate(
    shards: Path = typer.Argument(..., help="Benchmark shards with json 'references' (e.g. `synth2 ingest karpathy ... --split test`)."),
    run: Path = RunOpt,
    arm: str = typer.Option("baseline", "--arm"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    limit: Optional[int] = typer.Option(None, "--limit", help="Evaluate at most this many images."),
):
    """Zero-shot CIDEr/BLEU-4/METEOR/ROUGE-L of an arm's VLM on a benchmark split."""
    print(json.dumps(api.evaluate(_open(run, None, None, None), shards, arm=arm, seed=seed, limit=limit)))


@app.command()
def finetune(
    run: Path = RunOpt,
    train_shards: Path = typer.Option(..., "--train", help="Training pair shards (every reference becomes a training caption)."),
    eval_shards: Path = typer.Option(..., "--eval", help="Evaluation shards with json 'references'."),
    arm: str = typer.Option("baseline", "--arm"),
    steps: Optional[int] = typer.Option(None, "--steps", help="Default finetune.steps (1000)."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    limit: Optional[int] = typer.Option(None, "--limit", help="Evaluate at most this many images."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Default finetune.lr: the paper's 1e-5."),
    dropout: Optional[float] = typer.Option(None, "--dropout", help="Default finetune.dropout: the paper's 0.1."),
    overrides: Optional[List[str]] = SetOpt,
):
    """Fine-tune an arm's VLM on a benchmark's training split, then score it (the paper's Table 4 setting)."""
    flags = {"steps": steps, "lr": lr, "dropout": dropout}
    settings = list(overrides or []) + [f"finetune.{key}={value}" for key, value in flags.items() if value is not None]
    other = [item for item in settings if not item.startswith("finetune.")]
    if other:  # the rest of the config belongs to the stages the run has trained
        raise typer.BadParameter(f"finetune takes finetune.* settings only, not {other[0]!r}", param_hint="--set")
    print(json.dumps(api.finetune(_open(run, None, None, settings), train_shards, eval_shards, arm=arm, seed=seed, limit=limit)))


@app.command()
def curate(run: Path = RunOpt, preset: Optional[str] = PresetOpt, config: Optional[Path] = ConfigOpt, overrides: Optional[List[str]] = SetOpt):
    """SynthVLM curation: filter the caption pool, synthesise, score CLIPScore + SSIM, keep the top K; LLaVA JSON + shards."""
    result = api.curate(_open(run, preset, config, overrides))
    out.print_json(json.dumps({k: v for k, v in result.items() if k != "sets"}))


@app.command()
def encode(
    shards: List[Path] = typer.Argument(..., help="Image shards (directories, globs or files)."),
    run: Path = RunOpt,
    out_dir: Path = typer.Option(..., "--out"),
    png: bool = typer.Option(False, "--png", help="Also store the tokens decoded back to images."),
):
    """Token shards beside image shards, with the same keys."""
    count = api.encode(_open(run, None, None, None), shards, out_dir, png=png)
    out.print(f"encoded {count} images -> {out_dir}")


@app.command()
def generate(
    run: Path = RunOpt,
    captions_file: Path = typer.Option(..., "--captions", help="JSONL with a 'caption' field, or one caption per line."),
    out_dir: Path = typer.Option(..., "--out"),
    pixels: bool = typer.Option(False, "--pixels", help="Also decode the tokens to images."),
    seed: int = typer.Option(0, "--seed"),
):
    """Synthetic image tokens (and images) for captions with the run's generator."""
    count = api.generate(_open(run, None, None, None), captions_file, out_dir, pixels=pixels, seed=seed)
    out.print(f"generated {count} token grids -> {out_dir}")


def _numbers(text: str, kind, option: str) -> list:
    try:
        return [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated numbers, got {text!r}", param_hint=option) from None


@app.command("sampler-sweep")
def sampler_sweep(
    run: Path = RunOpt,
    split: str = typer.Option("b", "--split", help="Eval split: a | b. Choose on b, report on a."),
    guidance: str = typer.Option("1,2,3,4", "--guidance", help="Guidance scales, comma-separated."),
    steps: str = typer.Option("24", "--steps", help="Sampler step counts, comma-separated."),
    preset: Optional[str] = PresetOpt,
    config: Optional[Path] = ConfigOpt,
    overrides: Optional[List[str]] = SetOpt,
):
    """The generator's oracle accuracy and FD against guidance and sampler steps (reuses the run's generator; trains one only if it is missing or its config or data changed). `--set sampler.*` holds for this sweep only; the run's config keeps its own decoding."""
    if split not in EVAL_SPLIT_NAMES:
        raise typer.BadParameter(f"eval split must be 'a' or 'b', got {split!r}", param_hint="--split")
    # decoding settings go to the sweep alone (the API refuses any other key); the rest open the run
    decoding = [o for o in overrides or [] if o.startswith("sampler.")]
    others = [o for o in overrides or [] if o not in decoding]
    result = api.sampler_sweep(
        _open(run, preset, config, others), split, _numbers(guidance, float, "--guidance"), _numbers(steps, int, "--steps"), decoding
    )
    table = Table(title=f"sampler sweep on eval split {split.upper()}, {result['captions']} captions")
    columns = [("steps", "steps"), ("guidance", "guidance"), ("oracle_seen", "oracle seen"), ("oracle_heldout", "held-out"),
               ("oracle_count_right", "count"), ("oracle_colours_right", "colours"), ("oracle_shapes_right", "shapes"), ("fd_vq", "FD (VQ)")]
    for _, title in columns:
        table.add_column(title)
    for row in result["rows"]:
        table.add_row(*(_cell(key, row.get(key)) for key, _ in columns))
    out.print(table)
    out.print(f"{result['json']}\n{result['plot']}")


def _cell(key: str, value) -> str:
    if value is None:
        return "-"
    if key.startswith("oracle"):
        return f"{value:.1%}"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


@app.command()
def caption(
    images: List[Path] = typer.Argument(..., help="Image files."),
    run: Path = RunOpt,
    arm: str = typer.Option("baseline", "--arm"),
):
    """Caption images with a trained VLM."""
    for path, text in zip(images, api.caption(_open(run, None, None, None), images, arm=arm)):
        print(f"{path}\t{text}")


@app.command()
def captions(
    out_file: Path = typer.Option(..., "--out", help="Output JSONL."),
    backend: str = typer.Option("world", "--backend", help="world | openai | hf"),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="OpenAI-compatible server, e.g. http://localhost:8000/v1"),
    model: Optional[str] = typer.Option(None, "--model", help="Model name (openai) or local model directory (hf)."),
    classes: str = typer.Option("world", "--classes", help="world | imagenet21k | a txt/JSON class list"),
    n: int = typer.Option(1000, "--n"),
    seed: int = typer.Option(0, "--seed"),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", help="Requests in flight (openai)."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Seconds per request (openai)."),
    rpm: Optional[float] = typer.Option(None, "--rpm", help="Requests per minute at most, retries included (openai)."),
    overrides: Optional[List[str]] = SetOpt,
):
    """Synthetic captions from the paper's class-based prompt; cached, resumable, validated, deduplicated."""
    flags = {"base_url": base_url, "model": model, "concurrency": concurrency, "timeout": timeout, "requests_per_minute": rpm}
    extra = list(overrides or []) + [f"captions.{key}={value}" for key, value in flags.items() if value is not None]
    report = api.captions(out_file, backend=backend, classes=classes, n=n, seed=seed, overrides=extra)
    out.print_json(json.dumps({k: v for k, v in report.items() if k != "config"}))


@app.command()
def diversity(
    corpora: List[Path] = typer.Argument(..., help="Caption corpora (JSONL or text), or shard directories."),
    run: Optional[Path] = typer.Option(None, "--run", help="Embed with this run's frozen LM."),
    lm: Optional[Path] = typer.Option(None, "--lm", help="Embed with a local HF causal LM (mean-pooled hidden states)."),
    sentence_transformer: Optional[Path] = typer.Option(None, "--sentence-transformer", help="Embed with a local sentence-transformers model."),
    k: int = typer.Option(0, "--k", help="Clusters (0 = the elbow)."),
    json_out: Optional[Path] = typer.Option(None, "--json"),
    plot: Optional[Path] = typer.Option(None, "--plot"),
    seed: int = typer.Option(0, "--seed"),
    balance: bool = typer.Option(True, "--balance/--no-balance", help="Fit the clusters on the same number of captions from every corpus."),
    center: bool = typer.Option(False, "--center/--no-center", help="Subtract each corpus's mean embedding first (for embedders that separate corpora by style)."),
):
    """Co-cluster caption corpora: elbow, concentration (top-3/5) and entropy per corpus (Table 8, Figure 5)."""
    result = api.diversity(corpora, run=run, lm=lm, sentence_transformer=sentence_transformer, k=k, json_out=json_out, plot=plot, seed=seed, balance=balance, center=center)
    fitted = f", fitted on {result['fit_per_corpus']} per corpus" if result["fit_per_corpus"] else ""
    table = Table(title=f"semantic diversity, k={result['k']} (elbow {result['elbow_k']}){fitted}")
    for column in ("corpus", "captions", "top-3", "top-5", "entropy (bits)"):
        table.add_column(column)
    for name, c in result["corpora"].items():
        table.add_row(name, str(c["captions"]), f"{c['concentration_top3']:.1%}", f"{c['concentration_top5']:.1%}", f"{c['entropy']:.2f}")
    out.print(table)


@app.command()
def arms(
    run: Path = typer.Option(..., "--run", help="Run directory."),
    relative_to: str = typer.Option("baseline", "--relative-to", help="Reference arm for the relative CIDEr A column (same seed)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the rows as JSON."),
):
    """Every trained VLM arm of a run, per seed and mean over seeds, with CIDEr A relative to an arm."""
    rows = api.arms(run, relative_to)
    if json_out:
        json_out.write_text(json.dumps(rows, indent=2))
    table = Table(title=f"{run}: VLM arms (relative: CIDEr A over {relative_to}'s on the same seeds)")
    for column in ("arm", "seed", "CIDEr A", "CIDEr B", "distinct A", "gate openness", "steps/s", "relative"):
        table.add_column(column, no_wrap=True)
    for r in rows:
        cider_a = f"{r['CIDEr_a']:.3f}" + (f" ± {r['CIDEr_a_std']:.3f}" if "CIDEr_a_std" in r else "")
        cells = [f"{r[c]:.3f}" if c in r else "-" for c in ("CIDEr_b", "distinct_a", "gate_openness")]
        relative = "-" if r["CIDEr_a_relative"] is None else f"{r['CIDEr_a_relative']:.1%}"
        table.add_row(r["arm"], str(r["seed"]), cider_a, *cells, f"{r['steps_per_s']:.2f}" if "steps_per_s" in r else "-", relative)
    out.print(table)


@app.command()
def score(
    predictions: Path = typer.Option(..., "--predictions", help="COCO results format: [{image_id, caption}]"),
    references: Path = typer.Option(..., "--references", help="COCO captions format"),
):
    """CIDEr (CIDEr-D), BLEU-4, METEOR, ROUGE-L with pycocoevalcap, over the whole set."""
    print(json.dumps(api.score(predictions, references)))


@app.command()
def report(
    run: Path = typer.Option(..., "--run", help="Run directory with a results.json."),
    markdown: bool = typer.Option(False, "--markdown", help="Print the README's results table instead."),
    readme: Optional[Path] = typer.Option(None, "--readme", help="Write the results table into this README's <!-- results:PRESET --> block."),
    doc: Optional[Path] = typer.Option(None, "--doc", help="Write every table of the report into this document's <!-- results:PRESET --> block."),
):
    """Render report.md and report.html again from results.json; or the README's results table from it."""
    if doc:
        api.update_readme(doc, run, api.results_document(run))
        out.print(f"{doc}: tables of {run / 'results.json'} written")
        return
    if markdown or readme:
        table = api.results_table(run)
        if readme:
            api.update_readme(readme, run, table)
        print(table)
        return
    out.print_json(json.dumps(api.report(run)))


@app.command()
def reproduce(
    out_dir: Path = typer.Option(..., "--out", help="Run directory."),
    preset: Optional[str] = typer.Option("quick", "--preset", help="tiny | quick | small | paper"),
    config: Optional[Path] = ConfigOpt,
    overrides: Optional[List[str]] = SetOpt,
    jobs: Optional[int] = typer.Option(None, "--jobs", min=1, help="Worker processes building independent stages side by side, "
                                       "each with an equal share of the torch threads (default: 2 on a CPU with 2+ cores, else 1)."),
):
    """The whole pipeline and the paper's experiments; writes report.md, report.html and results.json."""
    results = api.reproduce(out_dir, preset=preset, config_file=config, overrides=overrides or [], jobs=jobs)
    out.print_json(json.dumps(results["claims"]))


# The signal that stopped the command, if any: typer turns the KeyboardInterrupt our handlers
# raise into a plain exit code, so the handlers say here what happened.
_stopped_by: list[int] = []


def _on_signal(signum, frame):
    _stopped_by.append(signum)
    raise KeyboardInterrupt


def main(argv: Optional[List[str]] = None) -> None:
    """Console-script entry point; `main([...])` is callable from tests.

    A user error prints one line naming what is wrong and exits 2; `--debug` (anywhere on the
    command line) shows the traceback instead. Ctrl-C exits 130 and SIGTERM 143 at once:
    everything finished is already on disk (stages, checkpoints, each LLM answer as it
    arrives), and rerunning the command resumes."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:
        args.remove("--debug")
    if argv is None:
        signal.signal(signal.SIGINT, _on_signal)
        signal.signal(signal.SIGTERM, _on_signal)
    try:
        code = app(args=args, prog_name="synth2", standalone_mode=False)
    except typer.Exit as e:
        code = e.exit_code
    except KeyboardInterrupt:
        code = 130
    except TyperException as e:  # typer's own click: a usage error, shown as click shows it
        e.show()
        code = e.exit_code
    except Exception as e:
        if debug:
            raise
        print(f"synth2: error: {one_line(e)}  (synth2 --debug ... shows the traceback)", file=sys.stderr)
        code = 2 if isinstance(e, USER_ERRORS) else 1
    if _stopped_by:
        print("synth2: interrupted; rerun the same command to resume", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        # not sys.exit: that would join worker threads still waiting on the network (up to
        # their timeout); nothing they hold is lost, since every answer is written as it lands
        os._exit(143 if _stopped_by[0] == signal.SIGTERM else 130)
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    sys.exit(main())
