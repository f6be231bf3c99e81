"""Queued private delivery on a channel as `dltmw init` makes it (ALL_RECIPIENTS, the default),
on real node processes (docs/privacy.md "Queued delivery").

Three organisations, one peer each (test_privacy_queued.py's topology); channel `strict` names no
`private_agreement`, so every recipient must agree. Org3's node is killed. A private transaction
from Org1 to Org2 and Org3: the Send is queued for peer0.org3 (the sender's ValidatePrivateState
says delivery pending) and the transaction is not ordered; the client waits. Org3's node restarts,
the redelivery task pushes the payload, peer0.org3 agrees, and the transaction commits VALID (so
with all three agreements) and every party's private state hash matches. Then the deadline path:
with Org3 kept down the client's call ends with `PrivateAgreementPending` (PRIVATE_AGREEMENT_TIMEOUT
naming peer0.org3, with the payload hash, tx id and nonce) and nothing is ordered; Org3 returns,
`resume_private` commits it once, and a second resume orders nothing more.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

import dltmw
from dltmw.client import GatewayClient
from dltmw.client.privacy import PrivacyClient
from dltmw.client.private_pending import PrivateAgreementPending
from dltmw.core.hashing import compute_tx_id
from dltmw.core.identity import reference_bytes
from dltmw.ops.supervisor import Supervisor
from dltmw.pki.network import init_network
from dltmw.rpc.status import reason_of
from dltmw.v1 import common_pb2, private_payload_pb2, transaction_pb2
from dltmw.v1 import privacy_manager_service_pb2 as P
from integration import test_privacy_queued as queued
from integration.ledgers import blocks, ledger_path
from integration.test_privacy_queued import until_async as until

pytestmark = pytest.mark.integration
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
CH = "strict"  # the topology's channel with no `private_agreement`: ALL_RECIPIENTS
WAIT_S = 150.0  # the client's wait for a pending recipient in the first test (never reached)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Supervisor]]:
    """A network of its own, from test_privacy_queued.py's topology."""
    tmp = tmp_path_factory.mktemp("queueddefault")
    (tmp / "topology.toml").write_text(queued.TOPOLOGY)
    init_network(tmp / "topology.toml", tmp / "net")
    sup = Supervisor(tmp / "net")
    try:
        sup.up(timeout_s=90)
        yield tmp / "net", sup
    finally:
        codes = {n: sup.stop(n) for n in list(sup.nodes) if sup.running(n)}
        assert all(c == 0 for c in codes.values()), f"unclean stop: {codes}"


def pstate(net: Path, org: str) -> dict[str, bytes]:
    return queued.pstate(net, org, CH)


def _rows(net: Path, org: str, sql: str) -> list[tuple[object, ...]]:
    db = net / "nodes" / f"peer0.{org}" / "data" / f"{CH}.private.sqlite"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def owed(net: Path, org: str) -> list[tuple[bytes, str]]:
    rows = _rows(net, org, "SELECT hash, node FROM outbox ORDER BY hash, node")
    return [(bytes(h), str(n)) for h, n in rows]  # type: ignore[call-overload]


def payload_count(net: Path, org: str) -> int:
    [(count,)] = _rows(net, org, "SELECT COUNT(*) FROM payloads")
    assert isinstance(count, int)
    return count


def holds(net: Path, org: str, digest: bytes) -> bool:
    return bool(_rows(net, org, f"SELECT 1 FROM payloads WHERE hash = x'{digest.hex()}'"))


async def committed(pc: PrivacyClient, tx_id: str) -> bool:
    """Is `tx_id` on org1's ledger (asked for a short while: no answer means not committed)?"""
    try:
        await asyncio.wait_for(pc.client.commit_status(CH, tx_id), 3.0)
    except (TimeoutError, grpc.aio.AioRpcError):
        return False
    return True


async def all_match(pc: PrivacyClient, digest: bytes) -> bool:
    try:
        view = await pc.validate(CH, digest, wait=False)
    except grpc.aio.AioRpcError:
        return False  # not executed at peer0.org1 yet
    return view.status == P.PRIVATE_TX_STATUS_EXECUTED and all(
        p.matches and not p.delivery_pending for p in view.parties
    )


