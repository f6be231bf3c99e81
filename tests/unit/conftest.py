"""Fixtures shared by unit tests: the ledger and private-store backends (`ledger_backends.py`,
`private_backends.py`) and the session's PostgreSQL server (`pg_server.py`), started only when
a test asks for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pg_server
import pytest
from hypothesis import settings
from ledger_backends import BACKENDS, LedgerSite
from private_backends import PrivateSite

from dltmw.core.verified_memo import IN_PROCESS

# Hypothesis's per-example deadline (200 ms) is a timing assertion, and timing is never asserted
# in tests here: on a shared 2-core machine at load 30 a correct example can take longer. A
# test's own @settings still overrides the rest of this profile.
settings.register_profile("dltmw", deadline=None)
settings.load_profile("dltmw")


@pytest.fixture(autouse=True)
def _one_node_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each unit test starts as a process without nodes: the process-wide signature memo
    (`core/verified_memo.IN_PROCESS`, shared while two nodes or more run) off, whatever tests
    that ran in-process networks before it in this worker left behind — a signature found
    there would skip the checks a test counts (what `SigningIdentity.sign` records). Tests of
    the memo start their nodes themselves (`node_started`)."""
    monkeypatch.setattr(IN_PROCESS, "_memo", None)
    monkeypatch.setattr(IN_PROCESS, "_nodes", 0)


@pytest.fixture(scope="session")
def pg_instance() -> Iterator[pg_server.PgServer]:
    """A real PostgreSQL server for the session (stopped by PID at its end)."""
    with pg_server.running() as server:
        yield server


@pytest.fixture(scope="session")
def pg_dsn(pg_instance: pg_server.PgServer) -> str:
    """The session server's DSN."""
    return pg_instance.dsn


@pytest.fixture(params=BACKENDS)
def site(request: pytest.FixtureRequest, tmp_path: Path) -> LedgerSite:
    """Where this test's ledger lives, once per backend."""
    if request.param == "sqlite":
        return LedgerSite("sqlite", tmp_path / "l.sqlite")
    dsn = request.getfixturevalue("pg_dsn")
    return LedgerSite("postgresql", tmp_path / "unused", dsn, pg_server.fresh_schema())


@pytest.fixture(params=BACKENDS)
def psite(request: pytest.FixtureRequest, tmp_path: Path) -> PrivateSite:
    """Where this test's private store lives, once per backend."""
    path = tmp_path / "c.private.sqlite"
    if request.param == "sqlite":
        return PrivateSite("sqlite", path)
    server = request.getfixturevalue("pg_instance")
    return PrivateSite("postgresql", path, server, pg_server.fresh_schema("p"))
