"""Durable file replacement: the one way a node writes a small file that must survive a crash
whole (a fence record, an installed contract package, a bus checkpoint, a standby marker).

Write a temporary file beside it, fsync it, rename it over the target, fsync the directory: a
crash leaves the old file or the new one, never a part of either, and a returned call means the
new one is on disk.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_durably(path: Path, data: bytes | str) -> None:
    """Replace `path` with `data` atomically and durably (see the module docstring)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