async def test_a_down_recipient_is_queued_agrees_on_return_and_the_tx_commits(
    net: tuple[Path, Supervisor],
) -> None:
    path, sup = net
    sup.kill("peer0.org3")
    pc = PrivacyClient(await GatewayClient.connect(path, "user1.org1"), pending_deadline_s=WAIT_S)
    try:
        nonce, tx_id = pc.new_nonce()
        submitting = asyncio.ensure_future(
            pc.submit_private(CH, ["Org2", "Org3"], "kv", "put", "deal", "queued", nonce=nonce)
        )

        async def queued() -> bool:
            assert not submitting.done(), submitting
            return bool(await asyncio.to_thread(owed, path, "org1"))

        await until(queued, "the Send queued a delivery at peer0.org1")
        rows = await asyncio.to_thread(owed, path, "org1")
        [digest] = {h for h, n in rows if n == "peer0.org3"}  # the one peer0.org3 is owed
        # The sender's view: not executed anywhere yet, delivery to peer0.org3 pending.
        view = await pc.validate(CH, digest, wait=False)
        assert view.status == P.PRIVATE_TX_STATUS_UNSPECIFIED and not view.mismatch
        parties = {p.node_id: p for p in view.parties}
        assert parties["peer0.org3"].delivery_pending and parties["peer0.org3"].error
        assert parties["peer0.org3"].delivery_state == P.DELIVERY_STATE_PENDING
        assert not parties["peer0.org2"].delivery_pending
        # Not ordered while peer0.org3 has not agreed; the client is still waiting.
        assert not await committed(pc, tx_id)
        assert not submitting.done()
        sup.start("peer0.org3")
        sup.wait_ready("peer0.org3", 60)
        done = await asyncio.wait_for(submitting, WAIT_S + 30)
        assert done.status.result == VALID and done.tx_id == tx_id
        assert done.payload_hash == digest
        await until(lambda: all_match(pc, digest), "every party executed it alike")

        async def delivered() -> bool:
            return not await asyncio.to_thread(owed, path, "org1")

        await until(delivered, "the outbox row of peer0.org3 is gone")
    finally:
        if not submitting.done():
            submitting.cancel()
        await pc.close()
    for org in ("org1", "org2", "org3"):
        assert pstate(path, org)["deal"] == b"queued", org


async def test_past_the_deadline_the_pending_tx_is_named_and_resumed_once(
    net: tuple[Path, Supervisor],
) -> None:
    path, sup = net
    if sup.running("peer0.org3"):
        sup.kill("peer0.org3")
    pc = PrivacyClient(await GatewayClient.connect(path, "user1.org1"), pending_deadline_s=5.0)
    try:
        plain = private_payload_pb2.PrivateInvocation(
            contract="kv", function="put", args=[b"plain", b"send"]
        )
        sent = await pc.send(CH, plain.SerializeToString(), ["Org2", "Org3"])
        assert list(sent.pending_nodes) == ["peer0.org3"]  # Send answers, pending
        nonce, tx_id = pc.new_nonce()
        with pytest.raises(PrivateAgreementPending) as raised:
            await asyncio.wait_for(
                pc.submit_private(CH, ["Org2", "Org3"], "kv", "put", "late", "once", nonce=nonce),
                90,  # the call ends by itself (5 s of waiting): this bound only stops a hang
            )
        pending = raised.value
        assert pending.code() == grpc.StatusCode.UNAVAILABLE
        assert reason_of(pending) == "PRIVATE_AGREEMENT_TIMEOUT"
        assert pending.nodes == ("peer0.org3",)
        assert (pending.channel_id, pending.tx_id, pending.nonce) == (CH, tx_id, nonce)
        assert (pending.payload_hash, "peer0.org3") in await asyncio.to_thread(owed, path, "org1")
        assert not await committed(pc, tx_id)  # nothing was ordered
        # The sender's record (PendingDeliveries, `dltmw private pending`): both owed to org3.
        listed = {(d.payload_hash, d.node_id): d for d in await pc.pending_deliveries(CH)}
        for digest in (sent.payload_hash, pending.payload_hash):
            row = listed[(digest, "peer0.org3")]
            assert row.state == P.DELIVERY_STATE_PENDING and row.HasField("queued_at")
        # Nobody will order the plain send: abandoned, it is pushed no more, and says so (red
        # when AbandonDelivery leaves the row owed: the view still says PENDING).
        assert await pc.abandon_delivery(CH, sent.payload_hash) == 1
        view = await pc.validate(CH, sent.payload_hash, wait=False)
        parties = {p.node_id: p for p in view.parties}
        assert parties["peer0.org3"].delivery_state == P.DELIVERY_STATE_ABANDONED
        assert not parties["peer0.org3"].delivery_pending
        with pytest.raises(grpc.aio.AioRpcError) as nothing:
            await pc.abandon_delivery(CH, sent.payload_hash)
        assert reason_of(nothing.value) == "NOT_FOUND"
        payloads = await asyncio.to_thread(payload_count, path, "org1")
        sup.start("peer0.org3")
        sup.wait_ready("peer0.org3", 60)
        done = await pc.resume_private(CH, pending.payload_hash, nonce, deadline_s=120)
        assert done.status.result == VALID and done.tx_id == tx_id
        assert done.payload_hash == pending.payload_hash
        # The queue pushed the resumed payload to org3 and not the abandoned one (red when
        # AbandonDelivery leaves the row owed: both go in the same push).
        assert await asyncio.to_thread(holds, path, "org3", pending.payload_hash)
        assert not await asyncio.to_thread(holds, path, "org3", sent.payload_hash)
        # Resumed again: the same tx id, refused by the gateway; no second payload anywhere.
        with pytest.raises(grpc.aio.AioRpcError) as again:
            await pc.resume_private(CH, pending.payload_hash, nonce, deadline_s=30)
        assert reason_of(again.value) == "DUPLICATE_TX_ID"
        assert await asyncio.to_thread(payload_count, path, "org1") == payloads
        await until(lambda: all_match(pc, pending.payload_hash), "every party executed it alike")
    finally:
        await pc.close()
    for org in ("org1", "org2", "org3"):
        assert pstate(path, org)["late"] == b"once", org


