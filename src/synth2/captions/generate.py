"""Generate synthetic captions: draw classes, ask a backend, validate, deduplicate, write JSONL.

Item i draws its class and its request seed from (seed, i), so a class drawn twice
gets two different captions and reruns ask the same questions. Every answer is
appended to a cache keyed by (backend, model, prompt, parameters, seed) and flushed
at once: a crash, even kill -9, loses nothing answered, and a rerun asks only what
was not. Rejected answers are counted by reason and, with `reask`, asked again with
a new seed.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from synth2.captions.prompts import CAPTION_OPENING, PAPER_PROMPT, fill
from synth2.errors import UserError
from synth2.progress import MetricsWriter, progress_bar


@dataclass
class ValidationConfig:
    prefix: str = CAPTION_OPENING
    min_words: int = 30
    max_words: int = 40
    # Re-ask a rejected item up to this many times, each with a new seed.
    reask: int = 1


@dataclass
class CaptionsConfig:
    backend: str = "world"  # world | openai | hf
    # OpenAI-compatible server ("" = what the openai client reads: OPENAI_BASE_URL, else OpenAI's)
    base_url: str = ""
    model: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    classes: str = "world"  # world | imagenet21k | path to a txt/JSON class list
    n: int = 2000
    prompt: str = PAPER_PROMPT
    temperature: float = 1.0
    top_p: float = 0.95
    max_tokens: int = 120
    concurrency: int = 8
    timeout: float = 60.0
    max_retries: int = 6
    requests_per_minute: float = 0.0  # 0 = no limit; counts retries too
    batch_size: int = 64
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    near_duplicate_threshold: float = 0.9  # MinHash Jaccard above which captions count as duplicates
    world_noise: float = 0.05  # the world LLM's misbehaviour rate


def validate(text: str, cfg: ValidationConfig) -> str | None:
    """None if the caption is acceptable, else the reason it is rejected."""
    text = text.strip()
    if not text:
        return "empty"
    if cfg.prefix and not text.startswith(cfg.prefix):
        return "missing_prefix"
    words = len(text.split())
    if words < cfg.min_words:
        return "too_short"
    if words > cfg.max_words:
        return "too_long"
    return None


def cache_key(backend: str, model: str, prompt: str, params: dict, seed: int) -> str:
    payload = json.dumps({"backend": backend, "model": model, "prompt": prompt, "params": params, "seed": seed}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


class AnswerCache:
    """Append-only JSONL of {"key", "answer"}; a torn last line (kill -9) is ignored."""

    def __init__(self, path: Path):
        self.path = path
        self.answers: dict[str, str] = {}
        torn = False
        if path.exists():
            with open(path, encoding="utf-8") as f:
                for line in f:
                    torn = not line.endswith("\n")
                    try:
                        record = json.loads(line)
                        self.answers[record["key"]] = record["answer"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        continue
        self._file = open(path, "a", encoding="utf-8")
        if torn:
            self._file.write("\n")  # end a torn line, so the next record starts clean

    def add(self, key: str, answer: str) -> None:
        self.answers[key] = answer
        self._file.write(json.dumps({"key": key, "answer": answer}, ensure_ascii=False) + "\n")
        self._file.flush()  # in the OS's hands: survives kill -9 (fsync per answer would halve throughput)

    def close(self) -> None:
        self._file.close()


_NORMALISE = re.compile(r"[^a-z0-9 ]+")


def normalise(text: str) -> str:
    return " ".join(_NORMALISE.sub(" ", text.lower()).split())


def deduplicate(captions: list[str], threshold: float, seed: int = 0) -> tuple[list[int], dict[str, int]]:
    """Indices of captions to keep: exact duplicates (after normalisation) and near-duplicates
    (MinHash LSH over word 3-gram shingles, Jaccard >= threshold) are dropped."""
    from datasketch import MinHash, MinHashLSH

    keep, seen, unique = [], set(), []
    counts = {"exact_duplicate": 0, "near_duplicate": 0}
    for index, caption in enumerate(captions):
        norm = normalise(caption)
        if norm in seen:
            counts["exact_duplicate"] += 1
            continue
        seen.add(norm)
        unique.append((index, norm.split()))
    if threshold >= 1.0:
        return [i for i, _ in unique], counts
    # one bulk call shares the hash permutations and vectorises the updates (5x faster than per caption)
    shingles = [[" ".join(w[i : i + 3]).encode() for i in range(max(1, len(w) - 2))] for _, w in unique]
    lsh = MinHashLSH(threshold=threshold, num_perm=64)
    for (index, _), signature in zip(unique, MinHash.bulk(shingles, num_perm=64, seed=seed)):
        if lsh.query(signature):
            counts["near_duplicate"] += 1
            continue
        lsh.insert(str(index), signature)
        keep.append(index)
    return keep, counts


def plan_items(classes: list[str], n: int, seed: int) -> list[tuple[str, int]]:
    """(class, request seed) for each of the n items."""
    items = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        items.append((classes[int(rng.integers(len(classes)))], seed * 1_000_003 + i))
    return items


def generate_captions(backend, classes: list[str], cfg: CaptionsConfig, out: str | Path, seed: int) -> dict:
    """Write `out` (JSONL: caption, class, seed) and `out`.report.json; returns the report."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cache = AnswerCache(out.with_name(out.name + ".cache.jsonl"))
    metrics = MetricsWriter(out.with_name(out.name + ".metrics.jsonl"))
    params = {"temperature": cfg.temperature, "top_p": cfg.top_p, "max_tokens": cfg.max_tokens}
    items = plan_items(classes, cfg.n, seed)
    rejects: dict[str, int] = {}
    accepted: dict[int, dict] = {}
    pending = list(range(len(items)))
    asked = from_cache = 0
    started = time.time()
    with progress_bar(f"captions ({backend.name})", len(items)) as bar:
        for attempt in range(cfg.validation.reask + 1):
            retry_next = []
            for start in range(0, len(pending), cfg.batch_size):
                chunk = pending[start : start + cfg.batch_size]
                prompts = [fill(cfg.prompt, items[i][0]) for i in chunk]
                seeds = [items[i][1] + attempt * 7_919_993 for i in chunk]
                keys = [cache_key(backend.name, backend.model, p, params, s) for p, s in zip(prompts, seeds)]
                missing = [j for j, k in enumerate(keys) if k not in cache.answers]
                if missing:
                    # each answer is cached the moment it arrives: a kill loses only what is in flight
                    backend.complete_batch(
                        [prompts[j] for j in missing], [seeds[j] for j in missing], on_answer=lambda m, answer: cache.add(keys[missing[m]], answer)
                    )
                    asked += len(missing)
                from_cache += len(chunk) - len(missing)
                for i, key, s in zip(chunk, keys, seeds):
                    answer = cache.answers.get(key)
                    if answer is None:
                        rejects["backend_error"] = rejects.get("backend_error", 0) + 1
                        continue
                    reason = validate(answer, cfg.validation)
                    if reason is None:
                        accepted[i] = {"caption": answer.strip(), "class": items[i][0], "seed": s}
                        bar.advance(1)
                    else:
                        rejects[reason] = rejects.get(reason, 0) + 1
                        retry_next.append(i)
                elapsed = time.time() - started
                metrics.write(len(accepted), asked=asked, cached=from_cache, per_s=round((asked + from_cache) / max(elapsed, 1e-9), 2))
            pending = retry_next
            if not pending:
                break
    cache.close()
    order = sorted(accepted)
    keep, duplicates = deduplicate([accepted[i]["caption"] for i in order], cfg.near_duplicate_threshold, seed)
    records = [accepted[order[k]] for k in keep]
    with open(out, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    report = {
        "requested": cfg.n,
        "written": len(records),
        "asked": asked,
        "from_cache": from_cache,
        "rejected": rejects,
        "unanswered": len(pending),
        "duplicates": duplicates,
        "backend": {"name": backend.name, "model": backend.model, **backend.stats.to_json()},
        "seconds": round(time.time() - started, 2),
        "config": asdict(cfg) | {"prompt": cfg.prompt},
    }
    out.with_name(out.name + ".report.json").write_text(json.dumps(report, indent=2) + "\n")
    if cfg.n and not records:
        failures = report["backend"].get("failures") or rejects
        raise UserError(f"{out}: the {backend.name} backend gave no usable caption for {cfg.n} prompts ({failures}); see {out.name}.report.json")
    return report
