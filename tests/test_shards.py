import io
import pickle
import tarfile

import numpy as np
import pytest

from synth2.data.corpus import read_captions, write_captions
from synth2.data.quality import QualityReport
from synth2.data.shards import Pair, ShardWriter, count_records, read_pairs


def _pairs(n, with_tokens=True):
    rng = np.random.default_rng(0)
    return [
        Pair(
            f"k{i:04d}",
            f"caption number {i} with unicode é",
            image=rng.integers(0, 255, (16, 16, 3), dtype=np.uint8),
            tokens=rng.integers(0, 8192, (4, 4)).astype(np.uint16) if with_tokens else None,
            meta={"i": i, "nested": {"x": [1, 2]}},
        )
        for i in range(n)
    ]


def test_round_trip_is_identical(tmp_path):
    pairs = _pairs(25)
    with ShardWriter(tmp_path, prefix="p", shard_size=10) as writer:
        for pair in pairs:
            writer.write(pair)
    assert len(list(tmp_path.glob("p-*.tar"))) == 3 and not list(tmp_path.glob("*.tmp"))
    back = list(read_pairs(tmp_path))
    assert [p.key for p in back] == [p.key for p in pairs]
    for a, b in zip(pairs, back):
        assert a.caption == b.caption and a.meta == b.meta
        assert np.array_equal(a.image, b.image)
        assert b.tokens.dtype == np.uint16 and np.array_equal(a.tokens, b.tokens)
    assert count_records(tmp_path) == 25


def test_keys_with_dots_and_duplicates_are_refused(tmp_path):
    with ShardWriter(tmp_path) as writer:
        with pytest.raises(ValueError, match="must be non-empty and contain no"):
            writer.write(Pair("a.b", "x"))
        writer.write(Pair("a", "x"))
        with pytest.raises(ValueError, match="duplicate"):
            writer.write(Pair("a", "y"))


def test_split_by_node_partitions_shards(tmp_path, monkeypatch):
    with ShardWriter(tmp_path, shard_size=5) as writer:
        for pair in _pairs(20, with_tokens=False):
            writer.write(pair)
    seen = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        seen.append({p.key for p in read_pairs(tmp_path, decode_images=False)})
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    assert seen[0] | seen[1] == {f"k{i:04d}" for i in range(20)}


class _Boom:
    def __reduce__(self):
        return (exec, ("raise SystemExit('pickle was executed')",))


def test_pickled_members_are_never_unpickled(tmp_path):
    shard = tmp_path / "evil.tar"
    with tarfile.open(shard, "w") as tar:
        for name, data in (("x.txt", b"a caption"), ("x.pyd", pickle.dumps(_Boom())), ("x.pickle", pickle.dumps(_Boom()))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    pairs = list(read_pairs(shard, decode_images=False))
    assert pairs[0].caption == "a caption"
    with pytest.raises(ValueError, match="Object arrays cannot be loaded|allow_pickle"):
        np.load(io.BytesIO(pickle.dumps(np.array([_Boom()], dtype=object))), allow_pickle=False)


def test_bad_records_in_shards_are_skipped_and_counted(tmp_path):
    with ShardWriter(tmp_path) as writer:
        for pair in _pairs(5, with_tokens=False):
            writer.write(pair)
        writer.write(Pair("broken", "fine caption", image_bytes=b"\x89PNG\r\n\x1a\nnot really", image_ext="png"))
        writer.write(Pair("latin", "x", image=np.zeros((16, 16, 3), np.uint8)))
    # corrupt the caption of "latin" to invalid UTF-8 by rewriting the member
    shard = next(tmp_path.glob("*.tar"))
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(shard, "w") as tar:
        for m, data in members:
            if m.name == "latin.txt":
                data = "café".encode("latin-1")
                m.size = len(data)
            tar.addfile(m, io.BytesIO(data))
    report = QualityReport(max_bad_fraction=0.9)
    keys = [p.key for p in read_pairs(tmp_path, report=report)]
    assert keys == [f"k{i:04d}" for i in range(5)]
    assert report.skipped == {"truncated": 1, "caption_not_utf8": 1}
    with pytest.raises(ValueError, match="broken"):
        list(read_pairs(tmp_path))


def test_caption_corpora_jsonl_and_text(tmp_path):
    write_captions(tmp_path / "c.jsonl", [{"caption": "a red circle", "k": 1}, {"caption": "  a   blue star "}])
    assert [r["caption"] for r in read_captions(tmp_path / "c.jsonl")] == ["a red circle", "a blue star"]
    (tmp_path / "c.txt").write_bytes(b"one caption\n\nsecond caption\n\xff\xfe bad\n")
    report = QualityReport(max_bad_fraction=0.9)
    assert [r["caption"] for r in read_captions(tmp_path / "c.txt", report)] == ["one caption", "second caption"]
    assert report.skipped == {"caption_not_utf8": 1}
    (tmp_path / "bad.jsonl").write_text('{"caption": "ok"}\n{not json\n{"text": "no caption key"}\n')
    report = QualityReport(max_bad_fraction=0.9)
    assert len(read_captions(tmp_path / "bad.jsonl", report)) == 1
    assert report.skipped == {"malformed_json": 1, "no_caption_field": 1}


def _rewrite(shard, rename):
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(shard, "w") as tar:
        for m, data in members:
            m.name = rename(m.name)
            tar.addfile(m, io.BytesIO(data))


def test_encode_skips_a_member_whose_key_holds_a_slash_and_keeps_the_rest(tmp_path):
    import torch

    from synth2.encoding import encode_shards
    from synth2.models.vq import VQConfig, VQModel

    with ShardWriter(tmp_path / "images") as writer:
        for pair in _pairs(4, with_tokens=False):
            writer.write(pair)
    _rewrite(next((tmp_path / "images").glob("*.tar")), lambda name: "sub/" + name if name.startswith("k0001") else name)
    torch.manual_seed(0)
    vq = VQModel(VQConfig(channels=8, channel_mult=[1], patch_size=4, num_res_blocks=1, mid_blocks=0, norm="none", latent_dim=8, codebook_size=16, codebook_dim=4, kmeans_init=False))
    report = QualityReport(max_bad_fraction=0.5)
    assert encode_shards(vq, tmp_path / "images", tmp_path / "tokens", report, 16) == 3
    assert report.skipped == {"bad_key": 1}
    assert [p.key for p in read_pairs(tmp_path / "tokens", decode_images=False)] == ["k0000", "k0002", "k0003"]


def test_a_truncated_shard_is_counted_once(tmp_path):
    with ShardWriter(tmp_path, shard_size=3) as writer:
        for pair in _pairs(6, with_tokens=False):
            writer.write(pair)
    first = sorted(tmp_path.glob("*.tar"))[0]
    first.write_bytes(first.read_bytes()[:700])  # inside the first member
    report = QualityReport(max_bad_fraction=0.9)
    kept = [p.key for p in read_pairs(tmp_path, report=report)]
    assert report.skipped["broken_shard"] == 1 and {"k0003", "k0004", "k0005"} <= set(kept)


def test_a_writer_stopped_by_an_error_publishes_no_partial_shard(tmp_path):
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path) as writer:
            writer.write(_pairs(1)[0])
            raise RuntimeError("stop")
    assert not list(tmp_path.glob("*.tar"))
