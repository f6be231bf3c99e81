"""A real PostgreSQL server for the tests of `state = "postgresql"`: initdb in a fresh temporary
data directory, `postgres` on a free 127.0.0.1 port (below the ephemeral range, `net/ports`),
stopped by its PID (SIGINT: fast shutdown).

The binaries are Debian's (`make postgresql` installs the `postgresql` package when `pg_ctl` is
missing). PostgreSQL refuses to run as root: as root, the server runs as the `postgres` user the
package creates, in a directory it owns. Each test gets its own schema (`fresh_schema`), so one
server serves the whole session. Durability is off in tests (fsync, synchronous_commit): what a
test checks is the transaction's atomicity and visibility, not the disk; the benchmark
(`benchmarks/pg_state.py`) runs the server with its durable defaults.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

from dltmw.net.ports import plan_port

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
TEST_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")
_SCHEMAS = itertools.count()


def bin_dir() -> Path | None:
    """Where PostgreSQL's server binaries are (Debian keeps them off PATH), or None."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), reverse=True)
    return versions[0].parent if versions else None


@dataclass
class PgServer:
    """A running server: its DSN (superuser, trust on 127.0.0.1) and its process."""

    dsn: str
    process: subprocess.Popen[bytes]
    root: Path
    args: list[str]  # how it was started (`restart`)
    user: str | None

    def stop(self) -> None:
        """Fast shutdown by PID, then remove the data directory."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT_S)
        for _ in range(3):  # a file written while the tree is removed makes one pass fail
            shutil.rmtree(self.root, ignore_errors=True)
            if not self.root.exists():
                break


def restart(server: PgServer) -> None:
    """Stop the server (fast shutdown: its clients' connections drop) and start it again on the
    same data directory and port; returns once it accepts connections."""
    server.process.send_signal(signal.SIGINT)
    server.process.wait(STOP_TIMEOUT_S)
    with (server.root / "server.log").open("ab") as log:  # the server writes its own copy
        server.process = subprocess.Popen(
            server.args, stdout=log, stderr=subprocess.STDOUT, user=server.user
        )
    _wait_ready(server)


def _wait_ready(server: PgServer) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            psycopg.connect(server.dsn, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            code = server.process.poll()
            if code is not None or time.monotonic() > deadline:
                log = _log_tail(server.root / "server.log")
                server.stop()  # removes the directory: its log is in the message
                what = f"postgres exited with {code}" if code is not None else "postgres timed out"
                error = _DiedAtStart if code is not None else RuntimeError
                raise error(f"{what} before accepting connections; its log ends:\n{log}") from None
            time.sleep(0.1)  # a start-up wait with a deadline (tier 4's rule), not a timing


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


def start(settings: tuple[str, ...] = TEST_SETTINGS) -> PgServer:
    """initdb + postgres on a free port; returns once it accepts connections. A server that
    dies during start-up (seen once: SIGSEGV before accepting a connection, on a loaded host)
    is started once more in a fresh directory, with the first attempt's log in a warning: the
    tests need a server, they do not test PostgreSQL's start-up."""
    try:
        return _start(settings)
    except _DiedAtStart as exc:
        warnings.warn(f"{exc}; starting PostgreSQL once more", stacklevel=2)
        return _start(settings)


class _DiedAtStart(RuntimeError):
    """The server process exited before it accepted a connection."""


def _start(settings: tuple[str, ...]) -> PgServer:
    binaries = bin_dir()
    if binaries is None:
        raise RuntimeError("PostgreSQL is not installed: run `make postgresql` (Debian package)")
    as_root = os.geteuid() == 0  # postgres refuses root: it runs as `postgres`, which must
    # reach its directory (a root-only TMPDIR would hide it)
    root = Path(tempfile.mkdtemp(prefix="dltmw-pg-", dir="/tmp" if as_root else None))
    user: str | None = None
    if as_root:
        user = "postgres"
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    data = root / "data"
    subprocess.run(
        [
            binaries / "initdb",
            "-D",
            data,
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
        user=user,
    )
    port = plan_port()  # outside the ephemeral range: no outgoing connection takes it
    args = [binaries / "postgres", "-D", data, "-p", str(port), "-k", root]
    args += ["-c", "listen_addresses=127.0.0.1"]
    for setting in settings:
        args += ["-c", setting]
    # closed here on every path: the child holds its own descriptor (a handle kept open was a
    # ResourceWarning after a failed start)
    with (root / "server.log").open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, user=user)
    dsn = f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
    server = PgServer(dsn, process, root, [str(a) for a in args], user)
    _wait_ready(server)
    return server


@contextlib.contextmanager
def running(settings: tuple[str, ...] = TEST_SETTINGS) -> Iterator[PgServer]:
    """A server for the duration of the block."""
    server = start(settings)
    try:
        yield server
    finally:
        server.stop()


def fresh_schema(prefix: str = "t") -> str:
    """A schema name no other test of this process uses."""
    return f"{prefix}{os.getpid()}_{next(_SCHEMAS)}"