async def test_the_sdk_raises_agreement_pending_and_resumes_the_same_transaction(
    net: tuple[Path, Supervisor],
) -> None:
    """The SDK's private send: typed `AgreementPending` past its deadline (nothing ordered),
    `resume_private` raising it again while the recipient is still away, then committing the
    same tx id once Org3 is back. A public transaction first, so the client names itself by
    its identity reference (`client/creator_reference.py`): the pending transaction's tx id is
    made with the reference, the error carries it, and the resumed transaction commits under
    that tx id with the reference as its creator (red if the resume rebuilt it in full: another
    tx id)."""
    path, sup = net
    if sup.running("peer0.org3"):
        sup.kill("peer0.org3")
    profile = dltmw.Profile.from_network(path, "user1.org1")
    ref = reference_bytes(profile.signer().identity_bytes)
    async with dltmw.Client(profile, deadline_s=4.0) as client:
        await client.submit(CH, "kv", "put", "sdk-first", "in full")  # then by reference
        with pytest.raises(dltmw.AgreementPending) as raised:
            await client.submit_private(CH, ["Org2", "Org3"], "kv", "put", "sdk", "resumed")
        error = raised.value
        assert isinstance(error, dltmw.Unavailable) and error.retryable
        assert error.reason == "PRIVATE_AGREEMENT_TIMEOUT" and error.nodes == ("peer0.org3",)
        assert error.channel_id == CH and error.nonce is not None
        assert error.creator == ref and error.tx_id == compute_tx_id(error.nonce, ref)
        with pytest.raises(dltmw.AgreementPending) as still:  # Org3 still down
            await client.resume_private(error)
        assert still.value.tx_id == error.tx_id
        sup.start("peer0.org3")
        sup.wait_ready("peer0.org3", 60)
        for _ in range(30):  # bounded: each try waits up to the client's 4 s deadline
            try:
                done = await client.resume_private(error)
                break
            except dltmw.AgreementPending as again:
                assert again.tx_id == error.tx_id  # the same transaction, never another
        else:
            raise AssertionError("never resumed")
        assert done.tx_id == error.tx_id and done.payload == error.payload_hash
    for raw in (e for b in blocks(ledger_path(path, "peer0.org1", CH)) for e in b.data.envelopes):
        header = common_pb2.Header.FromString(
            common_pb2.Payload.FromString(common_pb2.Envelope.FromString(raw).payload).header
        )
        if header.tx_id == done.tx_id:
            assert header.creator == ref
            break
    else:
        raise AssertionError(f"{done.tx_id} not in peer0.org1's ledger")

    async def executed() -> bool:
        return (await asyncio.to_thread(pstate, path, "org3")).get("sdk") == b"resumed"

    await until(executed, "peer0.org3 executed the resumed transaction")
