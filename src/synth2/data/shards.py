"""WebDataset shards of pairs: `{key}.png|jpg`, `{key}.txt`, `{key}.json`, `{key}.tokens.npy`.

The same layout img2dataset and open-muse use, so real corpora drop in. Token
shards sit beside image shards with the same keys. Reading never unpickles: only
images, UTF-8 text, JSON and `.npy` arrays (allow_pickle=False) are decoded.
"""

from __future__ import annotations

import glob
import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import webdataset as wds

from synth2.data.images import BadImage, decode_image, encode_png
from synth2.data.quality import QualityReport
from synth2.data.text import BadCaption, clean_caption

IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "webp")
TOKENS_EXTENSION = "tokens.npy"


@dataclass
class Pair:
    """One (caption, image) pair; the image is pixels, token ids, or both."""

    key: str
    caption: str
    image: np.ndarray | None = None  # (H, W, 3) uint8
    tokens: np.ndarray | None = None  # (h, w) uint16 VQ ids
    meta: dict[str, Any] = field(default_factory=dict)
    image_bytes: bytes | None = None  # the encoded file, when passed through unchanged
    image_ext: str = "png"


def _tokens_to_bytes(tokens: np.ndarray) -> bytes:
    if tokens.max(initial=0) > np.iinfo(np.uint16).max:
        raise ValueError("token ids above 65535 do not fit uint16 token shards")
    buffer = io.BytesIO()
    np.save(buffer, tokens.astype(np.uint16), allow_pickle=False)
    return buffer.getvalue()


def valid_key(key: str) -> bool:
    """A shard key names its tar members (`KEY.png`, `KEY.json`): no '.' or '/' in it."""
    return bool(key) and "." not in key and "/" not in key


