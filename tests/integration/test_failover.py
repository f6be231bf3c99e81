"""A standby peer under load: kill -9 its active, `dltmw failover`, clients continue; nothing
acknowledged is lost, including a private payload the standby replicated from the active, and
the old active, restarted, is fenced out (issue 20 item 6; docs/operations.md "Standby and
failover").

One network for the whole story (solo orderer, two orgs, AND policy, a standby of peer0.org1):
bad input first (the standby refuses the active's work; promotion while the active answers and
by a non-admin are refused, nothing changed), then the failover itself.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import grpc
import pytest

from dltmw.aio.rpc_errors import reason_of
from dltmw.client import GatewayClient
from dltmw.client.contracts import MAX_MESSAGE_BYTES, NodeAdmin
from dltmw.client.failover import ActiveAlive, failover
from dltmw.client.files import ClientFiles
from dltmw.client.privacy import PrivacyClient
from dltmw.core.privacy.execution import EXECUTED
from dltmw.net.addressbook import AddressBook
from dltmw.rpc.tls import link_tls, secure_channel
from dltmw.v1 import (
    gateway_service_pb2,
    gateway_service_pb2_grpc,
    private_payload_pb2,
    transaction_pb2,
)

from .cli import dltmw
from .conftest import TWO_ORG
from .ledgers import blocks, height, ledger_path, read_only, wait_until

pytestmark = pytest.mark.integration
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
ACTIVE, STANDBY = "peer0.org1", "peer0.org1-standby"
TOPOLOGY = TWO_ORG.replace(
    "[[clients]]",
    f'[[nodes]]\nid = "{STANDBY}"\norg = "Org1"\nroles = ["peer", "gateway"]\n'
    f'standby_of = "{ACTIVE}"\n[[clients]]',
    1,
)
BEFORE, AFTER = 24, 24  # transactions acknowledged before the kill and after the failover
MARKER = os.urandom(16)  # a private payload's content


def private_rows(net: Path, node: str, digest: bytes) -> tuple[int | None, list[tuple[str, str]]]:
    """(status of the private transaction of `digest`, private state keys) in a node's files."""
    path = net / "nodes" / node / "data" / "trades.private.sqlite"
    if not path.exists():
        return None, []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT status FROM ptxs WHERE payload_hash=?", (digest,)).fetchone()
        keys = sorted((n, k) for n, k in db.execute("SELECT namespace, key FROM pstate"))
    finally:
        db.close()
    return (None if row is None else int(row[0])), keys


async def _load(
    net: Path, acked: list[str], count: int, tag: str, client_id: str = "user1.org1"
) -> None:
    """Submit `count` puts through the client's gateway (4 at a time); record acked tx_ids."""
    client = await GatewayClient.connect(net, client_id)
    sem = asyncio.Semaphore(4)

    async def put(i: int) -> None:
        async with sem:
            done = await client.submit_transaction("trades", "kv", "put", f"{tag}{i}", f"v{i}")
            assert done.status.result == VALID, f"{tag}{i}: {done.status.result}"
            acked.append(done.tx_id)

    try:
        await asyncio.gather(*(put(i) for i in range(count)))
    finally:
        await client.close()


async def _refused(call: object) -> tuple[grpc.StatusCode, str | None]:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        return exc.code(), reason_of(exc)
    raise AssertionError("the call was not refused")


