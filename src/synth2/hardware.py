"""A one-line description of the machine a result came from.

Seeded runs are bit-identical only on the same kernels: the same seed on an AVX-512 and an
AVX2 CPU rounds differently in matrix products, and training amplifies the difference. So
every report and benchmark names the CPU model and the instruction set torch dispatches to.
"""

from __future__ import annotations

import platform
from pathlib import Path

import torch


def cpu_model() -> str:
    """The CPU's marketing name (Linux /proc/cpuinfo), else what `platform` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def describe(jobs: int = 1, threads: int | None = None) -> str:
    """E.g. 'AMD EPYC CPU (AVX2 kernels), 2 torch threads, torch 2.13.0+cpu', or with parallel
    workers '..., 2 workers x 1 torch thread, ...' (the threads each stage ran with)."""
    if torch.cuda.is_available():
        workers = f"{jobs} workers, " if jobs > 1 else ""
        return f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda}), {workers}torch {torch.__version__}"
    kernels = torch.backends.cpu.get_cpu_capability()
    threads = torch.get_num_threads() if threads is None else threads
    plural = "s" if threads != 1 else ""
    workers = f"{jobs} workers x {threads} torch thread{plural}" if jobs > 1 else f"{threads} torch thread{plural}"
    return f"{cpu_model()} CPU ({kernels} kernels), {workers}, torch {torch.__version__}"
