"""Peak memory of the VQ stage's training: images streamed from shards against images loaded.

Writes N 256-px images (random coloured rectangles, PNG) into shards of 1,000 once, then runs a
few VQ training steps in a fresh process per setting and reports the peak resident set size
(the process's, and the largest of its DataLoader workers). In memory, the stage first decodes
every image into one uint8 array (`load_pairs`); streamed, DataLoader workers read batches from
the shards (`synth2.data.stream.ImageStream`).

    .venv/bin/python benchmarks/bench_stream_memory.py --images 200000 --loaded 10000,20000,40000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from common import save

RESOLUTION = 256


def write_shards(directory: Path, count: int) -> Path:
    from PIL import Image, ImageDraw

    from synth2.data.shards import Pair, ShardWriter

    done = directory / f"n{count}"
    if (done / "complete").exists():
        return done
    rng = np.random.default_rng(0)
    with ShardWriter(done, shard_size=1000) as writer:
        for i in range(count):
            image = Image.new("RGB", (RESOLUTION, RESOLUTION), tuple(int(c) for c in rng.integers(0, 256, 3)))
            draw = ImageDraw.Draw(image)
            for _ in range(3):
                x, y = rng.integers(0, RESOLUTION - 32, 2)
                w, h = rng.integers(16, 128, 2)
                draw.rectangle([int(x), int(y), int(x + w), int(y + h)], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
            writer.write(Pair(f"img{i:07d}", "rectangles", image=np.asarray(image)))
    (done / "complete").write_text("")
    return done


def train_and_measure(shards: str, mode: str, steps: int, batch: int, workers: int) -> None:
    """In a fresh process: a few VQ steps on `shards`; prints peak RSS in MiB."""
    import dataclasses

    import torch

    from synth2.config import quick
    from synth2.data.arrays import load_pairs
    from synth2.data.stream import ImageStream
    from synth2.train.distributed import DistInfo
    from synth2.train.vq import VQTask

    torch.manual_seed(0)
    cfg = quick(world_codes=False).vq  # joint codes, as BENCHMARKS.md measures
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, batch_size=batch), channels_last=False)
    images = (ImageStream(shards, batch, 0, RESOLUTION, workers=workers) if mode == "stream"
              else load_pairs(shards, resolution=RESOLUTION).images)
    task = VQTask(cfg, images, DistInfo(), 0)
    from synth2.train.loop import StepContext

    ctx = StepContext(cfg.train, DistInfo())
    for step in range(steps):
        task.step(task.batch(step), step, ctx)
    del task
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"peak_rss_mib": round(own), "largest_worker_rss_mib": round(workers_peak)}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=200_000, help="images the streamed stage reads")
    parser.add_argument("--loaded", default="10000,20000,40000", help="image counts the in-memory stage loads")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "synth2_stream_bench"))
    parser.add_argument("--measure", nargs=2, metavar=("SHARDS", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        train_and_measure(args.measure[0], args.measure[1], args.steps, args.batch, args.workers)
        return
    data = Path(args.data)
    runs = []
    for count, mode in [(args.images, "stream")] + [(int(n), "memory") for n in args.loaded.split(",")]:
        shards = write_shards(data, count)
        out = subprocess.run([sys.executable, __file__, "--measure", str(shards), mode, "--steps", str(args.steps), "--batch", str(args.batch),
                              "--workers", str(args.workers)], capture_output=True, text=True, check=True)
        row = {"mode": mode, "images": count, "image_gib": round(count * RESOLUTION * RESOLUTION * 3 / 2**30, 2), **json.loads(out.stdout.strip().splitlines()[-1])}
        print(json.dumps(row), flush=True)
        runs.append(row)
    save("stream_memory", {"resolution": RESOLUTION, "steps": args.steps, "batch": args.batch, "workers": args.workers, "runs": runs})


if __name__ == "__main__":
    main()
