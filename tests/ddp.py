"""Run a function in N gloo processes on loopback, with the environment torchrun would set."""

import os
import socket

import torch
import torch.multiprocessing as mp


def _worker(rank, world, port, fn, args):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    from synth2.train import distributed

    torch.set_num_threads(1)
    dist = distributed.init("cpu")
    try:
        fn(dist, *args)
    finally:
        torch.distributed.destroy_process_group()
    # Done and written: leave without interpreter finalization, where Gloo's worker threads can
    # still abort the process ("terminate called without an active exception", pytorch#179291).
    os._exit(0)


def run_ddp(fn, *args, world: int = 2) -> None:
    """`fn(dist, *args)` in `world` processes; `fn` must be a module-level function."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(world, port, fn, args), nprocs=world, join=True)
