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


def describe() -> str:
    """E.g. 'AMD EPYC CPU (AVX2 kernels), 2 torch threads, torch 2.13.0+cpu'."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda}), torch {torch.__version__}"
    kernels = torch.backends.cpu.get_cpu_capability()
    return f"{cpu_model()} CPU ({kernels} kernels), {torch.get_num_threads()} torch threads, torch {torch.__version__}"
