"""Writes a rerun may read: whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, fsync it, and rename it over `path`:
    a crash leaves the old file or the new one, never half of either. The temporary file is this
    process's own, so processes writing the same file at once each publish a whole one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
