"""A replica link writes its batches on one ExchangeStream, and falls back to one unary
Exchange per batch against a node that lacks the stream (a rolling upgrade).

Real grpc.aio servers on 127.0.0.1 stand for the receiving replica; `ReplicaLink` runs against
them unchanged. Only the node context is a stand-in: its channel to the receiver and limits.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace

import grpc
import pytest

from dltmw.rpc.replica import Answers
from dltmw.runtime.replica_link import WINDOW, ReplicaLink
from dltmw.v1 import errors_pb2, replica_pb2
from dltmw.v1 import replica_pb2_grpc as svc


def message(i: int) -> replica_pb2.SignedReplicaMessage:
    return replica_pb2.SignedReplicaMessage(payload=bytes([i]), replica=1, signature=b"s")


class Receiving:
    """What a stand-in receiver got (`payloads`: accepted; `seen`: every message, refused ones
    too), and a wait for it."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self.seen = 0
        self.more = asyncio.Event()

    def got(self, messages: list[replica_pb2.SignedReplicaMessage], accepted: bool) -> None:
        if accepted:
            self.payloads.extend(m.payload for m in messages)
        self.seen += len(messages)
        self.more.set()

    async def received(self, count: int) -> None:
        """Until `count` messages were seen, accepted or refused."""
        while self.seen < count:
            self.more.clear()
            await self.more.wait()


