"""The client's wait for a recipient whose delivery is pending (`client/private_pending.py`):
collected again with backoff while the node answers PRIVATE_AGREEMENT_TIMEOUT, bounded by the
deadline, then `PrivateAgreementPending` carrying the transaction to resume; any other error
at once."""

from __future__ import annotations

import asyncio
import socket
from types import SimpleNamespace
from typing import Any

import grpc
import pytest

from dltmw.aio.rpc_errors import reason_of
from dltmw.client import private_pending
from dltmw.client.privacy import PrivacyClient
from dltmw.client.private_pending import PrivateAgreementPending, is_pending, until_agreed
from dltmw.core.errors import DltmwError
from dltmw.rpc.status import to_status
from dltmw.runtime.roles.privacy import redelivery as rd
from dltmw.runtime.roles.privacy.agreement import Agreements
from dltmw.runtime.roles.privacy.private_channel import PrivateChannel
from dltmw.sdk.client import _agreement_pending
from dltmw.sdk.errors import AgreementPending, Unavailable
from dltmw.v1 import config_pb2, errors_pb2, private_agreement_pb2, private_payload_pb2
from dltmw.v1 import privacy_manager_service_pb2_grpc as svc

A = private_agreement_pb2
R = errors_pb2
ALL = private_agreement_pb2.PRIVATE_AGREEMENT_POLICY_ALL_RECIPIENTS
NONE = private_agreement_pb2.PRIVATE_AGREEMENT_POLICY_UNSPECIFIED
S = grpc.StatusCode


def refused(reason: int, code: grpc.StatusCode, metadata: dict[str, str]) -> grpc.aio.AioRpcError:
    """The AioRpcError a client gets for `reason` (ErrorInfo written as a servicer writes it)."""
    status = to_status(DltmwError(reason, "recipient peer0.org3 did not agree", metadata))
    status.code = code.value[0]
    trailing = grpc.aio.Metadata(("grpc-status-details-bin", status.SerializeToString()))
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, status.message, None)


def pending_error() -> grpc.aio.AioRpcError:
    return refused(R.ERROR_REASON_PRIVATE_AGREEMENT_TIMEOUT, S.UNAVAILABLE, {"nodes": "peer0.org3"})


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(private_pending, "BACKOFF_FIRST_S", 0.01)
    monkeypatch.setattr(private_pending, "BACKOFF_MAX_S", 0.02)


async def test_a_pending_recipient_is_waited_for_until_it_agrees() -> None:
    calls: list[float] = []

    async def collect(timeout_s: float) -> str:
        calls.append(timeout_s)
        if len(calls) < 4:
            raise pending_error()
        return "agreed"

    assert await until_agreed(collect, 5.0) == "agreed"
    assert len(calls) == 4
    assert all(0 < t <= 5.0 for t in calls)  # each call's deadline is what is left


async def test_past_the_deadline_the_last_pending_error_is_raised() -> None:
    calls = 0

    async def collect(timeout_s: float) -> str:
        nonlocal calls
        calls += 1
        raise pending_error()

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await asyncio.wait_for(until_agreed(collect, 0.2), 5.0)  # ends: never hangs
    assert reason_of(raised.value) == "PRIVATE_AGREEMENT_TIMEOUT"
    assert calls > 1  # not given up at once


async def test_a_last_attempt_that_runs_out_of_time_is_still_pending_and_resumable() -> None:
    # review56: tenacity gives the last attempt what is left of the deadline (at least
    # MIN_CALL_S); a node still waiting on the down recipient answers it DEADLINE_EXCEEDED, and
    # the caller got a bare error with nothing to resume (a retry would send a second payload)
    calls: list[float] = []

    async def collect(timeout_s: float) -> str:
        calls.append(timeout_s)
        if len(calls) == 1:
            raise pending_error()
        raise grpc.aio.AioRpcError(
            S.DEADLINE_EXCEEDED, grpc.aio.Metadata(), grpc.aio.Metadata(), "Deadline Exceeded"
        )

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await asyncio.wait_for(until_agreed(collect, 0.3), 5.0)
    assert reason_of(raised.value) == "PRIVATE_AGREEMENT_TIMEOUT"
    assert len(calls) > 1
    # a deadline with no pending answer before it is what it is
    with pytest.raises(grpc.aio.AioRpcError) as bare:
        await until_agreed(lambda _t: collect_deadline(), 0.3)
    assert bare.value.code() == S.DEADLINE_EXCEEDED


