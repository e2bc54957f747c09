"""Build a run's independent stages side by side, in worker processes (`reproduce --jobs N`).

The models of the small presets use two CPU cores poorly: two processes of one torch thread
each train 1.14-1.5x more steps per second together than one process of two threads
(benchmarks/bench_workers.py, in benchmarks/BENCHMARKS.md). So a run's stages are built
by N worker processes with an equal share of the torch threads each, taking the stages in the
order given; a worker that needs a stage another worker is building waits for it
(`Run.wait_for_writers`), so any order is correct and a good one only saves waiting.

The schedule changes when a stage is built, never what it computes: stages seed themselves and
read their inputs from disk, so a stage built by a worker is the one a single process builds at
the same number of torch threads (tests/test_parallel.py checks a whole run leaf for leaf).
Each training is still one process; to spread one training over several devices, use torchrun.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from synth2.progress import console, progress_bar
from synth2.run import Run

# A stage to build: a stage function of `synth2.stages` and its arguments after the run.
Target = tuple[Callable[..., Any], tuple]


def default_jobs() -> int:
    """Two workers on a CPU with at least two torch threads, else one (a GPU is one device:
    its stages run one after another)."""
    if torch.cuda.is_available():
        return 1
    return 2 if torch.get_num_threads() >= 2 else 1


def threads_per_job(jobs: int) -> int:
    """Each worker's share of this process's torch threads (at least one)."""
    return max(1, torch.get_num_threads() // jobs)


def build_in_parallel(run: Run, targets: Iterable[Target], jobs: int) -> None:
    """Build every target's stage (and the stages it reads) in `jobs` worker processes.

    Each target is handed to the workers as `targets` yields it, so a schedule that must read a
    stage before it can name the rest (a generator) does so while the first targets build.
    The first error (a worker's, a worker killed, or Ctrl-C here) stops every worker and is
    raised here; finished stages and checkpoints stay on disk, so a rerun resumes. Workers show
    no progress bars (several processes cannot share a terminal's bars); this process shows one
    over the targets."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no torch state forked from this one
    threads = threads_per_job(jobs)
    others = set(multiprocessing.active_children())
    executor = ProcessPoolExecutor(jobs, mp_context=context, initializer=_start_worker, initargs=(threads,))
    try:
        pending = {executor.submit(_build, str(run.root), run.config, fn, args) for fn, args in targets}
        workers = set(multiprocessing.active_children()) - others  # submit has started them all
        console.log(f"{len(pending)} stages on {jobs} workers of {threads} torch thread{'s' if threads > 1 else ''} each")
        with progress_bar("stages", total=len(pending)) as bar:
            while pending:
                done, pending = wait(pending, timeout=_POLL_SECONDS, return_when=FIRST_COMPLETED)
                for future in done:
                    future.result()  # raises the worker's error
                    bar.advance()
                _raise_if_one_died(workers)
    except BaseException as error:
        # a worker may hold a stage another one waits for, so none is left to finish on its own
        for worker in set(multiprocessing.active_children()) - others:
            worker.terminate()
        executor.shutdown(wait=True, cancel_futures=True)
        if isinstance(error, BrokenProcessPool):
            raise RuntimeError(f"{run.root}: a worker process died (killed, or out of memory); rerun to resume") from error
        raise
    executor.shutdown(wait=True)


# How often the workers are checked for one that died. ProcessPoolExecutor notices a dead worker
# on its own, except one that dies before its manager thread first waits on it: CPython 3.11+
# starts spawn workers one per submit, after waking that thread, so the thread may wait on the
# first worker alone, and would learn of the second's death only from the first's result.
_POLL_SECONDS = 1.0


def _raise_if_one_died(workers: set) -> None:
    if any(worker.exitcode is not None for worker in workers):
        raise BrokenProcessPool("a worker process exited while its pool was running")


def _start_worker(threads: int) -> None:
    torch.set_num_threads(threads)
    os.environ["SYNTH2_PROGRESS"] = "0"


def _build(root: str, config: Any, fn: Callable[..., Any], args: tuple) -> None:
    fn(Run(Path(root), config, wait_for_writers=True), *args)
