"""TransactSession bounds, with the gateway and peer replaced by fakes (no network): items beyond
the per-stream bound are refused with OVERLOADED, and a commit that does not come in time is
answered with WAIT_TIMEOUT instead of leaving the client waiting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any
from unittest import mock

from dltmw.client import GatewayClient
from dltmw.core.identity import SigningIdentity
from dltmw.pki.ca import issue_cert, make_ca
from dltmw.rpc.transact import TransactSession
from dltmw.v1 import common_pb2, errors_pb2
from dltmw.v1 import gateway_service_pb2 as G


def _client() -> GatewayClient:
    ca = make_ca("Org1")
    issued = issue_cert(ca, "Org1", "user1.Org1", "client")
    signer = SigningIdentity.from_pem("Org1", issued.cert_pem, issued.key_pem)
    return GatewayClient(signer, mock.MagicMock(), pipelined=False)


class FakeGateway:
    """Endorse never finishes; envelopes are accepted as they come."""

    def endorse_soon(self, *_: Any) -> asyncio.Future[object]:
        return asyncio.get_running_loop().create_future()

    def check_envelope_soon(self, *_: Any) -> asyncio.Future[object]:
        future = asyncio.get_running_loop().create_future()
        future.set_result(
            SimpleNamespace(
                header=SimpleNamespace(tx_id="t1"),
                creator=SimpleNamespace(org_id="Org1"),
                creator_org="Org1",
            )
        )
        return future

    async def submit_many(self, _channel: str, envelopes: list[Any]) -> list[asyncio.Future[None]]:
        out = [asyncio.get_running_loop().create_future() for _ in envelopes]
        for future in out:
            future.set_result(None)
        return out


class FakePeer:
    """A channel whose commits never come."""

    def __init__(self) -> None:
        self.view = SimpleNamespace(channel_id="trades", membership=None)
        self.unwatched: list[str] = []

    def watch(self, tx_id: str) -> asyncio.Future[object]:
        return asyncio.get_running_loop().create_future()

    def unwatch(self, tx_id: str, future: object) -> None:
        self.unwatched.append(tx_id)


async def _requests(*requests: G.TransactRequest) -> AsyncIterator[G.TransactRequest]:
    for r in requests:
        yield r
    await asyncio.Event().wait()  # the client keeps the stream open


def _session(peer: FakePeer, **kw: Any) -> TransactSession:
    session = TransactSession(FakeGateway(), {"trades": peer}, None, **kw)  # type: ignore[arg-type]
    session._check_tls = lambda *_: None  # type: ignore[method-assign]
    return session


async def test_items_beyond_the_bound_are_refused_as_overloaded() -> None:
    c = _client()
    items = [
        G.EndorseItem(
            ref=i,
            request=G.EndorseRequest(
                signed_proposal=c.proposal("trades", "kv", "put", ["k", "v"])[0]
            ),
        )
        for i in (1, 2)
    ]
    responses = _session(FakePeer(), wait_s=5, max_outstanding=1).serve(
        _requests(G.TransactRequest(endorse=items))
    )
    first = await asyncio.wait_for(anext(responses), 5)
    assert [o.ref for o in first.endorsed] == [2]
    assert first.endorsed[0].error.reason == errors_pb2.ERROR_REASON_OVERLOADED
    await responses.aclose()  # type: ignore[attr-defined]


async def test_a_commit_that_does_not_come_is_answered_with_wait_timeout() -> None:
    header = common_pb2.Header(channel_id="trades", tx_id="t1").SerializeToString()
    envelope = common_pb2.Envelope(payload=common_pb2.Payload(header=header).SerializeToString())
    item = G.SubmitItem(ref=9, request=G.SubmitRequest(envelope=envelope))
    peer = FakePeer()
    responses = _session(peer, wait_s=0.05).serve(_requests(G.TransactRequest(submit=[item])))
    seen: list[Any] = []
    async with asyncio.timeout(5):
        while len(seen) < 2:
            r = await anext(responses)
            seen += [*r.submitted, *r.committed]
    assert seen[0].response.tx_id == "t1"
    assert seen[1].error.reason == errors_pb2.ERROR_REASON_WAIT_TIMEOUT
    assert peer.unwatched == ["t1"], "the watcher must be dropped"
    await responses.aclose()  # type: ignore[attr-defined]


async def test_a_client_that_does_not_read_stops_being_read() -> None:
    consumed = 0
    bad = G.EndorseItem(ref=1, request=G.EndorseRequest())  # refused at once

    async def requests() -> AsyncIterator[G.TransactRequest]:
        nonlocal consumed
        for _ in range(1000):
            consumed += 1
            yield G.TransactRequest(endorse=[bad])

    responses = _session(FakePeer(), wait_s=5, max_outstanding=4).serve(requests())
    first = await asyncio.wait_for(anext(responses), 5)
    assert all(o.HasField("error") for o in first.endorsed)  # MISSING_FIELD or OVERLOADED
    await asyncio.sleep(0.1)  # the session runs on; the client reads nothing more
    assert consumed < 100, f"{consumed} of 1000 requests read while nobody took the answers"
    await responses.aclose()  # type: ignore[attr-defined]


def _envelope(tx_id: str) -> common_pb2.Envelope:
    header = common_pb2.Header(channel_id="trades", tx_id=tx_id).SerializeToString()
    return common_pb2.Envelope(payload=common_pb2.Payload(header=header).SerializeToString())


class ScriptedGateway(FakeGateway):
    """Per tx_id: the envelope check's error, the orderer's error, or acceptance; endorsement
    futures handed out in order, for the test to settle."""

    def __init__(self, bad_check: dict[str, Exception], refused: dict[str, Exception]) -> None:
        self.bad_check = bad_check
        self.refused = refused
        self.endorsements: list[asyncio.Future[object]] = []
        self.endorsing = asyncio.Event()  # set with each endorsement handed out

    def endorse_soon(self, *_: Any) -> asyncio.Future[object]:
        self.endorsements.append(asyncio.get_running_loop().create_future())
        self.endorsing.set()
        return self.endorsements[-1]

    def check_envelope_soon(self, _channel: str, raw: bytes) -> asyncio.Future[object]:
        tx_id = common_pb2.Header.FromString(
            common_pb2.Payload.FromString(common_pb2.Envelope.FromString(raw).payload).header
        ).tx_id
        future = asyncio.get_running_loop().create_future()
        if tx_id in self.bad_check:
            future.set_exception(self.bad_check[tx_id])
        else:
            future.set_result(
                SimpleNamespace(
                    header=SimpleNamespace(tx_id=tx_id),
                    creator=SimpleNamespace(org_id="Org1"),
                    creator_org="Org1",
                )
            )
        return future

    async def submit_many(self, _channel: str, envelopes: list[Any]) -> list[asyncio.Future[None]]:
        out = []
        for _, tx_id in envelopes:
            future = asyncio.get_running_loop().create_future()
            if tx_id in self.refused:
                future.set_exception(self.refused[tx_id])
            else:
                future.set_result(None)
            out.append(future)
        return out


class CommittingPeer(FakePeer):
    """A channel whose commits the test resolves."""

    def __init__(self) -> None:
        super().__init__()
        self.watches: dict[str, asyncio.Future[object]] = {}

    def watch(self, tx_id: str) -> asyncio.Future[object]:
        self.watches[tx_id] = asyncio.get_running_loop().create_future()
        return self.watches[tx_id]


async def _collect(responses: AsyncIterator[G.TransactResponse], want: int) -> dict[Any, Any]:
    seen: dict[Any, Any] = {}
    async with asyncio.timeout(5):
        while len(seen) < want:
            r = await anext(responses)
            seen |= {("s", o.ref): o for o in r.submitted}
            seen |= {("c", o.ref): o for o in r.committed}
            seen |= {("e", o.ref): o for o in r.endorsed}
    return seen


async def test_one_bad_submission_in_a_request_never_fails_its_neighbours() -> None:
    from dltmw.core.errors import ClientError

    R = errors_pb2
    gateway = ScriptedGateway(
        bad_check={"t1": ClientError(R.ERROR_REASON_BAD_SIGNATURE, "forged")},
        refused={"t2": ClientError(R.ERROR_REASON_DUPLICATE_TX_ID, "on the ledger")},
    )
    peer = CommittingPeer()
    session = TransactSession(gateway, {"trades": peer}, None, wait_s=5)  # type: ignore[arg-type]
    session._check_tls = lambda *_: None  # type: ignore[method-assign]
    items = [
        G.SubmitItem(ref=i, request=G.SubmitRequest(envelope=_envelope(f"t{i}"))) for i in (1, 2, 3)
    ]
    items.append(G.SubmitItem(ref=4, request=G.SubmitRequest()))  # no envelope
    responses = session.serve(_requests(G.TransactRequest(submit=items)))
    seen = await _collect(responses, 4)
    assert seen[("s", 1)].error.reason == R.ERROR_REASON_BAD_SIGNATURE
    assert seen[("s", 2)].error.reason == R.ERROR_REASON_DUPLICATE_TX_ID
    assert seen[("s", 3)].response.tx_id == "t3"
    assert seen[("s", 4)].error.reason == R.ERROR_REASON_MISSING_FIELD
    assert peer.unwatched == ["t2"], "a refused submission's watch is dropped at once"
    peer.watches["t3"].set_result(SimpleNamespace(code=1, block_number=7, tx_index=2))
    seen = await _collect(responses, 1)
    assert seen[("c", 3)].status.block_number == 7 and seen[("c", 3)].status.tx_index == 2
    assert peer.unwatched == ["t2", "t3"]
    await responses.aclose()  # type: ignore[attr-defined]


async def test_an_endorsement_is_answered_when_ready_not_when_its_batch_is() -> None:
    from dltmw.core.errors import ClientError

    R = errors_pb2
    gateway = ScriptedGateway({}, {})
    session = TransactSession(gateway, {"trades": FakePeer()}, None, wait_s=5)  # type: ignore[arg-type]
    session._check_tls = lambda *_: None  # type: ignore[method-assign]
    c = _client()
    items = [
        G.EndorseItem(
            ref=i,
            request=G.EndorseRequest(
                signed_proposal=c.proposal("trades", "kv", "put", [f"k{i}", "v"])[0]
            ),
        )
        for i in (1, 2, 3)
    ]
    responses = session.serve(_requests(G.TransactRequest(endorse=items)))
    task = asyncio.ensure_future(_collect(responses, 2))
    async with asyncio.timeout(5):
        while len(gateway.endorsements) < 3:
            gateway.endorsing.clear()
            await gateway.endorsing.wait()
    first, second, third = gateway.endorsements
    second.set_exception(ClientError(R.ERROR_REASON_ENDORSEMENT_POLICY_UNSATISFIABLE, "no"))
    third.set_result(SimpleNamespace(prepared_payload=b"p3", result=None))
    seen = await task  # while the first is still being endorsed
    assert seen[("e", 2)].error.reason == R.ERROR_REASON_ENDORSEMENT_POLICY_UNSATISFIABLE
    assert seen[("e", 3)].response.prepared_payload == b"p3"
    assert not first.done()
    await responses.aclose()  # type: ignore[attr-defined]
    assert first.cancelled(), "a closed stream withdraws what it still waits for"


async def test_an_item_future_failing_with_a_bug_ends_the_stream_with_it() -> None:
    gateway = ScriptedGateway({}, {"t1": RuntimeError("a bug")})
    session = TransactSession(gateway, {"trades": CommittingPeer()}, None, wait_s=5)  # type: ignore[arg-type]
    session._check_tls = lambda *_: None  # type: ignore[method-assign]
    item = G.SubmitItem(ref=1, request=G.SubmitRequest(envelope=_envelope("t1")))
    responses = session.serve(_requests(G.TransactRequest(submit=[item])))
    async with asyncio.timeout(5):
        try:
            await anext(responses)
        except RuntimeError as exc:
            assert str(exc) == "a bug"
        else:
            raise AssertionError("the stream went on as if nothing happened")
