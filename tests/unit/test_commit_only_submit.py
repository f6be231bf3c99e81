"""A submission marked `commit_only` is answered once, at its commit: the gateway's Transact
session sends no SubmitOutcome for it (one gRPC message less each way per transaction), and the
SDK's `Pipeline.submit_committed` files the gateway's answers so its caller gets the commit
status, or the refusal's AioRpcError, exactly as a submission answered twice gave them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import grpc

from dltmw.client.pipeline import Pipeline
from dltmw.core.errors import ClientError
from dltmw.rpc.status import reason_of
from dltmw.rpc.transact import TransactSession
from dltmw.v1 import batch_pb2, errors_pb2
from dltmw.v1 import gateway_service_pb2 as G
from tests.unit.test_transact_session import (
    CommittingPeer,
    ScriptedGateway,
    _collect,
    _envelope,
    _requests,
)

R = errors_pb2


class SignalledPeer(CommittingPeer):
    """A CommittingPeer that tells the test when a watch is registered."""

    def __init__(self) -> None:
        super().__init__()
        self.watched = asyncio.Event()

    def watch(self, tx_id: str) -> asyncio.Future[object]:
        self.watched.set()
        return super().watch(tx_id)


def _session(gateway: ScriptedGateway, peer: CommittingPeer) -> TransactSession:
    session = TransactSession(gateway, {"trades": peer}, None, wait_s=5)  # type: ignore[arg-type]
    session._check_tls = lambda *_: None  # type: ignore[method-assign]
    return session


async def test_a_commit_only_submission_gets_its_commit_outcome_and_no_submit_outcome() -> None:
    peer = SignalledPeer()
    items = [
        G.SubmitItem(ref=1, request=G.SubmitRequest(envelope=_envelope("t1"))),
        G.SubmitItem(ref=2, request=G.SubmitRequest(envelope=_envelope("t2")), commit_only=True),
    ]
    responses = _session(ScriptedGateway({}, {}), peer).serve(
        _requests(G.TransactRequest(submit=items))
    )
    first = await _collect(responses, 1)  # the accepted plain item's SubmitOutcome
    assert set(first) == {("s", 1)}
    async with asyncio.timeout(5):
        while len(peer.watches) < 2:
            peer.watched.clear()
            await peer.watched.wait()
    for n, tx_id in enumerate(("t1", "t2")):
        peer.watches[tx_id].set_result(SimpleNamespace(code=1, block_number=5 + n, tx_index=0))
    seen = await _collect(responses, 2)
    assert set(seen) == {("c", 1), ("c", 2)}, "item 2 must have no SubmitOutcome"
    assert seen[("c", 2)].status.block_number == 6
    await responses.aclose()  # type: ignore[attr-defined]


async def test_a_refused_commit_only_submission_is_still_a_submit_outcome_error() -> None:
    gateway = ScriptedGateway({}, {"t1": ClientError(R.ERROR_REASON_DUPLICATE_TX_ID, "on ledger")})
    peer = CommittingPeer()
    item = G.SubmitItem(ref=1, request=G.SubmitRequest(envelope=_envelope("t1")), commit_only=True)
    responses = _session(gateway, peer).serve(_requests(G.TransactRequest(submit=[item])))
    seen = await _collect(responses, 1)
    assert seen[("s", 1)].error.reason == R.ERROR_REASON_DUPLICATE_TX_ID
    assert peer.unwatched == ["t1"]
    await responses.aclose()  # type: ignore[attr-defined]


class FakeTransact:
    """One in-memory Transact call: records the requests; the test answers."""

    def __init__(self) -> None:
        self.written: list[G.TransactRequest] = []
        self.wrote = asyncio.Event()
        self._out: asyncio.Queue[G.TransactResponse | None] = asyncio.Queue()

    async def write(self, request: G.TransactRequest) -> None:
        self.written.append(request)
        self.wrote.set()

    def answer(self, response: G.TransactResponse) -> None:
        self._out.put_nowait(response)

    def __aiter__(self) -> AsyncIterator[G.TransactResponse]:
        return self._responses()

    async def _responses(self) -> AsyncIterator[G.TransactResponse]:
        while (item := await self._out.get()) is not None:
            yield item

    def cancel(self) -> bool:
        self._out.put_nowait(None)
        return True


async def _submitted(call: FakeTransact) -> tuple[Pipeline, asyncio.Task[Any], int]:
    pipeline = Pipeline(SimpleNamespace(Transact=lambda: call))  # type: ignore[arg-type]
    task = asyncio.ensure_future(pipeline.submit_committed(G.SubmitRequest(), 5))
    async with asyncio.timeout(5):
        await call.wrote.wait()
    (item,) = call.written[0].submit
    assert item.commit_only, "the item must ask to be answered at commit only"
    return pipeline, task, item.ref


async def test_submit_committed_returns_the_commit_status_and_ignores_an_old_gateways_ack() -> None:
    call = FakeTransact()
    pipeline, task, ref = await _submitted(call)
    # A gateway that predates `commit_only` still acknowledges the submission first.
    accepted = G.SubmitOutcome(ref=ref, response=G.SubmitResponse(tx_id="t1"))
    call.answer(G.TransactResponse(submitted=[accepted]))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not task.done(), "the acceptance is not the answer a commit_only caller waits for"
    status = G.CommitStatusResponse(result=1, block_number=9)
    call.answer(G.TransactResponse(committed=[G.CommitOutcome(ref=ref, status=status)]))
    async with asyncio.timeout(5):
        assert (await task).block_number == 9
    await pipeline.close()


async def test_submit_committed_raises_a_refusal_as_submit_would_have() -> None:
    call = FakeTransact()
    pipeline, task, ref = await _submitted(call)
    error = batch_pb2.ItemError(reason=R.ERROR_REASON_DUPLICATE_TX_ID, message="on the ledger")
    call.answer(G.TransactResponse(submitted=[G.SubmitOutcome(ref=ref, error=error)]))
    async with asyncio.timeout(5):
        try:
            await task
        except grpc.aio.AioRpcError as exc:
            assert reason_of(exc) == "DUPLICATE_TX_ID"
        else:
            raise AssertionError("a refused submission must raise")
    await pipeline.close()
