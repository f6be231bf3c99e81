"""Durable file replacement: the one way a node writes a small file that must survive a crash
whole (a fence record, an installed contract package, a bus checkpoint, a standby marker).

Write a temporary file beside it, fsync it, rename it over the target, fsync the directory: a
crash leaves the old file or the new one, never a part of either, and a returned call means the
new one is on disk.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_durably(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    """Replace `path` with `data` atomically and durably (see the module docstring). The file
    is created with `mode` (e.g. 0o600 for key material), so it is never readable by others,
    not even before a chmod."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)  # left by a crash: O_EXCL below must create it afresh
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