async def test_kill9_active_then_failover_loses_nothing(network) -> None:
    net, sup = network(TOPOLOGY, batch_ms=50)
    book = AddressBook(net / "run" / "endpoints")
    active_at = book.lookup(ACTIVE)
    acked: list[str] = []
    await _load(net, acked, BEFORE, "a")
    # A private transaction acknowledged by the active; the standby pulls its payload from the
    # active (Resend as the same identity) and executes it into its own private state.
    org1 = PrivacyClient(await GatewayClient.connect(net, "user1.org1"))
    try:
        private = await org1.submit_private("trades", ["Org2"], "kv", "put", "secret", MARKER)
    finally:
        await org1.close()
    assert private.status.result == VALID
    await wait_until(
        lambda: private_rows(net, STANDBY, private.payload_hash)[0] == EXECUTED,
        30,
        "the standby executes the replicated private transaction",
    )

    # The standby follows by Deliver but refuses the active's work.
    standby_client = await GatewayClient.connect(net, "user1.org1", gateway=STANDBY)
    try:
        code, reason = await _refused(standby_client.evaluate("trades", "kv", "get", "a0"))
    finally:
        await standby_client.close()
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "STANDBY_NOT_PROMOTED")
    # Promotion while the active answers, and by a non-admin: refused, nothing changed.
    admin = NodeAdmin(net, STANDBY)
    code, reason = await _refused(admin.promote(ACTIVE))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ACTIVE_STILL_ALIVE")
    user = NodeAdmin(net, STANDBY, "user1.org1")
    code, reason = await _refused(user.promote(ACTIVE))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_AUTHORIZED")
    with pytest.raises(ActiveAlive):
        await failover(net, ACTIVE)
    status = await admin.status()
    assert (status.standby_of, status.promoted) == (ACTIVE, False)
    assert book.lookup(ACTIVE) == active_at, "a refused promotion changed the address book"

    # Under load: kill -9 the active, fail over, reconnect and continue.
    during = asyncio.ensure_future(_load(net, acked, 200, "b"))
    await wait_until(lambda: len(acked) >= BEFORE + 8, 60, "acks under load")
    sup.kill(ACTIVE)
    with pytest.raises(Exception):  # noqa: B017 (an RPC or client error, whichever comes first)
        await during  # the load through the dead gateway stops; what was acked stays acked
    out = dltmw("failover", str(net), ACTIVE)
    assert "promoted" in out, out
    assert book.lookup(ACTIVE) == book.lookup(STANDBY), "the active's id does not resolve"
    assert (await admin.status()).promoted
    before_after = len(acked)
    await _load(net, acked, AFTER, "c")  # a new client: reconnects to the active's id
    # peer0.org2's gateway needs Org1's endorsement too: its link re-resolves the active's id.
    await _load(net, acked, AFTER // 3, "d", "user1.org2")
    assert len(acked) == before_after + AFTER + AFTER // 3

    # Every acknowledged transaction is VALID on the promoted standby and the other peer, once
    # each, and both chains are identical.
    orderer = ledger_path(net, "orderer0", role="orderer")
    for node in (STANDBY, "peer0.org2"):
        path = ledger_path(net, node)
        await wait_until(lambda p=path: height(p) >= height(orderer), 30, f"{node} catch-up")
        db = read_only(path)
        try:
            codes = dict(db.execute("SELECT tx_id, code FROM txs").fetchall())
        finally:
            db.close()
        lost = [t for t in acked if codes.get(t) != VALID]
        assert not lost, f"{node} lost {len(lost)} acknowledged transactions: {lost[:3]}"
    standby_chain, other_chain = (
        [b.SerializeToString() for b in blocks(ledger_path(net, n))]
        for n in (STANDBY, "peer0.org2")
    )
    assert standby_chain == other_chain, "the promoted standby's chain differs"
    # The promoted standby serves the private payload, and its private state is the other
    # recipient's.
    org1 = PrivacyClient(await GatewayClient.connect(net, "user1.org1"))
    try:
        served = await org1.receive("trades", private.payload_hash)
        assert private_payload_pb2.PrivateInvocation.FromString(served).args == [b"secret", MARKER]
    finally:
        await org1.close()
    standby_private = private_rows(net, STANDBY, private.payload_hash)
    assert standby_private == private_rows(net, "peer0.org2", private.payload_hash)
    assert ("kv", "secret") in standby_private[1]

    # A revived old active is fenced out: it takes its name back from no one and refuses
    # everything with ACTIVE_SUPERSEDED; the promoted standby goes on serving.
    sup.start(ACTIVE)
    old_at = sup.wait_ready(ACTIVE, 60)
    assert book.lookup(ACTIVE) == book.lookup(STANDBY) != old_at
    files = ClientFiles.load(net, "user1.org1")
    name, tls = link_tls(files.tls, files.addresses, ACTIVE)
    async with secure_channel(old_at, name, tls, MAX_MESSAGE_BYTES) as channel:
        stub = gateway_service_pb2_grpc.GatewayServiceStub(channel)
        request = gateway_service_pb2.EvaluateRequest()
        code, reason = await _refused(stub.Evaluate(request, timeout=10))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ACTIVE_SUPERSEDED")
    await _load(net, acked, 3, "e")
