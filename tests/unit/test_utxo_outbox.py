"""Durable finality on one node: outbox rows are written with the transaction, survive a
reopen, are retried with backoff until the recipient acknowledges, then deleted; recording the
same transaction again (a repeated delivery at a receiver) changes nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from utxo_parties import make_parties, tx

from dltmw.aio.tasks import TaskOwner
from dltmw.core.errors import TransientError
from dltmw.core.utxo.build import cash_output
from dltmw.core.utxo.model import Command
from dltmw.core.utxo.verify import SignedTx, read_signed
from dltmw.ledger.vault_store import VaultStore
from dltmw.runtime.roles.vault import outbox as outbox_mod
from dltmw.runtime.roles.vault.outbox import Outbox
from dltmw.v1 import errors_pb2, flow_service_pb2, utxo_pb2

P = make_parties()
A, B = P.alice.identity_bytes, P.bob.identity_bytes


def final_tx() -> SignedTx:
    raw, _ = tx(
        outputs=[cash_output(P.bank.identity_bytes, B, "JPY", 5)],
        commands=[Command("cash", "issue", (P.bank.identity_bytes,), b"")],
    )
    stx = utxo_pb2.SignedUtxoTransaction(transaction=raw)
    return read_signed(stx.SerializeToString())


class FakeRole:
    """The parts of VaultRole the outbox uses; `fail[node]` calls fail before one succeeds."""

    def __init__(self, store: VaultStore, fail: dict[str, int]) -> None:
        self.store = store
        self.fail = fail
        self.calls: list[tuple[str, bool]] = []
        self.shared: list[bytes] = []
        self.netmap = self
        self.twice = asyncio.Event()  # set once two deliveries were attempted

    def identity_of(self, node: str) -> bytes:
        return {"n1": A, "n2": B}[node]

    async def share(self, to: bytes, tx_ids: Iterable[str]) -> None:
        self.shared.append(to)

    def signed_message(self, **fields: Any) -> tuple[bytes, bytes]:
        return flow_service_pb2.FlowMessage(**fields).SerializeToString(), b"sig"

    async def call(self, node: str, method: str, request: Any) -> None:
        msg = flow_service_pb2.FlowMessage.FromString(request.message)
        self.calls.append((node, msg.observer))
        if len(self.calls) >= 2:
            self.twice.set()
        if self.fail.get(node, 0) > 0:
            self.fail[node] -= 1
            raise TransientError(errors_pb2.ERROR_REASON_PEER_UNAVAILABLE, f"{node} is down")


async def drained(store: VaultStore, left: int = 0, within_s: float = 10.0) -> bool:
    """True once at most `left` rows remain (polled, with a deadline)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if len(await store.outbox(10)) <= left:
            return True
        await asyncio.sleep(0.02)
    return False


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbox_mod, "FIRST_DELAY_S", 0.01)
    monkeypatch.setattr(outbox_mod, "BACKOFF_MIN_S", 0.01)


async def test_rows_are_written_with_the_transaction_and_survive_a_reopen(tmp_path: Path) -> None:
    stx = final_tx()
    store = VaultStore(tmp_path / "v.sqlite")
    await store.open()
    await store.record(stx, [0], [("n1", False), ("n2", True)])
    await store.close()
    store = VaultStore(tmp_path / "v.sqlite")
    await store.open()
    rows = await store.outbox(10)
    assert [(r.tx_id, r.node, r.observer, r.stx) for r in rows] == [
        (stx.wire.tx_id, "n1", False, stx.raw),
        (stx.wire.tx_id, "n2", True, stx.raw),
    ]
    await store.delivered(stx.wire.tx_id, "n1")
    await store.delivered(stx.wire.tx_id, "n1")  # idempotent
    assert [r.node for r in await store.outbox(10)] == ["n2"]
    # a receiver recording the same transaction twice: one transaction, one state
    await store.record(stx, [0])
    await store.record(stx, [0])
    assert len(await store.transactions([stx.wire.tx_id])) == 1
    assert len(await store.query()) == 1
    await store.close()