class OlderReplica(Receiving, svc.ReplicaServiceServicer):
    """Serves Exchange only (the base servicer answers ExchangeStream UNIMPLEMENTED)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def Exchange(
        self, request: replica_pb2.ExchangeRequest, context: object
    ) -> replica_pb2.ExchangeResponse:
        self.calls += 1
        self.got(list(request.messages), accepted=True)
        return replica_pb2.ExchangeResponse(accepted=len(request.messages))


class StreamingReplica(Receiving, svc.ReplicaServiceServicer):
    """Serves ExchangeStream; refuses, in band, every batch holding payload b"\\x00"."""

    def __init__(self) -> None:
        super().__init__()
        self.streams = 0

    async def ExchangeStream(
        self, requests: AsyncIterator[replica_pb2.ExchangeStreamRequest], context: object
    ) -> AsyncIterator[replica_pb2.ExchangeStreamResponse]:
        self.streams += 1
        async for item in requests:
            request = item.batch
            if any(m.payload == b"\x00" for m in request.messages):
                self.got(list(request.messages), accepted=False)
                yield replica_pb2.ExchangeStreamResponse(
                    refused=errors_pb2.ERROR_REASON_BAD_SIGNATURE, refused_detail="bad"
                )
                continue
            self.got(list(request.messages), accepted=True)
            yield replica_pb2.ExchangeStreamResponse(accepted=len(request.messages))


async def _run_link(
    servicer: Receiving,
    sends: list[list[int]],
    pause_s: float = 0.05,
    burst_by_burst: bool = False,
):
    server = grpc.aio.server()
    svc.add_ReplicaServiceServicer_to_server(servicer, server)  # type: ignore[arg-type]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")

    async def channel_to(_node_id: str) -> grpc.aio.Channel:
        return channel

    async def forget(_node_id: str) -> None:
        return None

    limits = SimpleNamespace(max_message_bytes=4 << 20)
    ctx = SimpleNamespace(channel_to=channel_to, forget=forget, limits=limits)
    link = ReplicaLink(ctx, "trades", "orderer.b")  # type: ignore[arg-type]
    task = asyncio.ensure_future(link._run())
    try:
        sent = 0
        for burst in sends:
            for i in burst:
                link.send(message(i))
            sent += len(burst)
            if burst_by_burst:  # one batch each, however slow the machine (a refused
                # message merged into a neighbour's batch would refuse that batch too)
                async with asyncio.timeout(10):
                    await servicer.received(sent)
            else:
                await asyncio.sleep(pause_s)  # separate batches
        async with asyncio.timeout(10):
            await servicer.received(sum(len(burst) for burst in sends))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await channel.close()
        await server.stop(None)
    return link


async def test_a_link_writes_every_batch_on_one_stream_and_goes_on_after_a_refusal() -> None:
    replica = StreamingReplica()
    await _run_link(replica, [[1, 2], [0], [3], [4, 5]], burst_by_burst=True)
    assert replica.payloads == [bytes([i]) for i in (1, 2, 3, 4, 5)]
    assert replica.streams == 1  # one call for the link's life, the refusal included


async def test_a_receiver_without_the_stream_gets_one_unary_call_per_batch() -> None:
    replica = OlderReplica()
    link = await _run_link(replica, [[1], [2, 3], [4]], burst_by_burst=True)
    assert replica.payloads == [bytes([i]) for i in (1, 2, 3, 4)]
    assert replica.calls == 3
    assert link._unary_only


@pytest.mark.parametrize("window", [1])
async def test_a_stream_never_has_more_batches_unanswered_than_its_window(
    window: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dltmw.runtime.replica_link.WINDOW", window)
    replica = StreamingReplica()
    await _run_link(replica, [[1], [2], [3], [4]], burst_by_burst=True)
    assert replica.payloads == [bytes([i]) for i in (1, 2, 3, 4)]


class OneBatchPerStream(StreamingReplica):
    """Answers one batch, then ends the stream (a receiver that restarted, a proxy's idle
    timeout): the link is idle when its stream ends."""

    async def ExchangeStream(
        self, requests: AsyncIterator[replica_pb2.ExchangeStreamRequest], context: object
    ) -> AsyncIterator[replica_pb2.ExchangeStreamResponse]:
        self.streams += 1
        async for item in requests:
            self.got(list(item.batch.messages), accepted=True)
            yield replica_pb2.ExchangeStreamResponse(accepted=len(item.batch.messages))
            return


async def test_an_idle_link_whose_stream_ended_writes_its_next_batch_on_a_new_stream() -> None:
    """Each message after the first waits for the link to notice, while idle, that its stream
    ended: none is written to the ended call and lost."""
    replica = OneBatchPerStream()
    await _run_link(replica, [[1], [2], [3]], pause_s=0.5)
    assert replica.payloads == [bytes([i]) for i in (1, 2, 3)]
    assert replica.streams == 3


class AnsweringReplica(StreamingReplica):
    """Answers as the node's servicer does (`rpc/replica.Answers`: per `answer_every`
    batches, as the opening request asks) and counts its answers."""

    def __init__(self) -> None:
        super().__init__()
        self.answers: list[replica_pb2.ExchangeStreamResponse] = []

    async def ExchangeStream(
        self, requests: AsyncIterator[replica_pb2.ExchangeStreamRequest], context: object
    ) -> AsyncIterator[replica_pb2.ExchangeStreamResponse]:
        self.streams += 1
        answers: Answers | None = None
        async for item in requests:
            if answers is None:
                answers = Answers(item.answer_every)
            if any(m.payload == b"\x00" for m in item.batch.messages):
                self.got(list(item.batch.messages), accepted=False)
                answer = answers.refused(errors_pb2.ERROR_REASON_BAD_SIGNATURE, "bad")
            else:
                self.got(list(item.batch.messages), accepted=True)
                answer = answers.accepted(len(item.batch.messages))
            if answer is not None:
                self.answers.append(answer)
                yield answer


async def test_a_link_asks_for_one_answer_per_several_batches_and_its_window_still_moves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """3 x WINDOW batches, one at a time, on one stream: the answers let the window move on
    (a stalled window would time out and open a second stream), and there are far fewer
    answers than batches — the first, then one per half window, and the refusal at once."""
    # a stall shows sooner than the default, within the 10 s wait (2 s flaked at load 20)
    monkeypatch.setattr("dltmw.runtime.replica_link.CALL_TIMEOUT_S", 4.0)
    replica = AnsweringReplica()
    sends = [[i] for i in range(1, 3 * WINDOW + 1)]
    sends.insert(5, [0])  # refused: answered at once
    await _run_link(replica, sends, burst_by_burst=True)
    assert replica.payloads == [bytes([i]) for i in range(1, 3 * WINDOW + 1)]
    assert replica.streams == 1
    assert sum(a.answers for a in replica.answers) <= len(sends)
    assert len(replica.answers) <= 2 + len(sends) // (WINDOW // 2)


async def test_a_receiver_answering_every_batch_in_the_old_form_keeps_the_window_moving(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An older node answers each batch without `answers` (0): each answer counts one batch,
    else the window would fill after WINDOW batches and the stream time out."""
    # a stall shows sooner than the default, within the 10 s wait (2 s flaked at load 20)
    monkeypatch.setattr("dltmw.runtime.replica_link.CALL_TIMEOUT_S", 4.0)
    replica = StreamingReplica()
    sends = [[i] for i in range(1, 2 * WINDOW + 2)]
    await _run_link(replica, sends, burst_by_burst=True)
    assert replica.payloads == [bytes([i]) for i in range(1, 2 * WINDOW + 2)]
    assert replica.streams == 1
