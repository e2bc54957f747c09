"""Image batches streamed from WebDataset shards: no stage holds its dataset in memory.

`ImageStream` is a torch `IterableDataset` of batches (per rank) in an order fixed by the seed:
each epoch shuffles the shard list, gives rank r of w the shards r, r + w, ... of that order,
and reader k of n (one per DataLoader worker) every n-th of those; a reader shuffles its samples
in a buffer and cuts its stream into batches, and the DataLoader takes the workers' batches in
turn. So batch i of the run is the (i // n)-th batch of reader i % n, and a run resumed at step
N gives each worker the reader whose batch comes next, past the batches the first N steps took:
the same batches as a run that never stopped (`loader(start_step)`). A resumed reader reads and
decodes the samples it skips, so resuming costs reading, not training.

Bad records are skipped and named in the log, one line each. DataLoader workers are separate
processes, so each batch carries its reader's running count of them, and `StreamCursor.skipped`
adds up the readers' counts (training tasks log it as `count/skipped_records`).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import webdataset as wds

from synth2.data.images import resize_center_crop
from synth2.data.shards import decode_sample, shard_urls

logger = logging.getLogger("synth2")


@dataclass
class ImageStream(torch.utils.data.IterableDataset):
    shards: str
    batch_size: int  # per rank
    seed: int
    resolution: int
    rank: int = 0
    world_size: int = 1
    workers: int = 2
    shuffle_buffer: int = 1000
    start_step: int = 0
    captions: bool = False  # batches of (images, their captions) instead of images

    def __post_init__(self):
        self.urls = shard_urls(self.shards)
        readers = self.world_size * max(self.workers, 1)
        if len(self.urls) < readers:
            raise ValueError(f"{self.shards}: {len(self.urls)} shards cannot feed {self.world_size} ranks x {max(self.workers, 1)} "
                             "workers (every reader needs a shard; write smaller shards, or use fewer workers)")

    def _worker(self) -> tuple[int, int]:
        info = torch.utils.data.get_worker_info()
        return (0, 1) if info is None else (info.id, info.num_workers)

    def _samples(self, reader: int, readers: int, skipped: list[int]) -> Iterator[tuple[np.ndarray, str]]:
        """Reader `reader`'s images (of `readers` on this rank), epoch after epoch, shuffled within a
        seeded buffer; counts the records it skips in `skipped[0]`."""
        epoch = 0
        while True:
            order = random.Random(self.seed * 1_000_003 + epoch).sample(self.urls, len(self.urls))
            mine = order[self.rank :: self.world_size][reader::readers]
            rng = random.Random((self.seed * 1_000_003 + epoch) * 1009 + self.rank * 101 + reader)
            buffer: list[tuple[np.ndarray, str]] = []
            def broken_shard(exn: Exception) -> bool:
                logger.warning("stream: skipped a broken shard (%s)", str(exn)[:200])
                skipped[0] += 1
                return True

            for raw in wds.DataPipeline(wds.SimpleShardList(mine), wds.tarfile_to_samples(handler=broken_shard)):
                try:
                    pair = decode_sample(raw, True, None)
                except ValueError as error:  # it names the record and why
                    logger.warning("stream: skipped %s", error)
                    skipped[0] += 1
                    continue
                if pair.image is None:  # a token-only record
                    continue
                image = pair.image if pair.image.shape[:2] == (self.resolution, self.resolution) else resize_center_crop(pair.image, self.resolution)
                buffer.append((image, pair.caption))
                if len(buffer) >= self.shuffle_buffer:
                    yield buffer.pop(rng.randrange(len(buffer)))
            rng.shuffle(buffer)
            yield from buffer
            epoch += 1

    def __iter__(self) -> Iterator[tuple[torch.Tensor | tuple[torch.Tensor, list[str]], int, int]]:
        """(batch, the reader that made it, the records that reader has skipped so far)."""
        worker, workers = self._worker()
        # The loader takes its workers in turn from worker 0, and batch i belongs to reader i % n:
        # from `start_step` on, worker k plays reader (k + start_step) % n, skipping the batches of
        # that reader the steps before took.
        reader = (worker + self.start_step) % workers
        skip = len(range(reader, self.start_step, workers))
        skipped = [0]
        samples = self._samples(reader, workers, skipped)
        taken = 0
        while True:
            batch = [next(samples) for _ in range(self.batch_size)]
            if taken >= skip:
                images = torch.from_numpy(np.stack([image for image, _ in batch]))
                yield ((images, [caption for _, caption in batch]) if self.captions else images), reader, skipped[0]
            taken += 1

    def counted_batches(self, start_step: int = 0) -> torch.utils.data.DataLoader:
        """`loader`'s batches, each as (batch, reader, that reader's skipped records so far)."""
        self.start_step = start_step
        return torch.utils.data.DataLoader(self, batch_size=None, num_workers=self.workers, persistent_workers=False,
                                           prefetch_factor=2 if self.workers else None)

    def loader(self, start_step: int = 0) -> Iterator[torch.Tensor | tuple[torch.Tensor, list[str]]]:
        """Batches (B, H, W, 3) uint8 (with `captions`, and their captions) from step `start_step` on."""
        return (batch for batch, _, _ in self.counted_batches(start_step))


class StreamCursor:
    """A training task's view of a stream: the batch of each step, in order, restarting the
    loader at a step that does not follow the last one (the first step, or a resume)."""

    def __init__(self, stream: ImageStream):
        self.stream = stream
        self._batches: Iterator | None = None
        self._next_step = -1
        self._by_reader: dict[int, int] = {}

    @property
    def skipped(self) -> int:
        """Bad records skipped from the run's first step to the last batch (once per epoch each).
        A resumed loader's readers read from the first step too, so this survives a resume."""
        return sum(self._by_reader.values())

    def batch(self, step: int):
        if step != self._next_step:
            self._by_reader = {}
            self._batches = iter(self.stream.counted_batches(step))
        self._next_step = step + 1
        batch, reader, skipped = next(self._batches)
        self._by_reader[reader] = skipped
        return batch
