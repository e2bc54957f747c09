"""Image batches streamed from shards: every image once per epoch, split over ranks, and a
resumed stream gives the batches an uninterrupted one gives."""

import itertools

import numpy as np
import pytest
from resume import assert_resume_equals_uninterrupted

from synth2.data.shards import Pair, ShardWriter
from synth2.data.stream import ImageStream

N = 48


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """48 16-px images in 6 shards; each image carries its index in its first pixel."""
    out = tmp_path_factory.mktemp("stream")
    rng = np.random.default_rng(0)
    with ShardWriter(out, shard_size=8) as writer:
        for i in range(N):
            image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            image[0, 0] = [i, 0, 0]
            writer.write(Pair(f"img{i:03d}", f"caption {i}", image=image))
    return out


def _ids(batches) -> list[list[int]]:
    return [b[:, 0, 0, 0].tolist() for b in batches]


def test_every_image_once_per_epoch_in_a_seeded_order(shards):
    stream = ImageStream(str(shards), batch_size=4, seed=0, resolution=16, workers=2, shuffle_buffer=8)
    first = _ids(itertools.islice(stream.loader(), 2 * N // 4))
    epoch, second_epoch = first[: N // 4], first[N // 4 :]
    assert sorted(i for b in epoch for i in b) == list(range(N))
    assert sorted(i for b in second_epoch for i in b) == list(range(N)) and second_epoch != epoch  # reshuffled
    assert _ids(itertools.islice(stream.loader(), 3)) == first[:3]  # the seed fixes the order
    other_seed = ImageStream(str(shards), batch_size=4, seed=1, resolution=16, workers=2, shuffle_buffer=8)
    assert _ids(itertools.islice(other_seed.loader(), 3)) != first[:3]


def test_a_stream_resumed_at_a_step_gives_the_uninterrupted_batches(shards):
    stream = ImageStream(str(shards), batch_size=4, seed=0, resolution=16, workers=2, shuffle_buffer=8)
    whole = _ids(itertools.islice(stream.loader(), 20))
    for start in (5, 12, 13):  # mid-epoch, at the epoch's end, into the next
        assert _ids(itertools.islice(stream.loader(start), 20 - start)) == whole[start:], start


def test_ranks_read_disjoint_shards(shards):
    ranks = [ImageStream(str(shards), batch_size=4, seed=0, resolution=16, rank=r, world_size=2, workers=1, shuffle_buffer=8) for r in (0, 1)]
    seen = [{i for b in _ids(itertools.islice(s.loader(), N // 8)) for i in b} for s in ranks]
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(N))


def test_too_few_shards_for_the_readers_is_a_clear_error(shards):
    with pytest.raises(ValueError, match="6 shards cannot feed 2 ranks x 4 workers"):
        ImageStream(str(shards), batch_size=4, seed=0, resolution=16, world_size=2, workers=4)


def test_a_streamed_vq_stage_resumes_exactly(shards, tmp_path):
    from test_vq import _task

    from synth2.train.distributed import DistInfo
    from synth2.train.vq import VQTask

    _, cfg = _task()

    def make_task():
        stream = ImageStream(str(shards), batch_size=cfg.train.batch_size, seed=0, resolution=16, workers=2, shuffle_buffer=8)
        return VQTask(cfg, stream, DistInfo(), 0)

    assert_resume_equals_uninterrupted(make_task, cfg.train, tmp_path, "vq", stop_after=4)


def test_streamed_pairs_carry_their_captions(shards):
    stream = ImageStream(str(shards), batch_size=4, seed=0, resolution=16, workers=2, shuffle_buffer=8, captions=True)
    images, captions = next(iter(stream.loader()))
    assert captions == [f"caption {i}" for i in images[:, 0, 0, 0].tolist()]


def test_a_streamed_clip_stage_resumes_exactly(shards, tmp_path, tiny_gpt2_dir):
    from synth2.models.lm import FrozenLM
    from synth2.train.clip import ClipStageConfig, ClipTask
    from synth2.train.distributed import DistInfo
    from synth2.train.loop import TrainConfig

    cfg = ClipStageConfig(train=TrainConfig(steps=6, batch_size=8, lr=1e-3, warmup=1, checkpoint_every=3, log_every=1))
    cfg.model.channels, cfg.model.embed_dim = 8, 16
    lm = FrozenLM.from_pretrained(tiny_gpt2_dir)

    def make_task():
        stream = ImageStream(str(shards), batch_size=8, seed=0, resolution=16, workers=2, shuffle_buffer=8, captions=True)
        return ClipTask(cfg, lm, stream, [], DistInfo(), 0)

    assert_resume_equals_uninterrupted(make_task, cfg.train, tmp_path, "clip", stop_after=3)


def test_a_streamed_stage_counts_the_bad_records_it_skips(tmp_path, caplog):
    """12 good images and a truncated PNG in each of 2 shards: every epoch skips 2 records, each
    named in the log, and the VQ's metrics.jsonl counts them."""
    import json

    from test_vq import _task

    from synth2.data.stream import StreamCursor
    from synth2.train.distributed import DistInfo
    from synth2.train.loop import train
    from synth2.train.vq import VQTask

    rng = np.random.default_rng(0)
    with ShardWriter(tmp_path / "shards", shard_size=13) as writer:
        for i in range(26):
            if i % 13 == 6:
                writer.write(Pair(f"broken{i}", "a caption", image_bytes=b"\x89PNG\r\n\x1a\nnot really", image_ext="png"))
            else:
                writer.write(Pair(f"img{i:03d}", f"caption {i}", image=rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)))
    # in this process (workers=0), so the log is caplog's; a 4-image buffer reads at most 4
    # records ahead, never as far as the next epoch's broken ones
    cursor = StreamCursor(ImageStream(str(tmp_path / "shards"), batch_size=4, seed=0, resolution=16, workers=0, shuffle_buffer=4))
    with caplog.at_level("WARNING", logger="synth2"):
        for step in range(6):  # 24 images: one epoch
            assert cursor.batch(step).shape == (4, 16, 16, 3)
    assert cursor.skipped == 2 and "broken6" in caplog.text and "broken19" in caplog.text
    for step in range(6, 12):
        cursor.batch(step)
    assert cursor.skipped == 4
    cursor.batch(3)  # a loader restarted at step 3 reads from the first step again
    assert cursor.skipped == 2

    _, cfg = _task()
    task = VQTask(cfg, ImageStream(str(tmp_path / "shards"), batch_size=cfg.train.batch_size, seed=0, resolution=16, workers=2, shuffle_buffer=4), DistInfo(), 0)
    train(task, cfg.train, tmp_path / "vq", DistInfo(), "vq")
    rows = [json.loads(line) for line in (tmp_path / "vq" / "metrics.jsonl").read_text().splitlines()]
    counts = [row["count/skipped_records"] for row in rows if "count/skipped_records" in row]
    assert counts and counts[-1] >= 2 and counts == sorted(counts)
