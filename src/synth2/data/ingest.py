"""Ingest real image-caption data into pair shards.

Sources: COCO captions JSON (`captions_train2014.json`), Karpathy split JSON
(`dataset_coco.json`, `dataset_flickr30k.json`), and JSONL/CSV lists of
(image path, caption). Each image becomes one record: the first caption in
`.txt`, all of them in `json["references"]`, the image bytes passed through when
they are already RGB PNG/JPEG (re-encoded as PNG otherwise).

Bad records are skipped and counted by reason in `ingest_report.json`; the run stops
only when the bad share passes `max_bad_fraction`. Ingest resumes after an
interruption: `ingest_state.json` records, at every finished shard, how many source
records were consumed and what the report said then.
"""

from __future__ import annotations

import csv
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from PIL import Image

from synth2.data.images import BadImage, encode_png, read_image_file, resize_center_crop
from synth2.data.quality import QualityReport, TooManyBadRecords
from synth2.data.shards import Pair, ShardWriter
from synth2.data.text import BadCaption, clean_caption, safe_key
from synth2.errors import UserError
from synth2.progress import progress_bar

FORMATS = ("coco", "karpathy", "jsonl", "csv")
IMAGE_FIELDS = ("image", "image_path", "filepath", "file_name", "path", "filename")
CAPTION_FIELDS = ("caption", "text", "sentence")


@dataclass
class SourceRecord:
    """One image and its captions as the source lists them; `error` marks an unusable entry."""

    key: str
    path: Path
    captions: list = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    error: str = ""


def _read_json(path: Path) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def coco_records(src: Path, images: Path) -> list[SourceRecord]:
    data = _read_json(src)
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise ValueError(f"{src}: not a COCO captions file (needs 'images' and 'annotations')")
    records: list[SourceRecord] = []
    by_id: dict = {}
    for entry in data["images"]:
        image_id, name = entry.get("id"), entry.get("file_name")
        if image_id is None or not name:
            records.append(SourceRecord("", Path(str(name)), error="malformed_entry"))
        elif image_id in by_id:
            records.append(SourceRecord("", images / name, error="duplicate_key"))
        else:
            by_id[image_id] = SourceRecord(safe_key(Path(name).stem), images / name, meta={"image_id": image_id})
            records.append(by_id[image_id])
    for ann in data["annotations"]:
        record = by_id.get(ann.get("image_id"))
        if record is not None:
            record.captions.append(ann.get("caption", ""))
    return records


def karpathy_records(src: Path, images: Path, split: str | None) -> list[SourceRecord]:
    data = _read_json(src)
    if not isinstance(data, dict) or "images" not in data:
        raise ValueError(f"{src}: not a Karpathy split file (needs 'images')")
    records = []
    for entry in data["images"]:
        entry_split = entry.get("split")
        # Karpathy's "restval" images are conventionally trained on
        if split and entry_split != split and not (split == "train" and entry_split == "restval"):
            continue
        name = entry.get("filename", "")
        if not name:
            records.append(SourceRecord("", Path(""), error="malformed_entry"))
            continue
        captions = [s.get("raw", " ".join(s.get("tokens", []))) for s in entry.get("sentences", [])]
        meta = {"image_id": entry.get("cocoid", entry.get("imgid")), "split": entry_split}
        records.append(SourceRecord(safe_key(Path(name).stem), images / entry.get("filepath", "") / name, captions, meta))
    return records


def _pick(row: dict, names: tuple[str, ...]) -> str | None:
    for name in names:
        if row.get(name) not in (None, ""):
            return str(row[name])
    return None


def list_records(images: Path, rows: Iterator[dict]) -> list[SourceRecord]:
    """JSONL/CSV rows -> one record per image; rows naming the same image merge their captions."""
    records: list[SourceRecord] = []
    by_path: dict[str, SourceRecord] = {}
    for number, row in enumerate(rows, start=1):
        image = _pick(row, IMAGE_FIELDS)
        if image is None:
            records.append(SourceRecord("", Path(f"row {number}"), error="malformed_entry"))
            continue
        record = by_path.get(image)
        if record is None:
            record = SourceRecord(safe_key(Path(image).stem), images / image, meta={"row": number})
            by_path[image] = record
            records.append(record)
        record.captions.append(_pick(row, CAPTION_FIELDS) or "")
    return records


def _jsonl_rows(src: Path) -> Iterator[dict]:
    with open(src, "rb") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                row = None
            yield row if isinstance(row, dict) else {}


def _csv_rows(src: Path) -> Iterator[dict]:
    with open(src, newline="", encoding="utf-8", errors="surrogateescape") as f:
        yield from csv.DictReader(f)


