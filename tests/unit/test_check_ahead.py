"""Checks started ahead of a block's turn (runtime/roles/peer/committer.CommitExecutor.check_ahead)
are used only if the channel config and the committed contract definitions they were made
against are still the current ones; a config or lifecycle change in between makes the load
check again (a transaction checked under the old policy must not commit under the new one)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from dltmw.core.identity_table import IdentityTable, TableEntry
from dltmw.core.txcheck import CheckedTx
from dltmw.runtime.roles.peer import committer as module
from dltmw.runtime.roles.peer.committer import CommitExecutor
from dltmw.v1 import block_pb2


def block(number: int, *envelopes: bytes) -> block_pb2.Block:
    b = block_pb2.Block(header=block_pb2.BlockHeader(number=number))
    b.data.envelopes.extend(envelopes)
    return b


def counted_submits(pool: ThreadPoolExecutor) -> list[object]:
    """The functions submitted to `pool` from now on (a hop each)."""
    submitted: list[object] = []
    original = pool.submit

    def submit(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        submitted.append(fn)
        return original(fn, *args, **kwargs)

    pool.submit = submit  # type: ignore[method-assign]
    return submitted


@pytest.fixture
def executor(monkeypatch: pytest.MonkeyPatch):
    seen: list[tuple[str, object]] = []

    def signature_error(view: object, b: block_pb2.Block) -> str:
        seen.append(("signatures", view))
        return ""

    def check_transaction(env: bytes, committed: object) -> CheckedTx:
        seen.append(("tx", committed))
        return CheckedTx(env.decode(), 1, None, detail=str(id(committed)))

    monkeypatch.setattr(module, "signature_error", signature_error)
    monkeypatch.setattr(module, "check_transaction", check_transaction)
    config = SimpleNamespace(view=object())
    lifecycle = SimpleNamespace(view=object())
    pool = ThreadPoolExecutor(2)
    ledger = SimpleNamespace(identities=IdentityTable())  # what check_ahead reads of it
    ex = CommitExecutor(config, ledger, pool, None, None, lifecycle)  # type: ignore[arg-type]
    yield ex, config, lifecycle, seen
    pool.shutdown()


def test_checks_made_ahead_are_used_when_the_views_are_unchanged(executor) -> None:
    ex, config, lifecycle, _ = executor

    async def run() -> object:
        ex.check_ahead(block(5, b"a", b"b", b"c"))
        return await ex._checked_ahead(block(5), config.view)

    error, checked = asyncio.run(run())
    assert error == "" and [c.tx_id for c in checked] == ["a", "b", "c"]
    assert {c.detail for c in checked} == {str(id(lifecycle.view))}


@pytest.mark.parametrize("changed", ["config", "lifecycle"])
def test_checks_made_against_a_replaced_view_are_not_used(executor, changed: str) -> None:
    ex, config, lifecycle, _ = executor

    async def run() -> object:
        ex.check_ahead(block(5, b"a", b"b", b"c"))
        if changed == "config":
            config.view = object()  # a config block committed in between
        else:
            lifecycle.view = object()  # a contract definition committed in between
        return await ex._checked_ahead(block(5), config.view)

    assert asyncio.run(run()) is None  # the load checks again


def test_checks_made_before_a_block_registered_clients_are_not_used(executor) -> None:
    """A block committed in between added client identity-table entries: a reference in this
    block may resolve now that did not when its checks ran ahead (core/identity_table.py), so
    the load checks again (else a peer that checked ahead and one that did not could record
    different codes). Red when `_checked_ahead` ignores the table's size."""
    ex, config, _, _ = executor

    async def run() -> object:
        ex.check_ahead(block(5, b"a", b"b", b"c"))
        entry = TableEntry("Org1", b"\x01" * 32, b"der", 4)
        ex._ledger.identities.add([entry])  # block 4's commit registered a client
        return await ex._checked_ahead(block(5), config.view)

    assert asyncio.run(run()) is None  # the load checks again


def test_checks_of_blocks_already_passed_are_dropped(executor) -> None:
    ex, config, _, _ = executor

    async def run() -> None:
        ex.check_ahead(block(3, b"a", b"b", b"c"))
        ex.check_ahead(block(4, b"d", b"e", b"f"))
        assert await ex._checked_ahead(block(4), config.view) is not None
        assert ex._ahead == {}

    asyncio.run(run())


def test_a_small_block_is_not_sent_to_the_pool_ahead(executor) -> None:
    """A block of at most INLINE_MAX transactions (a lone one at low load) is checked by its
    load on the loop's thread, as `map_chunked` does: no pool hop on a subscriber's path."""
    ex, config, _, seen = executor
    submitted = counted_submits(ex._pool)

    async def run() -> None:
        ex.check_ahead(block(5, *[b"t%d" % i for i in range(module.INLINE_MAX)]))
        assert ex._ahead == {} and submitted == [] and seen == []
        assert await ex._checked_ahead(block(5), config.view) is None  # the load checks it
        ex.check_ahead(block(6, *[b"t%d" % i for i in range(module.INLINE_MAX + 1)]))
        assert 6 in ex._ahead and submitted  # a larger block still goes ahead, on the pool
        await ex._checked_ahead(block(6), config.view)
        signed = block(7, b"t")  # one transaction, PBFT-lite's 2f+1 orderer signatures
        for i in range(module.INLINE_MAX + 1):
            signed.metadata.signatures.add(signer=b"orderer%d" % i, signature=b"s")
        ex.check_ahead(signed)
        assert 7 in ex._ahead
        await ex._checked_ahead(signed, config.view)

    asyncio.run(run())


@pytest.mark.parametrize(
    "txs, jobs",
    [(3, 1), (module.CHECK_CHUNK, 1), (module.CHECK_CHUNK + 1, 2), (2 * module.CHECK_CHUNK + 1, 3)],
    ids=["small", "one-chunk", "one-more", "three-chunks"],
)
def test_a_block_costs_one_pool_job_per_chunk_its_signatures_in_the_first(
    executor, txs: int, jobs: int
) -> None:
    """A block's orderer signatures are checked in the job of its first chunk of transactions,
    not in a pool job of their own: a block of up to CHECK_CHUNK transactions is ONE hop ahead
    of its commit (a per-block cost at mid-size blocks). Every transaction is still checked,
    once, in block order; a block whose signatures fail is not checked further. Red with a
    separate signature job (one job more per block)."""
    ex, config, _, seen = executor
    submitted = counted_submits(ex._pool)
    envelopes = [b"t%d" % i for i in range(txs)]

    async def run() -> object:
        ex.check_ahead(block(5, *envelopes))
        return await ex._checked_ahead(block(5), config.view)

    error, checked = asyncio.run(run())
    assert len(submitted) == jobs
    assert error == "" and [c.tx_id for c in checked] == [e.decode() for e in envelopes]
    assert [kind for kind, _ in seen].count("signatures") == 1
    assert [kind for kind, _ in seen].count("tx") == txs


def test_a_block_whose_signatures_fail_is_refused_with_their_error(
    executor, monkeypatch: pytest.MonkeyPatch
) -> None:
    ex, config, _, seen = executor
    monkeypatch.setattr(module, "signature_error", lambda view, b: "forged")

    async def run() -> object:
        ex.check_ahead(block(5, b"a", b"b", b"c"))
        return await ex._checked_ahead(block(5), config.view)

    error, checked = asyncio.run(run())
    assert error == "forged" and checked == [] and seen == []