async def test_failed_deliveries_are_retried_until_acknowledged(tmp_path: Path) -> None:
    stx = final_tx()
    store = VaultStore(tmp_path / "v.sqlite")
    await store.open()
    await store.record(stx, [0], [("n1", False), ("n2", True)])
    role = FakeRole(store, {"n1": 3})
    box = Outbox(role)  # type: ignore[arg-type]
    box.start(TaskOwner())
    try:
        assert await drained(store)
    finally:
        await box.stop()
    assert role.calls.count(("n1", False)) == 4  # three failures, then the acknowledgement
    assert role.calls.count(("n2", True)) == 1
    assert set(role.shared) == {A, B}  # backchain re-granted before each delivery
    await store.close()


async def test_a_restarted_node_resumes_its_outbox(tmp_path: Path) -> None:
    stx = final_tx()
    store = VaultStore(tmp_path / "v.sqlite")
    await store.open()
    await store.record(stx, [0], [("n1", False)])
    role = FakeRole(store, {"n1": 10**6})  # down for good while the first process runs
    box = Outbox(role)  # type: ignore[arg-type]
    box.start(TaskOwner())
    await asyncio.wait_for(role.twice.wait(), timeout=10)
    await box.stop()  # stops cleanly with the delivery still owed
    assert len(role.calls) >= 2 and len(await store.outbox(10)) == 1
    await store.close()
    store = VaultStore(tmp_path / "v.sqlite")
    await store.open()
    role = FakeRole(store, {})
    box = Outbox(role)  # type: ignore[arg-type]
    box.start(TaskOwner())
    try:
        assert await drained(store)
    finally:
        await box.stop()
    assert role.calls == [("n1", False)]
    await store.close()


async def test_undeliverable_rows_do_not_hide_later_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_mod, "BATCH", 1)  # one row per pass: the task must page
    store = VaultStore(tmp_path / "v.sqlite")
    await store.open()
    txs = sorted((final_tx() for _ in range(3)), key=lambda s: s.wire.tx_id)
    for stx in txs[:2]:
        await store.record(stx, [0], [("n1", False)])  # n1 never answers
    await store.record(txs[2], [0], [("n2", False)])
    role = FakeRole(store, {"n1": 10**6})
    box = Outbox(role)  # type: ignore[arg-type]
    box.start(TaskOwner())
    try:
        assert await drained(store, left=2)
    finally:
        await box.stop()
    assert [(r.tx_id, r.node) for r in await store.outbox(10)] == [
        (txs[0].wire.tx_id, "n1"),
        (txs[1].wire.tx_id, "n1"),
    ]
    await store.close()


async def test_a_store_that_stays_unavailable_stops_the_node_loudly(tmp_path: Path) -> None:
    """A transient fault waits for the next pass; `StorageUnavailable` (the store's retry budget
    spent) is fatal to the node, never logged and carried on (the pass used to swallow it)."""
    from dltmw.ledger.retry import StorageUnavailable

    stx = final_tx()
    store = VaultStore(tmp_path / "v.sqlite")
    await store.open()
    await store.record(stx, [0], [("n1", False)])
    role = FakeRole(store, {})
    failed = asyncio.Event()
    fatal: list[tuple[str, BaseException | None]] = []

    async def on_fatal(name: str, exc: BaseException | None) -> None:
        fatal.append((name, exc))
        failed.set()

    async def unavailable(*_: object) -> None:
        raise StorageUnavailable("storage write vault.delivered kept failing for 1 s: disk I/O")

    store.delivered = unavailable  # type: ignore[method-assign]
    box = Outbox(role)  # type: ignore[arg-type]
    box.start(TaskOwner(on_fatal=on_fatal))
    try:
        await asyncio.wait_for(failed.wait(), 10)
    finally:
        await box.stop()
        await store.close()
    assert [(name, type(exc)) for name, exc in fatal] == [("vault-outbox", StorageUnavailable)]
