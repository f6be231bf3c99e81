"""Group commit in the private store (`PrivateStore.transaction`): concurrent transactions share
one COMMIT, each is still all or nothing, and a refusal fails only its own caller."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from private_backends import PrivateSite

from dltmw.core.errors import ClientError
from dltmw.ledger.private_store import PrivateStore, PrivateTxn
from dltmw.v1 import errors_pb2


def _put(name: str, value: int, refuse: bool = False) -> Any:
    def fn(txn: PrivateTxn) -> int:
        txn.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, value))
        if refuse:  # after writing: the savepoint must take its write back
            raise ClientError(errors_pb2.ERROR_REASON_INVALID_FIELD, f"{name} refused")
        return value

    return fn


async def _meta(store: PrivateStore, name: str) -> int | None:
    def read(txn: PrivateTxn) -> int | None:
        row = txn.db.execute("SELECT value FROM meta WHERE name=?", (name,)).fetchone()
        return None if row is None else int(row[0])

    return await store.read(read)


def _counting_writes(store: PrivateStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The store file's writes (each one sqlite transaction, one COMMIT), by name."""
    file: Any = store._file
    names: list[str] = []
    real = file.write

    async def write(name: str, body: Any) -> Any:
        names.append(name)
        return await real(name, body)

    monkeypatch.setattr(file, "write", write)
    return names


async def test_concurrent_transactions_share_one_commit_and_a_refusal_stays_its_own(
    psite: PrivateSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await psite.open()
    try:
        writes = _counting_writes(store, monkeypatch)
        results = await asyncio.gather(
            store.transaction(_put("g0", 0), "privacy.store"),
            store.transaction(_put("g1", 1), "privacy.outbox"),
            store.transaction(_put("g2", 2, refuse=True), "privacy.store"),
            store.transaction(_put("g3", 3), "privacy.execute"),
            return_exceptions=True,
        )
        # asked together: ONE write (one COMMIT), named after its items for messages
        assert writes == ["privacy.store+privacy.outbox+privacy.execute"]
        assert results[:2] == [0, 1] and results[3] == 3
        assert isinstance(results[2], ClientError)  # only the refusing caller hears of it
        assert [await _meta(store, f"g{i}") for i in range(4)] == [0, 1, None, 3]
        # one alone still commits alone, at once, as its own write
        assert await store.transaction(_put("g4", 4)) == 4
        assert writes[-1] == "privacy.execute"
        assert await _meta(store, "g4") == 4
    finally:
        await store.close()


async def test_a_storage_fault_fails_the_whole_group_and_commits_none(
    psite: PrivateSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a refusal: the group is one transaction, so none of it is durable."""
    store = await psite.open()
    try:

        def broken(txn: PrivateTxn) -> None:
            txn.db.execute("INSERT INTO no_such_table VALUES (1)")

        results = await asyncio.gather(
            store.transaction(_put("h0", 0)),
            store.transaction(broken),
            return_exceptions=True,
        )
        assert all(isinstance(r, Exception) for r in results)
        assert await _meta(store, "h0") is None
    finally:
        await store.close()
