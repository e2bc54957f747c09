"""Ingest of COCO / Karpathy / JSONL / CSV fixtures, and one test per kind of bad input."""

import csv
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from synth2.data.images import BadImage, decode_image, read_image_file
from synth2.data.ingest import ingest
from synth2.data.quality import TooManyBadRecords
from synth2.data.shards import read_pairs
from synth2.data.text import BadCaption, clean_caption


def _save(path, mode="RGB", size=(24, 20), fmt=None, **kw):
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65535, size[::-1], dtype=np.uint16))
    else:
        image = Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).convert(mode)
    image.save(path, format=fmt, **kw)
    return path


def _png_bomb_header(path, width=100_000, height=100_000):
    """A PNG whose header claims a huge image; its pixels are never decoded."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b""))
    return path


@pytest.fixture
def images(tmp_path):
    root = tmp_path / "img"
    root.mkdir()
    good = [_save(root / f"good{i}.jpg") for i in range(6)] + [_save(root / "good_png.png")]
    return root, good


def _coco(root, names, captions_per=2, extra_images=(), extra_annotations=()):
    images = [{"id": i, "file_name": n} for i, n in enumerate(names)] + list(extra_images)
    annotations = [{"image_id": i, "id": 100 * i + j, "caption": f"caption {j} of {n}"} for i, n in enumerate(names) for j in range(captions_per)]
    return {"images": images, "annotations": annotations + list(extra_annotations)}


def test_coco_ingest_round_trip(tmp_path, images):
    root, good = images
    src = tmp_path / "captions.json"
    src.write_text(json.dumps(_coco(root, [p.name for p in good])))
    report = ingest("coco", src, tmp_path / "out", images=root)
    assert report["kept"] == len(good) and report["skipped"] == {}
    pairs = list(read_pairs(tmp_path / "out"))
    assert [p.key for p in pairs] == [p.stem for p in good]
    assert pairs[0].meta["references"] == [f"caption {j} of {good[0].name}" for j in range(2)]
    # JPEG bytes are passed through untouched
    assert np.array_equal(pairs[0].image, np.asarray(Image.open(good[0]).convert("RGB")))
    assert json.loads((tmp_path / "out" / "ingest_report.json").read_text())["kept"] == len(good)


def test_karpathy_split_selection(tmp_path, images):
    root, good = images
    (root / "val2014").mkdir()
    moved = [p.rename(root / "val2014" / p.name) for p in good[:4]]
    entries = [
        {"filepath": "val2014", "filename": p.name, "split": split, "cocoid": i, "sentences": [{"raw": f"a photo {i}"}, {"raw": f"another {i}"}]}
        for i, (p, split) in enumerate(zip(moved, ["test", "test", "train", "restval"]))
    ]
    src = tmp_path / "dataset_coco.json"
    src.write_text(json.dumps({"images": entries, "dataset": "coco"}))
    assert ingest("karpathy", src, tmp_path / "test", images=root, split="test")["kept"] == 2
    assert ingest("karpathy", src, tmp_path / "train", images=root, split="train")["kept"] == 2
    pairs = list(read_pairs(tmp_path / "test"))
    assert pairs[0].meta["references"] == ["a photo 0", "another 0"] and pairs[0].meta["image_id"] == 0


def test_jsonl_and_csv_lists(tmp_path, images):
    root, good = images
    rows = [{"image": p.name, "caption": f"cap {p.stem}"} for p in good] + [{"image": good[0].name, "caption": "second caption"}]
    (tmp_path / "list.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    report = ingest("jsonl", tmp_path / "list.jsonl", tmp_path / "a", images=root)
    assert report["kept"] == len(good)
    first = next(iter(read_pairs(tmp_path / "a")))
    assert first.meta["references"] == [f"cap {good[0].stem}", "second caption"]
    with open(tmp_path / "list.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["filepath", "text"])
        writer.writeheader()
        writer.writerows({"filepath": r["image"], "text": r["caption"]} for r in rows)
    assert ingest("csv", tmp_path / "list.csv", tmp_path / "b", images=root)["kept"] == len(good)


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: p.write_bytes((_save(p, fmt="JPEG").read_bytes())[:300]), "truncated"),
        (lambda p: p.write_bytes(b""), "zero_byte"),
        (lambda p: p.write_text("this is not an image"), "not_an_image"),
        (lambda p: _save(p, size=(1, 1), fmt="PNG"), "too_small"),
        (lambda p: _png_bomb_header(p), "too_large"),
        (lambda p: None, "missing_file"),
    ],
    ids=["truncated", "zero_byte", "not_an_image", "1x1", "decompression_bomb", "missing_file"],
)
def test_bad_image_is_skipped_and_counted(tmp_path, images, make, reason):
    root, good = images
    make(root / "bad.jpg")
    src = tmp_path / "captions.json"
    src.write_text(json.dumps(_coco(root, [p.name for p in good] + ["bad.jpg"])))
    report = ingest("coco", src, tmp_path / "out", images=root)
    assert report["kept"] == len(good)
    assert report["skipped"] == {reason: 1}
    assert len(list(read_pairs(tmp_path / "out"))) == len(good)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16"])
def test_odd_modes_are_converted_to_rgb(tmp_path, mode):
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    path = _save(tmp_path / f"x.{fmt.lower()}", mode=mode, fmt=fmt)
    pixels, conversion = read_image_file(path)
    assert pixels.dtype == np.uint8 and pixels.shape == (20, 24, 3)
    assert conversion == f"mode_{mode}"
    if mode == "I;16":
        # 16-bit is scaled, not clipped to white
        assert 20 < pixels.mean() < 235


def test_converted_modes_are_kept_in_ingest(tmp_path, images):
    root, good = images
    for mode in ("L", "RGBA", "P"):
        _save(root / f"m{mode}.png", mode=mode, fmt="PNG")
    src = tmp_path / "captions.json"
    src.write_text(json.dumps(_coco(root, [p.name for p in good] + ["mL.png", "mRGBA.png", "mP.png"])))
    report = ingest("coco", src, tmp_path / "out", images=root)
    assert report["kept"] == len(good) + 3
    assert report["converted"] == {"mode_L": 1, "mode_RGBA": 1, "mode_P": 1}


@pytest.mark.parametrize(
    "raw, outcome",
    [
        ("", "empty_caption"),
        ("   \t\n ", "empty_caption"),
        (b"caf\xe9 au lait", "caption_not_utf8"),
        ("word " * 500, "caption_truncated"),
        ("  a  red\tcircle \n", None),
    ],
    ids=["empty", "whitespace", "non_utf8", "very_long", "messy_whitespace"],
)
def test_caption_cleaning(raw, outcome):
    if outcome in ("empty_caption", "caption_not_utf8"):
        with pytest.raises(BadCaption) as e:
            clean_caption(raw)
        assert e.value.reason == outcome
    else:
        text, conversion = clean_caption(raw)
        assert conversion == outcome
        assert len(text.split()) <= 200 and "  " not in text


def test_images_with_only_bad_captions_are_skipped(tmp_path, images):
    root, good = images
    data = _coco(root, [p.name for p in good], captions_per=1)
    data["annotations"][0]["caption"] = "   "
    data["annotations"].append({"image_id": 1, "id": 9999, "caption": ""})
    src = tmp_path / "captions.json"
    src.write_text(json.dumps(data))
    report = ingest("coco", src, tmp_path / "out", images=root)
    assert report["skipped"] == {"no_valid_caption": 1}
    assert report["converted"] == {"dropped_empty_caption": 2}
    assert report["kept"] == len(good) - 1


def test_non_utf8_caption_in_csv_is_dropped(tmp_path, images):
    root, good = images
    (tmp_path / "list.csv").write_bytes(
        b"image,caption\n" + b"".join(f"{p.name},fine caption\n".encode() for p in good[1:]) + good[0].name.encode() + b",caf\xe9\n"
    )
    report = ingest("csv", tmp_path / "list.csv", tmp_path / "out", images=root)
    assert report["skipped"] == {"no_valid_caption": 1}
    assert report["converted"] == {"dropped_caption_not_utf8": 1}


def test_duplicate_keys(tmp_path, images):
    root, good = images
    (root / "sub").mkdir()
    _save(root / "sub" / good[0].name)
    data = _coco(root, [p.name for p in good] + ["sub/" + good[0].name])
    data["images"].append({"id": 0, "file_name": good[1].name})  # a repeated image id
    src = tmp_path / "captions.json"
    src.write_text(json.dumps(data))
    report = ingest("coco", src, tmp_path / "out", images=root)
    assert report["skipped"] == {"duplicate_key": 1}
    assert report["converted"] == {"duplicate_key_renamed": 1}
    keys = [p.key for p in read_pairs(tmp_path / "out", decode_images=False)]
    assert len(keys) == len(set(keys)) == len(good) + 1 and f"{good[0].stem}_1" in keys


def test_too_many_bad_records_abort_names_the_worst_reasons(tmp_path, images):
    root, good = images
    names = [p.name for p in good] + [f"missing{i}.jpg" for i in range(10)] + ["zero.jpg"]
    (root / "zero.jpg").write_bytes(b"")
    src = tmp_path / "captions.json"
    src.write_text(json.dumps(_coco(root, names)))
    with pytest.raises(TooManyBadRecords, match=r"11 of 18 records are bad.*missing_file: 10.*zero_byte: 1"):
        ingest("coco", src, tmp_path / "out", images=root, max_bad_fraction=0.3)
    assert ingest("coco", src, tmp_path / "ok", images=root, max_bad_fraction=0.7)["kept"] == len(good)


def test_interrupted_ingest_resumes_without_loss(tmp_path, images, monkeypatch):
    root, good = images
    for i in range(20):
        _save(root / f"more{i}.jpg")
    names = [p.name for p in good] + [f"more{i}.jpg" for i in range(20)] + ["missing.jpg"]
    src = tmp_path / "captions.json"
    src.write_text(json.dumps(_coco(root, names)))
    ingest("coco", src, tmp_path / "whole", images=root, shard_size=4)

    import synth2.data.ingest as module

    real = module._ingest_one
    calls = {"n": 0}

    def crash_at_10(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 10:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "_ingest_one", crash_at_10)
    with pytest.raises(KeyboardInterrupt):
        ingest("coco", src, tmp_path / "resumed", images=root, shard_size=4)
    monkeypatch.setattr(module, "_ingest_one", real)
    state = json.loads((tmp_path / "resumed" / "ingest_state.json").read_text())
    assert state["consumed"] == 8  # two full shards of 4
    report = ingest("coco", src, tmp_path / "resumed", images=root, shard_size=4)
    whole = json.loads((tmp_path / "whole" / "ingest_report.json").read_text())
    assert report == whole
    a = [(p.key, p.caption) for p in read_pairs(tmp_path / "whole")]
    b = [(p.key, p.caption) for p in read_pairs(tmp_path / "resumed")]
    assert a == b and len(a) == len(names) - 1


def test_decode_image_refuses_bomb_before_decoding():
    with pytest.raises(BadImage) as e:
        decode_image(b"\x89PNG\r\n\x1a\n" + b"\0" * 10)
    assert e.value.reason in ("not_an_image", "truncated")


def test_a_directory_for_an_image_is_skipped_and_counted(tmp_path, images):
    root, good = images
    (root / "folder.jpg").mkdir()
    src = tmp_path / "list.jsonl"
    src.write_text("".join(json.dumps({"image": n, "caption": "a caption"}) + "\n" for n in [p.name for p in good] + ["folder.jpg"]))
    report = ingest("jsonl", src, tmp_path / "out", images=root)
    assert report["kept"] == len(good) and report["skipped"] == {"not_a_file": 1}
    assert not list((tmp_path / "out").glob("*.tmp"))


@pytest.mark.parametrize("fmt, text", [("jsonl", ""), ("csv", "image,caption\n")])
def test_empty_input_is_an_error_that_says_so(tmp_path, fmt, text):
    from synth2.errors import UserError

    src = tmp_path / f"list.{fmt}"
    src.write_text(text)
    with pytest.raises(UserError, match="no records"):
        ingest(fmt, src, tmp_path / "out")
    assert not list((tmp_path / "out").glob("shard-*"))


def test_the_bad_record_ceiling_stops_but_writes_what_it_found(tmp_path, images):
    root, good = images
    names = [p.name for p in good] + [f"missing{i}.jpg" for i in range(10)]
    src = tmp_path / "captions.json"
    src.write_text(json.dumps(_coco(root, names)))
    with pytest.raises(TooManyBadRecords):
        ingest("coco", src, tmp_path / "out", images=root, max_bad_fraction=0.2)
    report = json.loads((tmp_path / "out" / "ingest_report.json").read_text())
    assert report["skipped"] == {"missing_file": 10} and report["kept"] == len(good) and "max_bad_fraction" in report["stopped"]
    assert not list((tmp_path / "out").glob("shard-*.tar"))  # nothing half-written looks finished


def test_a_shard_finished_after_the_last_state_write_is_redone_under_the_same_keys(tmp_path, images):
    root, good = images
    src = tmp_path / "captions.json"
    src.write_text(json.dumps(_coco(root, [p.name for p in good])))
    whole = ingest("coco", src, tmp_path / "whole", images=root, shard_size=2)
    out = tmp_path / "cut"
    ingest("coco", src, out, images=root, shard_size=2)
    # as if killed between the last shard's rename and its state write
    state = json.loads((out / "ingest_state.json").read_text())
    state.update(consumed=4, shards=2, report={"kept": 4, "skipped": {}, "converted": {}, "examples": {}})
    (out / "ingest_state.json").write_text(json.dumps(state))
    assert ingest("coco", src, out, images=root, shard_size=2) == whole
    assert sorted(p.key for p in read_pairs(out)) == sorted(p.key for p in read_pairs(tmp_path / "whole"))
