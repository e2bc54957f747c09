"""Caption generation throughput: the world LLM (target >= 1,000 captions/s), and the
OpenAI-compatible HTTP backend against a loopback server at several concurrency levels.

The server answers after a fixed 50 ms (a stand-in for an LLM's latency), so the
HTTP numbers show how concurrency hides latency; they are not an LLM's speed.

    .venv/bin/python benchmarks/bench_captions.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from common import median_of, save

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from chat_server import ChatServer  # noqa: E402

from synth2.captions.backends import OpenAIBackend, WorldBackend
from synth2.captions.generate import CaptionsConfig, ValidationConfig, generate_captions
from synth2.world.llm import WorldLLM
from synth2.world.scene import WorldConfig, WorldSpec


def rate(backend, n: int, classes) -> float:
    cfg = CaptionsConfig(n=n, batch_size=64, validation=ValidationConfig(reask=0))
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        generate_captions(backend, classes, cfg, Path(out) / "c.jsonl", seed=0)
        return n / (time.perf_counter() - start)


def main(repeats: int = 3) -> None:
    spec = WorldSpec(WorldConfig(), 0)
    results = {}
    world, _ = median_of(lambda: rate(WorldBackend(WorldLLM(spec, noise=0.05)), 5000, spec.shapes), repeats)
    results["world_llm_captions_per_s"] = round(world)
    results["http_delay_s"] = 0.05
    results["http_captions_per_s_by_concurrency"] = {}
    with ChatServer(faulty_every=0, delay=0.05) as server:
        for concurrency in (1, 2, 4, 8, 16, 32):
            value, _ = median_of(lambda: rate(OpenAIBackend(server.url, "world-llm", concurrency=concurrency), 160, spec.shapes), repeats)
            results["http_captions_per_s_by_concurrency"][concurrency] = round(value, 1)
    save("captions", results)


if __name__ == "__main__":
    main()