async def collect_deadline() -> str:
    raise grpc.aio.AioRpcError(
        S.DEADLINE_EXCEEDED, grpc.aio.Metadata(), grpc.aio.Metadata(), "Deadline Exceeded"
    )


async def test_any_other_error_is_raised_at_once() -> None:
    calls = 0

    async def collect(timeout_s: float) -> str:
        nonlocal calls
        calls += 1
        raise refused(R.ERROR_REASON_NOT_AUTHORIZED, S.PERMISSION_DENIED, {})

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await until_agreed(collect, 5.0)
    assert reason_of(raised.value) == "NOT_AUTHORIZED" and calls == 1


AGREED = A.CollectAgreementsResponse(agreed=True)


class Collecting(PrivacyClient):
    """A PrivacyClient whose CollectAgreements answers pending `times` times, then agrees."""

    def __init__(self, times: int) -> None:
        self.pending_deadline_s = 0.2
        self.times = times
        self.asked: list[tuple[bytes, str]] = []

    async def collect_agreements(
        self, channel_id: str, payload_hash: bytes, tx_id: str, timeout_s: float = 60.0
    ) -> A.CollectAgreementsResponse:
        self.asked.append((payload_hash, tx_id))
        if len(self.asked) <= self.times:
            raise pending_error()
        return AGREED


async def test_collect_until_names_the_transaction_to_resume() -> None:
    client = Collecting(times=1_000_000)
    with pytest.raises(PrivateAgreementPending) as raised:
        await client.collect_until("deals", b"\x01" * 32, "tx1")
    pending = raised.value
    assert isinstance(pending, grpc.aio.AioRpcError)  # callers catching gRPC errors see it
    assert pending.code() == S.UNAVAILABLE and is_pending(pending)
    assert (pending.channel_id, pending.payload_hash, pending.tx_id) == (
        "deals",
        b"\x01" * 32,
        "tx1",
    )
    assert pending.nodes == ("peer0.org3",)
    assert {a for a in client.asked} == {(b"\x01" * 32, "tx1")}  # the same transaction only
    sdk = _agreement_pending(pending)
    assert isinstance(sdk, AgreementPending) and isinstance(sdk, Unavailable) and sdk.retryable
    assert (sdk.tx_id, sdk.payload_hash, sdk.nodes) == ("tx1", b"\x01" * 32, ("peer0.org3",))


async def test_collect_until_returns_once_the_recipient_agreed() -> None:
    client = Collecting(times=2)
    assert await client.collect_until("deals", b"\x02" * 32, "tx2", deadline_s=5.0) is AGREED
    assert len(client.asked) == 3


class Ctx:
    """The node context `Agreements._ask_batch` uses: a channel to a port nobody listens on."""

    def __init__(self) -> None:
        self.signer = SimpleNamespace(identity_bytes=b"me", sign=lambda data: b"sig")
        self.forgotten: list[str] = []
        self.channel: grpc.aio.Channel | None = None

    async def channel_to(self, node_id: str) -> grpc.aio.Channel:
        with socket.socket() as s:  # a port that was free a moment ago: connection refused
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        return self.channel

    async def forget(self, node_id: str, failed: grpc.aio.Channel | None = None) -> None:
        assert failed is self.channel  # the channel the failed ask used, and only that one
        self.forgotten.append(node_id)


async def test_an_ask_to_a_recipient_that_is_gone_drops_its_cached_channel() -> None:
    """A recipient that restarted at another address is asked on a fresh channel next time:
    kept, the dead one failed every later ask, so a pending recipient back on a new port could
    never agree (red without the `forget` in `_ask_batch`)."""
    ctx = Ctx()
    agreements = Agreements(ctx, None)  # type: ignore[arg-type]
    try:
        out = await agreements._ask_batch("deals", "peer0.org3", [A.AgreeQuery(tx_id="t")])
    finally:
        if ctx.channel is not None:
            await ctx.channel.close(None)
    assert len(out) == 1 and isinstance(out[0], DltmwError)
    assert out[0].reason == R.ERROR_REASON_PRIVATE_AGREEMENT_TIMEOUT
    assert out[0].metadata["nodes"] == "peer0.org3"
    assert ctx.forgotten == ["peer0.org3"]


ME, ORG2, ORG3 = b"k" * 32, b"2" * 32, b"3" * 32


