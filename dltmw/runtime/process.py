"""What a node process owns besides the node: its exit status, its data-directory lock, its log.

Exit status of `python -m dltmw.runtime` (also documented in README "Operating a node"):

| status | meaning | keeper |
|---|---|---|
| 0 | clean stop (SIGTERM/SIGINT) | not restarted |
| 1 | start-up failed (the reason is on stderr and in the log) | restarted |
| 2 | bad command line or node.toml | not restarted |
| 71 `EXIT_FATAL` | a long-lived task failed for good (traceback in the log) | restarted |
| 73 `EXIT_LOCKED` | another process holds the data directory | not restarted |

One node per data directory. A node holds an exclusive `flock` on `<data_dir>/node.lock` for its
whole life, with its PID written in the file, so a second copy on the same data fails at once with
one line naming the holder. The kernel drops the lock when the process dies (even by kill -9), so
a stale lock file never blocks a start and a reused PID never fools a check: `lock_holder` asks
the lock, not the PID. The same kind of lock, `keeper.lock`, marks the node's keeper (`keeper.py`).

Logs. With `--log-file`, the node logs JSON lines (`runtime/logs.py`) to its own file, rotated by
size (`logging.handlers.RotatingFileHandler`, `[logging]` in node.toml: `file_bytes_max`, default
10 MiB, `file_count`, default 5), so no log grows without bound; stderr then only carries what
must be seen even when the log cannot be written: fatal start-up errors and Python's own last
words.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

from dltmw.runtime.config import LogSettings
from dltmw.runtime.logs import configure_node_logging

EXIT_OK = 0
EXIT_STARTUP = 1
EXIT_USAGE = 2
EXIT_FATAL = 71
EXIT_LOCKED = 73
NOT_RESTARTED = frozenset({EXIT_OK, EXIT_USAGE, EXIT_LOCKED})
NODE_LOCK = "node.lock"
KEEPER_LOCK = "keeper.lock"
LOCK_WAIT_S = 0.5  # a probe (`lock_holder`) holds the lock for microseconds; never wait longer


class Locked(Exception):
    """Another live process holds the lock."""

    def __init__(self, path: Path, holder: int | None) -> None:
        who = f"process {holder}" if holder else "another process"
        super().__init__(f"{path.parent} is in use by {who} (lock {path})")
        self.path = path
        self.holder = holder


class ProcessLock:
    """An exclusive flock held for the life of this process, the holder's PID inside."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, path: Path) -> ProcessLock:
        """Take the lock (creating the file); raises Locked naming the holder."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise Locked(path, _read_pid(path)) from None
                time.sleep(0.02)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        """Drop the lock (idempotent); the process ending drops it too."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def lock_holder(path: Path) -> int | None:
    """The PID of the live process holding the lock at `path`, 0 when it is held but the PID is
    not written yet, None when nobody holds it (a stale file says nothing)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(path) or 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_pid(path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(path.read_text().strip() or "0") or None
    return None


def configure_logging(log_file: Path | None, settings: LogSettings, node_id: str = "") -> None:
    """Root logging of a node process (`runtime/logs.py`): JSON lines to the rotating file when
    given, else to stderr."""
    configure_node_logging(node_id, log_file, settings)
