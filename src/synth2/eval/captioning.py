"""Captioning metrics with pycocoevalcap: files first, then scores over the whole set.

Predictions are written in the COCO results format (`[{"image_id", "caption"}]`),
references in the COCO captions format, and both are scored by pycocoevalcap with
its PTB tokenizer. CIDEr (pycocoevalcap's CIDEr-D: clipped n-gram counts and a
Gaussian length penalty) takes its IDF from the evaluated references, so it is only
meaningful over a whole set, never per image. Values are on pycocoevalcap's scale
(CIDEr 1.0 = "100" in papers).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import json
import os
import sys
from functools import lru_cache
from pathlib import Path

from synth2.errors import UserError

METRICS = ("CIDEr", "Bleu_4", "METEOR", "ROUGE_L")


def write_predictions(path: str | Path, image_ids: list, captions: list[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([{"image_id": i, "caption": c} for i, c in zip(image_ids, captions)], indent=1))
    return path


def write_references(path: str | Path, image_ids: list, references: list[list[str]]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    annotations = []
    for image_id, refs in zip(image_ids, references):
        for ref in refs:
            annotations.append({"image_id": image_id, "id": len(annotations), "caption": ref})
    data = {
        "info": {"description": "synth2 references"},
        "licenses": [],
        "type": "captions",
        "images": [{"id": i} for i in image_ids],
        "annotations": annotations,
    }
    path.write_text(json.dumps(data, indent=1))
    return path


def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None


def _load(predictions_path: Path, references_path: Path) -> tuple[dict, dict]:
    predictions, references = _read_json(predictions_path), _read_json(references_path)
    if not isinstance(predictions, list) or not all(isinstance(p, dict) and {"image_id", "caption"} <= set(p) for p in predictions):
        raise UserError(f"{predictions_path}: expected the COCO results format [{{'image_id', 'caption'}}, ...]")
    if not isinstance(references, dict) or not isinstance(references.get("annotations"), list):
        raise UserError(f"{references_path}: expected the COCO captions format with 'annotations'")
    if not predictions:
        raise UserError(f"{predictions_path}: no predictions to score")
    if not references["annotations"]:
        raise UserError(f"{references_path}: no reference captions to score against")
    for path, records in ((predictions_path, predictions), (references_path, references["annotations"])):
        bad = next((i for i, r in enumerate(records) if not isinstance(r.get("caption"), str)), None)
        if bad is not None:
            raise UserError(f"{path}: record {bad} (image_id {records[bad].get('image_id')!r}) has no caption text ({records[bad].get('caption')!r})")
    gts: dict = {}
    for ann in references["annotations"]:
        gts.setdefault(ann["image_id"], []).append({"caption": ann["caption"]})
    res: dict = {}
    for p in predictions:
        if p["image_id"] in res:
            raise ValueError(f"{predictions_path}: image_id {p['image_id']} has more than one prediction")
        res[p["image_id"]] = [{"caption": p["caption"]}]
    unknown = [i for i in res if i not in gts]
    if unknown:
        raise ValueError(f"{predictions_path}: {len(unknown)} predictions have no references (e.g. image_id {unknown[0]})")
    missing = [i for i in gts if i not in res]
    if missing:
        raise ValueError(f"{predictions_path}: {len(missing)} reference images have no prediction (e.g. image_id {missing[0]})")
    return gts, res


def score_files(predictions_path: str | Path, references_path: str | Path, metrics: tuple[str, ...] = METRICS) -> dict[str, float]:
    """pycocoevalcap scores of a predictions file against a references file."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    gts, res = _load(Path(predictions_path), Path(references_path))
    tokenizer = PTBTokenizer()
    with _quiet_java():
        gts, res = tokenizer.tokenize(gts), tokenizer.tokenize(res)
    scores: dict[str, float] = {}
    for name, scorer in _scorers(metrics):
        with contextlib.redirect_stdout(io.StringIO()):  # Bleu prints its internals
            value = _within(SCORER_TIMEOUT_S, name, scorer, gts, res)
        if isinstance(value, list):  # Bleu returns Bleu_1..4
            for n, v in enumerate(value, start=1):
                if f"Bleu_{n}" in metrics:
                    scores[f"Bleu_{n}"] = float(v)
        else:
            scores[name] = float(value)
    return scores


# METEOR talks to a Java process over pipes; if that process dies or stalls, pycocoevalcap
# waits forever. No scorer takes this long on any eval split synth2 writes.
SCORER_TIMEOUT_S = 600.0


def _within(seconds: float, name: str, scorer, gts: dict, res: dict):
    """`scorer.compute_score(gts, res)[0]`, or an error after `seconds` (the stalled METEOR
    process is killed, and the next call starts a fresh one)."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    future = pool.submit(scorer.compute_score, gts, res)
    try:
        return future.result(timeout=seconds)[0]
    except concurrent.futures.TimeoutError:
        if name == "METEOR":
            scorer.meteor_p.kill()
            _meteor.cache_clear()
        raise RuntimeError(f"{name} did not answer within {seconds:.0f} s; its Java process was stopped") from None
    finally:
        pool.shutdown(wait=False)


@contextlib.contextmanager
def _quiet_java():
    """Silence the PTB tokenizer's Java process, which writes progress to the inherited stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


@lru_cache(maxsize=1)
def _meteor():
    """One METEOR Java process for the whole session: starting it takes seconds."""
    from pycocoevalcap.meteor.meteor import Meteor

    return Meteor()


def _scorers(metrics: tuple[str, ...]):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    out = []
    if any(m.startswith("Bleu") for m in metrics):
        out.append(("Bleu", Bleu(4)))
    if "METEOR" in metrics:
        out.append(("METEOR", _meteor()))
    if "ROUGE_L" in metrics:
        out.append(("ROUGE_L", Rouge()))
    if "CIDEr" in metrics:
        out.append(("CIDEr", Cider()))
    return out


def evaluate_captions(directory: str | Path, name: str, image_ids: list, predictions: list[str], references: list[list[str]], metrics=METRICS) -> dict[str, float]:
    """Write `<name>.predictions.json` and `<name>.references.json` under `directory`, then score them."""
    directory = Path(directory)
    pred = write_predictions(directory / f"{name}.predictions.json", image_ids, predictions)
    refs = write_references(directory / f"{name}.references.json", image_ids, references)
    return score_files(pred, refs, tuple(metrics))