class OutboxStore:
    """The private store as the redelivery's `not_held` path uses it: held payloads, and the
    rows it queues; every call counted (`calls`)."""

    def __init__(self, held: dict[bytes, bytes]) -> None:
        self.held_payloads = held
        self.queued: list[tuple[bytes, str]] = []
        self.calls: list[str] = []

    async def payload(self, digest: bytes) -> bytes | None:
        self.calls.append("payload")
        return self.held_payloads.get(digest)

    async def held(self, hashes: Any) -> dict[bytes, bytes]:
        self.calls.append("held")
        return {h: self.held_payloads[h] for h in hashes if h in self.held_payloads}

    async def store_payloads(self, payloads: Any, deliveries: Any = (), since: Any = None) -> int:
        self.calls.append("store_payloads")
        assert not payloads
        self.queued += deliveries
        return 0


def _sent(sender: bytes, *recipients: bytes) -> bytes:
    payload = private_payload_pb2.EncryptedPayload(sender_public_key=sender)
    for key in (sender, *recipients):
        payload.recipient_boxes.add(recipient_public_key=key)
    return payload.SerializeToString()


def _channel(store: OutboxStore, agreement: int) -> PrivateChannel:
    channel = PrivateChannel.__new__(PrivateChannel)
    config = config_pb2.ChannelConfig(private_agreement=agreement)  # type: ignore[arg-type]
    for node_id, key in (("peer0.org1", ME), ("peer0.org2", ORG2), ("peer0.org3", ORG3)):
        config.peers.add(node_id=node_id, privacy_public_key=key)
    channel.peer = SimpleNamespace(  # type: ignore[assignment]
        view=SimpleNamespace(config=config, channel_id="deals")
    )
    channel.key = SimpleNamespace(public_key=ME)  # type: ignore[assignment]
    channel.store = store  # type: ignore[assignment]
    channel.redelivery = None
    return channel


def test_only_a_payload_this_node_sent_to_that_recipient_may_be_owed_again() -> None:
    mine, theirs, other = _sent(ME, ORG2), _sent(ORG2, ME), _sent(ME, ORG3)
    channel = _channel(OutboxStore({}), ALL)
    assert channel.may_owe(mine, "peer0.org2")
    assert not channel.may_owe(theirs, "peer0.org2")  # not this node's to push
    assert not channel.may_owe(other, "peer0.org2")  # org2 is not a recipient
    assert not channel.may_owe(mine, "peer0.org9")  # not a peer of the channel
    assert not channel.may_owe(b"\xff", "peer0.org2")  # unreadable
    assert not _channel(OutboxStore({}), NONE).may_owe(mine, "peer0.org2")  # no queue there


class NotHolding(svc.PrivacyManagerServiceServicer):
    """AgreeBatch: every item refused, each with the reason and words the test gives."""

    def __init__(self, refusals: list[tuple[int, str]]) -> None:
        self.refusals = refusals

    async def AgreeBatch(self, request: A.AgreeBatchRequest, context: Any) -> Any:
        return A.AgreeBatchResponse(
            results=[A.AgreeResult(reason=r, message=m) for r, m in self.refusals]  # type: ignore[arg-type]
        )