class ShardWriter:
    """Writes pairs to `{directory}/{prefix}-000000.tar`, ... with at most `shard_size` each.

    The tar members are what webdataset's ShardWriter writes (and what its reader and
    img2dataset expect), but we build the 512-byte USTAR headers directly with
    `tarfile.TarInfo.tobuf`: `tarfile.addfile` (behind wds.ShardWriter) spends most of
    its time on PAX-header checks and TarInfo copies, which halved world generation
    speed. A fixed mtime makes shards byte-for-byte reproducible.
    """

    def __init__(self, directory: str | Path, prefix: str = "shard", shard_size: int = 5000, start_shard: int = 0):
        if shard_size < 1:
            raise ValueError("shard_size must be >= 1")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.shard_size = shard_size
        self.next_index = start_shard
        self.completed: list[Path] = []  # shards closed so far, in order
        self._file = None
        self._path: Path | None = None
        self._in_shard = 0
        self._keys: set[str] = set()
        self.count = 0

    def _open_shard(self) -> None:
        self._path = self.directory / f"{self.prefix}-{self.next_index:06d}.tar"
        self.next_index += 1
        # written under a temporary name, so a crash never leaves a truncated .tar behind
        self._file = open(self._path.with_suffix(".tar.tmp"), "wb")
        self._in_shard = 0

    def _close_shard(self) -> None:
        if self._file is not None:
            self._file.write(b"\0" * 1024)  # end-of-archive marker
            self._file.close()
            os.replace(self._path.with_suffix(".tar.tmp"), self._path)
            self.completed.append(self._path)
            self._file = None

    def discard(self) -> None:
        """Stop without publishing the open shard (it stays a .tar.tmp); closed shards stay."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def _member(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o444
        info.uname = info.gname = "bigdata"
        self._file.write(info.tobuf(tarfile.USTAR_FORMAT))
        self._file.write(data)
        self._file.write(b"\0" * (-len(data) % 512))

    def write(self, pair: Pair) -> None:
        if not valid_key(pair.key):
            raise ValueError(f"shard key {pair.key!r} must be non-empty and contain no '.' or '/'")
        if pair.key in self._keys:
            raise ValueError(f"duplicate shard key {pair.key!r}")
        self._keys.add(pair.key)
        if self._file is None:
            self._open_shard()
        key = pair.key
        if pair.image_bytes is not None:
            self._member(f"{key}.{pair.image_ext}", pair.image_bytes)
        elif pair.image is not None:
            self._member(f"{key}.png", encode_png(pair.image))
        if pair.meta:
            self._member(f"{key}.json", json.dumps(pair.meta).encode("utf-8"))
        if pair.tokens is not None:
            self._member(f"{key}.{TOKENS_EXTENSION}", _tokens_to_bytes(pair.tokens))
        self._member(f"{key}.txt", pair.caption.encode("utf-8"))
        self._in_shard += 1
        self.count += 1
        if self._in_shard >= self.shard_size:
            self._close_shard()

    def close(self) -> None:
        self._close_shard()

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        # after an error the open shard is incomplete: leave it a .tar.tmp, never a finished .tar
        self.discard() if exc_type is not None else self.close()


def shard_urls(spec: str | Path | Iterable[str | Path]) -> list[str]:
    """A directory (its *.tar), a glob, a brace pattern, or a list of any of these."""
    if isinstance(spec, (list, tuple)):
        return [u for s in spec for u in shard_urls(s)]
    spec = str(spec)
    path = Path(spec)
    if path.is_dir():
        urls = sorted(str(p) for p in path.glob("*.tar"))
        if not urls:
            raise FileNotFoundError(f"{spec}: directory holds no .tar shards")
        return urls
    if "{" in spec:
        return list(wds.shardlists.expand_urls(spec))
    matches = sorted(glob.glob(spec))
    if not matches:
        raise FileNotFoundError(f"{spec}: no shards found")
    return matches


def decode_sample(raw: dict[str, Any], decode_images: bool, report: QualityReport | None) -> Pair | None:
    key = raw["__key__"]
    where = f"{raw.get('__url__', '?')}:{key}"
    try:
        caption, conversion = clean_caption(raw.get("txt", b""))
        if conversion and report:
            report.convert(conversion)
        meta = json.loads(raw["json"].decode("utf-8")) if "json" in raw else {}
        tokens = None
        if TOKENS_EXTENSION in raw:
            tokens = np.load(io.BytesIO(raw[TOKENS_EXTENSION]), allow_pickle=False)
        image = None
        image_ext = next((e for e in IMAGE_EXTENSIONS if e in raw), None)
        if decode_images and image_ext:
            image, conversion = decode_image(raw[image_ext])
            if conversion and report:
                report.convert(conversion)
        if image_ext is None and tokens is None and decode_images:
            raise BadImage("no_image")
    except (BadImage, BadCaption) as e:
        if report is None:
            raise ValueError(f"{where}: {e}") from None
        report.skip(e.reason, where)
        return None
    except (ValueError, UnicodeDecodeError) as e:
        if report is None:
            raise ValueError(f"{where}: undecodable record ({e})") from None
        report.skip("undecodable_record", where)
        return None
    if report:
        report.keep()
    return Pair(key, caption, image=image, tokens=tokens, meta=meta)


def read_pairs(
    spec: str | Path | Iterable[str | Path],
    decode_images: bool = True,
    report: QualityReport | None = None,
    split: bool = True,
) -> Iterator[Pair]:
    """Iterate pairs from shards in order.

    With `split`, shards are divided between torch.distributed ranks and DataLoader
    workers (webdataset's split_by_node / split_by_worker). With a `report`, bad
    records and broken tar files are skipped and counted; without one they raise.
    """
    urls = shard_urls(spec)
    stages: list[Any] = [wds.SimpleShardList(urls)]
    if split:
        stages += [wds.split_by_node, wds.split_by_worker]

    broken: set[str] = set()

    def skip_broken_shard(exn: Exception) -> bool:
        # webdataset may call this more than once for one truncated tar: count each shard once
        where = str(exn)[:200]
        url = next((u for u in urls if str(u) in str(exn)), where)
        if url not in broken:
            broken.add(url)
            report.skip("broken_shard", where)
        return True

    stages.append(wds.tarfile_to_samples(handler=wds.reraise_exception if report is None else skip_broken_shard))
    for raw in wds.DataPipeline(*stages):
        pair = decode_sample(raw, decode_images, report)
        if pair is not None:
            yield pair


def count_records(spec: str | Path | Iterable[str | Path]) -> int:
    """Number of distinct keys across shards, read from the tar index only."""
    total = 0
    for url in shard_urls(spec):
        with tarfile.open(url) as tar:
            total += len({m.name.split("/")[-1].split(".", 1)[0] for m in tar.getmembers() if m.isfile()})
    return total
