"""`synth2 data inspect`: counts and statistics of pair shards, and a grid of samples."""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np

from synth2.data.quality import QualityReport
from synth2.data.shards import read_pairs


def inspect_shards(directory: str | Path, heldout: set[tuple[str, str]] | None = None, grid_samples: int = 16) -> dict:
    """Statistics of one shard directory; writes `inspect.png` (a grid of samples) beside the shards."""
    directory = Path(directory)
    report = QualityReport(source=str(directory), max_bad_fraction=1.0)
    sizes: Counter = Counter()
    words: list[int] = []
    references: list[int] = []
    shapes: Counter = Counter()
    heldout_objects = 0
    records = with_images = with_tokens = 0
    token_shape = None
    samples = []
    for pair in read_pairs(directory, decode_images=True, report=report, split=False):
        records += 1
        words.append(len(pair.caption.split()))
        references.append(len(pair.meta.get("references", [pair.caption])))
        if pair.image is not None:
            with_images += 1
            sizes[f"{pair.image.shape[1]}x{pair.image.shape[0]}"] += 1
        if pair.tokens is not None:
            with_tokens += 1
            token_shape = list(pair.tokens.shape)
        scene = pair.meta.get("scene")
        if scene:
            for obj in scene["objects"]:
                shapes[obj["shape"]] += 1
                heldout_objects += (obj["shape"], obj["colour"]) in (heldout or set())
        if len(samples) < grid_samples and pair.image is not None:
            samples.append((pair.image, pair.caption))
    stats: dict = {
        "directory": str(directory),
        "records": records,
        "with_images": with_images,
        "with_tokens": with_tokens,
        "image_sizes": dict(sizes.most_common(5)),
        "token_shape": token_shape,
        "caption_words": _summary(words),
        "references_per_record": _summary(references),
        "bad_records": dict(report.skipped),
    }
    if shapes:
        total = sum(shapes.values())
        ordered = shapes.most_common()
        stats["class_counts"] = dict(ordered)
        stats["top3_class_share"] = round(sum(n for _, n in ordered[:3]) / total, 4)
        stats["rarest_class_share"] = round(ordered[-1][1] / total, 4)
        if heldout is not None:
            stats["heldout_combination_objects"] = heldout_objects
    if samples:
        stats["grid"] = str(write_grid(samples, directory / "inspect.png"))
    return stats


def inspect_path(path: str | Path) -> dict:
    """A world directory (with world.json: every split) or one shard directory."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such directory")
    world_file = path / "world.json"
    if world_file.exists():
        world = json.loads(world_file.read_text())
        heldout = {tuple(c) for c in world["vocabulary"]["heldout_combinations"]}
        splits = {name: inspect_shards(path / name, heldout) for name in world["splits"]}
        return {"world": str(path), "heldout_combinations": sorted(map(list, heldout)), "splits": splits}
    return {"splits": {path.name: inspect_shards(path)}}


def _summary(values: list[int]) -> dict:
    if not values:
        return {}
    array = np.asarray(values)
    return {"mean": round(float(array.mean()), 2), "median": float(np.median(array)), "max": int(array.max())}


def write_grid(samples: list[tuple[np.ndarray, str]], path: Path, columns: int = 4) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = (len(samples) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (image, caption) in zip(axes.flat, samples):
        ax.imshow(image, interpolation="nearest")
        ax.set_title("\n".join(textwrap.wrap(caption, 34)[:4]), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
