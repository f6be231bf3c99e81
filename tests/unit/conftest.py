"""Fixtures shared by unit tests: the ledger backends (`ledger_backends.py`) and the session's
PostgreSQL server (`pg_server.py`), started only when a test asks for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pg_server
import pytest
from ledger_backends import BACKENDS, LedgerSite


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """A real PostgreSQL server for the session (stopped by PID at its end)."""
    with pg_server.running() as server:
        yield server.dsn


@pytest.fixture(params=BACKENDS)
def site(request: pytest.FixtureRequest, tmp_path: Path) -> LedgerSite:
    """Where this test's ledger lives, once per backend."""
    if request.param == "sqlite":
        return LedgerSite("sqlite", tmp_path / "l.sqlite")
    dsn = request.getfixturevalue("pg_dsn")
    return LedgerSite("postgresql", tmp_path / "unused", dsn, pg_server.fresh_schema())
