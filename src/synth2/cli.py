"""The `synth2` command line: thin commands over the library (synth2.api).

Every command that works on a run takes `--run DIR` plus optional `--preset`,
`--config FILE` and repeated `--set key.path=value`; without them an existing run's
saved config.yaml is used. Finished stages are skipped, so rerunning resumes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from synth2 import api

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Synthetic captions and image embeddings for VLMs.")
train_app = typer.Typer(no_args_is_help=True, help="Train one model of the pipeline in a run directory.")
data_app = typer.Typer(no_args_is_help=True, help="Look at pair shards.")
app.add_typer(train_app, name="train")
app.add_typer(data_app, name="data")

out = Console()

RunOpt = typer.Option(..., "--run", help="Run directory (created if missing).")
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


def main(argv: Optional[List[str]] = None) -> None:
    """Console-script entry point; `main([...])` is callable from tests."""
    try:
        app(args=argv, prog_name="synth2", standalone_mode=argv is None)
    except SystemExit as e:
        if e.code:
            raise


if __name__ == "__main__":
    sys.exit(main())
