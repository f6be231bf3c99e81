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

    async def endorse(self, *_: Any) -> None:
        await asyncio.Event().wait()

    async def check_envelope(self, *_: Any) -> SimpleNamespace:
        return SimpleNamespace(
            header=SimpleNamespace(tx_id="t1"), creator=SimpleNamespace(org_id="Org1")
        )

    async def submit(self, *_: Any) -> None:
        return None


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
