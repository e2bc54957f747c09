"""Rendering + shard writing of the quick world at 32 px on one core (target >= 2,000 images/s).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_world.py
"""

from __future__ import annotations

import tempfile
import time

from common import median_of, save

from synth2.config import quick
from synth2.world.splits import build_world


def main(repeats: int = 5) -> None:
    cfg = quick()
    total = cfg.world.paired + sum(c.size for c in cfg.world.text_only.values()) + 2 * cfg.world.eval

    def once() -> float:
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            build_world(cfg.world, 0, out)
            return total / (time.perf_counter() - start)

    median, values = median_of(once, repeats)
    save("world", {"images": total, "resolution": cfg.world.resolution, "images_per_s_median": round(median), "runs": [round(v) for v in values]})


if __name__ == "__main__":
    main()
