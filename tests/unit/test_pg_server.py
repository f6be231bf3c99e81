"""The tests' PostgreSQL helper (`tests/pg_server.py`) leaves no handle of the server's log open
in the test process: the server writes through its own descriptor, and a handle kept after a
failed start was a ResourceWarning (and an open file of a removed directory) for the session."""

from __future__ import annotations

import os
from pathlib import Path

import pg_server
import pytest


def _open_server_logs() -> list[str]:
    """The files named server.log this process holds open (a removed one included)."""
    names = (os.readlink(fd) for fd in Path("/proc/self/fd").iterdir() if fd.is_symlink())
    return [n for n in names if "/dltmw-pg-" in n and "server.log" in n]


def test_no_log_handle_is_left_after_a_start_or_a_failed_one() -> None:
    with pg_server.running() as server:
        assert _open_server_logs() == []  # red: the handle of a running server's log
        pg_server.restart(server)
        assert _open_server_logs() == []
    # an unknown setting: postgres exits at start-up, is started once more, and fails again
    with pytest.warns(UserWarning, match="once more"), pytest.raises(RuntimeError) as failed:
        pg_server.start(("no_such_setting=1",))
    assert "no_such_setting" in str(failed.value)  # the server's log tail names the cause
    assert _open_server_logs() == []  # red: the failed start's handle, kept by its traceback