async def test_not_held_is_queued_again_by_the_redelivery_off_the_asks_path() -> None:
    """A recovering recipient sets aside a payload it cannot place yet, so a collection waiting
    for its agreement would wait for a push that never comes (the simulator's scenario private:
    a store lost after the push). The ask that hears PAYLOAD_NOT_HELD (or an older release's
    NOT_AUTHORIZED "does not hold") hands it to the redelivery task and returns without a store
    call: awaited there, every other ask of the AgreeBatch waited on a store read and write per
    refused item (review of priv14, item 3). Any other NOT_AUTHORIZED queues nothing. Red with
    the old rule (any NOT_AUTHORIZED queued, awaited in `_ask_batch`): the store is called
    during the ask, and the "not a recipient" refusal is queued too."""
    one, two, three, four = (bytes([i]) * 32 for i in (1, 2, 3, 4))
    store = OutboxStore({h: _sent(ME, ORG2) for h in (one, two, three, four)})
    channel = _channel(store, ALL)
    channel.redelivery = rd.Redelivery(channel)
    recipient = NotHolding(
        [
            (R.ERROR_REASON_PAYLOAD_NOT_HELD, "this node does not hold that payload"),
            (R.ERROR_REASON_NOT_AUTHORIZED, "this node does not hold that payload"),  # older
            (R.ERROR_REASON_NOT_AUTHORIZED, "requester is not a recipient"),
            (R.ERROR_REASON_PAYLOAD_UNREADABLE, "no"),
        ]
    )
    server = grpc.aio.server()
    svc.add_PrivacyManagerServiceServicer_to_server(recipient, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    link = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:

        async def channel_to(_node_id: str) -> grpc.aio.Channel:
            return link

        signer = SimpleNamespace(identity_bytes=b"me", sign=lambda data: b"sig")
        agreements = Agreements(SimpleNamespace(signer=signer, channel_to=channel_to), None)  # type: ignore[arg-type]
        agreements._runners["deals"] = (channel, None, None)  # type: ignore[assignment]
        queries = [A.AgreeQuery(payload_hash=h, tx_id="t") for h in (one, two, three, four)]
        out = await agreements._ask_batch("deals", "peer0.org2", queries)
    finally:
        await link.close(None)
        await server.stop(None)
    assert all(isinstance(o, DltmwError) for o in out)
    assert store.calls == []  # nothing awaited on the store while the batch's asks waited
    await channel.redelivery._owe_claimed()  # what the task's next pass does first
    assert store.calls == ["held", "store_payloads"]  # one read, one write for the lot
    assert sorted(store.queued) == [(one, "peer0.org2"), (two, "peer0.org2")]
    # the node answered: its queued deliveries are due now, not after FIRST_DELAY_S
    assert channel.redelivery.schedule.due("peer0.org2", rd.loop_now()) == 0


class ReplacingStore(OutboxStore):
    """The private store as `add_recipients` uses it: the replace and the rows in one call."""

    def __init__(self, held: dict[bytes, bytes]) -> None:
        super().__init__(held)
        self.replaced: list[bytes] = []

    async def store_payloads(self, payloads: Any, deliveries: Any = (), since: Any = None) -> int:
        self.replaced += [p.payload_hash for p in payloads]
        self.queued += deliveries
        return 0


async def test_add_recipients_owes_the_push_in_the_replaces_own_transaction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """review56: the re-wrapped payload naming the new recipients was stored, then the node
    crashed before its push: a retry finds nothing to add and returns at once, and nothing
    would ever push it to them. The deliveries owed go with the replace now (the redelivery
    pushes them after a restart). Red when they are recorded only after a failed push."""
    from dltmw.runtime.roles.privacy import private_channel as pc

    mine = b"\x01" * 32
    store = ReplacingStore({mine: _sent(ME, ORG2)})
    channel = _channel(store, ALL)
    channel.ctx = SimpleNamespace(node_id="peer0.org1")  # type: ignore[assignment]
    channel.recipients = lambda orgs: {"peer0.org3": ORG3}  # type: ignore[method-assign]
    channel.kem_shares = lambda keys, wrap: None  # type: ignore[method-assign]
    monkeypatch.setattr(pc, "check_algorithm", lambda payload: 0)
    monkeypatch.setattr(
        pc,
        "add_recipients",
        lambda payload, key, new, nonces, kem: private_payload_pb2.EncryptedPayload.FromString(
            _sent(ME, ORG2, *new)
        ),
    )

    async def crash(batch: Any) -> None:
        raise RuntimeError("the node stops here")

    channel._push_all = crash  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await channel.add_recipients(mine, ["Org3"])
    assert store.replaced == [mine]
    assert sorted(store.queued) == [(mine, "peer0.org2"), (mine, "peer0.org3")]


async def test_the_sdk_abandons_a_pending_transaction_by_its_payload() -> None:
    """`Client.abandon_private(error)` asks its node to give up the payload's deliveries
    (AbandonDelivery) by the AgreementPending's channel and payload hash; a node with nothing
    owed answers NOT_FOUND, which the SDK raises typed."""
    from dltmw.sdk.client import Client
    from dltmw.sdk.errors import NotFound

    asked: list[tuple[str, bytes]] = []

    class Privacy:
        async def abandon_delivery(self, channel_id: str, payload_hash: bytes) -> int:
            asked.append((channel_id, payload_hash))
            if len(asked) > 1:
                raise refused(R.ERROR_REASON_NOT_FOUND, S.FAILED_PRECONDITION, {})
            return 1

    client = Client.__new__(Client)

    async def private() -> Privacy:
        return Privacy()

    client.private = private  # type: ignore[assignment,method-assign]
    error = _agreement_pending(
        PrivateAgreementPending(pending_error(), "deals", b"\x07" * 32, "tx7", b"n" * 24)
    )
    assert await client.abandon_private(error) == 1
    with pytest.raises(NotFound):
        await client.abandon_private(error)
    assert asked == [("deals", b"\x07" * 32)] * 2
