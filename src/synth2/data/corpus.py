"""Caption-only corpora: JSONL (`{"caption": ..., ...}` per line) or plain text (one caption per line)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator

from synth2.data.quality import QualityReport
from synth2.data.text import BadCaption, clean_caption


def iter_captions(path: str | Path, report: QualityReport | None = None) -> Iterator[dict]:
    """Yield records with at least a "caption" field; bad lines are skipped and counted (or raise)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: caption corpus not found")
    is_jsonl = path.suffix in (".jsonl", ".json") or path.name.endswith(".jsonl.gz")
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            where = f"{path}:{number}"
            if not line.strip():
                continue
            try:
                if is_jsonl:
                    try:
                        record = json.loads(line)
                    except (json.JSONDecodeError, UnicodeDecodeError):
                        raise BadCaption("malformed_json") from None
                    if not isinstance(record, dict) or "caption" not in record:
                        raise BadCaption("no_caption_field")
                    record["caption"], conversion = clean_caption(record["caption"])
                else:
                    caption, conversion = clean_caption(line)
                    record = {"caption": caption}
            except BadCaption as e:
                if report is None:
                    raise ValueError(f"{where}: {e}") from None
                report.skip(e.reason, where)
                continue
            if report:
                if conversion:
                    report.convert(conversion)
                report.keep()
            yield record


def read_captions(path: str | Path, report: QualityReport | None = None) -> list[dict]:
    return list(iter_captions(path, report))


def write_captions(path: str | Path, records: Iterable[dict]) -> int:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(path, "w") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count
