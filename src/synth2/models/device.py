"""Where a model lives: eval and generation functions send their inputs there and bring results
back to the CPU, so they work whatever device a stage put the model on."""

from __future__ import annotations

import torch


def device_of(module: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter (or buffer); the CPU for a module with neither."""
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")
