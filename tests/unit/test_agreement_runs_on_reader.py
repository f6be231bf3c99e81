"""An agreement run (`runtime/roles/privacy/agreement.Agreements._run_many`, the sender's own runs
and a recipient's AgreeBatch alike) reads and runs on the private store's READER thread, in one
read transaction (`PrivateStore.snapshot`): it completes while the writer thread is held inside
a transaction, and it sees the last committed state, not that transaction's uncommitted rows.

Why: under load the writer thread spent most of its time in group commits (their fsyncs), and a
run queued behind them waited longer than it ran (benchmarks/RESULTS.md, branch priv7). The
results must not change: a run still sees exactly one committed state.

A real private store on both backends (sqlite's WAL reader, PostgreSQL's REPEATABLE READ
reader); the channel is a stand-in (its store and an empty config). The payloads are not real
envelopes: a held one is refused as unreadable, one not held as not held, which tells what the
run saw without a contract.
"""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

from private_backends import PrivateSite

from dltmw.core.errors import ClientError
from dltmw.ledger.private_store import NewPayload, PrivateTxn
from dltmw.runtime.roles.privacy.agreement import Agreements
from dltmw.v1 import config_pb2, errors_pb2

LATE_S = 10.0  # a deadline for what must happen, never a measured duration
COMMITTED = b"c" * 32
UNCOMMITTED = b"u" * 32


async def test_a_run_sees_the_committed_state_while_the_writer_is_held(psite: PrivateSite) -> None:
    store = await psite.open()
    try:
        await store.store_payloads([NewPayload(COMMITTED, b"not an envelope", ())])
        inside, release = threading.Event(), threading.Event()

        def held_writer(txn: PrivateTxn) -> None:  # on the writer thread, inside a transaction
            txn.db.execute("INSERT INTO payloads VALUES (?,?)", (UNCOMMITTED, b"not either"))
            inside.set()
            release.wait(LATE_S)

        writing = asyncio.ensure_future(store.transaction(held_writer, "privacy.store"))
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, inside.wait, LATE_S)
        channel = SimpleNamespace(
            store=store, view=SimpleNamespace(config=config_pb2.ChannelConfig())
        )
        agreements = Agreements(SimpleNamespace(), None)  # type: ignore[arg-type]
        try:
            runs = await asyncio.wait_for(
                agreements._run_many(channel, lambda _: None, [COMMITTED, UNCOMMITTED]),  # type: ignore[arg-type]
                LATE_S,
            )
        finally:
            release.set()
            await writing
        assert all(isinstance(r, ClientError) for r in runs)
        reasons = [r.reason for r in runs]  # type: ignore[union-attr]
        # the committed payload was found (and refused as unreadable); the uncommitted one not
        assert reasons[0] != errors_pb2.ERROR_REASON_PAYLOAD_NOT_HELD
        assert reasons[1] == errors_pb2.ERROR_REASON_PAYLOAD_NOT_HELD
        # once committed, the next run sees it
        (later,) = await agreements._run_many(channel, lambda _: None, [UNCOMMITTED])  # type: ignore[arg-type]
        assert isinstance(later, ClientError)
        assert later.reason != errors_pb2.ERROR_REASON_NOT_AUTHORIZED
    finally:
        await store.close()
