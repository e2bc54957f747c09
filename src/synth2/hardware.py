"""A one-line description of the machine a result came from.

Seeded runs are bit-identical only on the same kernels: the same seed on an AVX-512 and an
AVX2 CPU rounds differently in matrix products, and training amplifies the difference. So
every report and benchmark names the CPU model and the instruction set torch dispatches to.
"""

from __future__ import annotations

import platform
from pathlib import Path

import torch


def _cpuinfo(field: str) -> str | None:
    """The first value of `field` in Linux's /proc/cpuinfo; None elsewhere or when absent."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    return None


def cpu_model() -> str:
    """The CPU's marketing name (Linux /proc/cpuinfo), else what `platform` knows."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def bf16_flags() -> list[str]:
    """The CPU's bf16 and AMX instruction flags (/proc/cpuinfo): whether bf16 autocast can pay
    on it (benchmarks/bench_precision.py); empty where none is listed or there is no cpuinfo."""
    return sorted(f for f in (_cpuinfo("flags") or "").split() if "bf16" in f or f.startswith("amx"))


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