def source_records(fmt: str, src: str | Path, images: str | Path | None = None, split: str | None = None) -> list[SourceRecord]:
    if fmt not in FORMATS:
        raise ValueError(f"unknown ingest format {fmt!r}; choose one of {FORMATS}")
    src = Path(src)
    if not src.exists():
        raise FileNotFoundError(f"{src}: source file not found")
    root = Path(images) if images else src.parent
    if fmt == "coco":
        return coco_records(src, root)
    if fmt == "karpathy":
        return karpathy_records(src, root, split)
    return list_records(root, _jsonl_rows(src) if fmt == "jsonl" else _csv_rows(src))


def ingest(
    fmt: str,
    src: str | Path,
    out: str | Path,
    images: str | Path | None = None,
    split: str | None = None,
    size: int | None = None,
    shard_size: int = 5000,
    max_bad_fraction: float = 0.2,
) -> dict:
    """Write `out/shard-*.tar` and `out/ingest_report.json`; returns the report."""
    records = source_records(fmt, src, images, split)
    if not records:
        raise UserError(f"{src}: no records to ingest (an empty {fmt} file)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "ingest_state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {"consumed": 0, "shards": 0, "report": None}
    _drop_unrecorded_shards(out, state["shards"])
    report = QualityReport(source=str(src), max_bad_fraction=max_bad_fraction)
    if state["report"]:
        report.kept = state["report"]["kept"]
        report.skipped.update(state["report"]["skipped"])
        report.converted.update(state["report"]["converted"])
        report.examples.update(state["report"]["examples"])
    seen_keys = _keys_in_shards(sorted(out.glob("shard-*.tar")))
    writer = ShardWriter(out, prefix="shard", shard_size=shard_size, start_shard=state["shards"])

    def checkpoint(consumed: int) -> None:
        state.update(consumed=consumed, shards=writer.next_index, report=report.to_json())
        tmp = state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, state_path)

    try:
        with progress_bar(f"ingest {fmt}", len(records), completed=state["consumed"]) as bar:
            for index in range(state["consumed"], len(records)):
                closed = len(writer.completed)
                _ingest_one(records[index], writer, report, seen_keys, size)
                bar.advance(kept=report.kept, skipped=sum(report.skipped.values()))
                if len(writer.completed) > closed:
                    checkpoint(index + 1)
        report.check(final=True)  # before the last shard is published
    except TooManyBadRecords as error:
        # stop, but say what was found; the open shard stays a .tar.tmp, never a finished-looking .tar
        report.write(out / "ingest_report.json", stopped=str(error))
        writer.discard()
        raise
    writer.close()
    checkpoint(len(records))
    report.write(out / "ingest_report.json")
    return report.to_json()


def _drop_unrecorded_shards(out: Path, recorded: int) -> None:
    """Remove shards an interrupted run finished after its last state write: their records are
    consumed again from the recorded position, under the same keys."""
    for path in [*out.glob("shard-*.tar"), *out.glob("shard-*.tar.tmp")]:
        index = path.name.split("-", 1)[1].split(".", 1)[0]
        if not index.isdigit() or int(index) >= recorded:
            path.unlink()


def _keys_in_shards(shards: list[Path]) -> dict[str, Path | None]:
    """Keys already written by an interrupted run (their source paths are not kept)."""
    keys: dict[str, Path | None] = {}
    for shard in shards:
        with tarfile.open(shard) as tar:
            for name in tar.getnames():
                keys[name.split(".", 1)[0]] = None
    return keys


def _image_bytes(path: Path, size: int | None, report: QualityReport) -> tuple[bytes, str]:
    pixels, conversion = read_image_file(path)
    if conversion:
        report.convert(conversion)
    if size is None and conversion is None:
        with Image.open(path) as image:
            fmt = image.format
        if fmt in ("JPEG", "PNG"):
            return path.read_bytes(), "jpg" if fmt == "JPEG" else "png"
    if size is not None:
        pixels = resize_center_crop(pixels, size)
    return encode_png(pixels), "png"


def _ingest_one(record: SourceRecord, writer: ShardWriter, report: QualityReport, seen_keys: dict, size: int | None) -> None:
    where = str(record.path)
    if record.error:
        report.skip(record.error, where)
        return
    captions = []
    for raw in record.captions:
        try:
            text, conversion = clean_caption(raw)
        except BadCaption as e:
            report.convert(f"dropped_{e.reason}")
            continue
        if conversion:
            report.convert(conversion)
        captions.append(text)
    if not captions:
        report.skip("no_valid_caption", where)
        return
    try:
        data, ext = _image_bytes(record.path, size, report)
    except BadImage as e:
        report.skip(e.reason, where)
        return
    key = record.key
    if key in seen_keys:
        if seen_keys[key] == record.path:
            report.skip("duplicate_record", where)
            return
        # two different files share a stem: keep both, disambiguated
        suffix = 1
        while f"{key}_{suffix}" in seen_keys:
            suffix += 1
        key = f"{key}_{suffix}"
        report.convert("duplicate_key_renamed")
    seen_keys[key] = record.path
    meta = {"references": captions, "source": where, **record.meta}
    writer.write(Pair(key, captions[0], meta=meta, image_bytes=data, image_ext=ext))
    report.keep()
