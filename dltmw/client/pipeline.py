"""Client side of the gateway's Transact stream: many concurrent transactions, few messages.

`GatewayClient.submit_transaction` uses this by default, so every caller that keeps several
transactions in flight (`asyncio.gather`, a semaphore of workers) shares one stream: the
endorse and submit items queued at one moment leave in one TransactRequest, and the gateway's
outcomes come back grouped the same way. Each item is answered as its unary RPC would have been;
a refused item raises the same `grpc.aio.AioRpcError` (status code, message and the ErrorInfo
trailer that `rpc.status.reason_of` reads) that the unary call would have raised.

The stream is the one batched stream client (`aio/batched_stream.py`), supervised by this
client's own task owner. The gateway names the item each outcome answers (`ByKey` acks) and
answers a submission twice (when the orderer accepted it, and when the peer committed it) or,
for an item marked `commit_only`, once, at commit: this client submits only so
(`submit_committed`, one gRPC message less each way per transaction; a refusal, a
SubmitOutcome, is read as the commit's), as every SDK submission waits for its commit. If the stream
breaks, every waiting caller gets the stream's status (UNAVAILABLE when it had none) and the
next call opens a new stream.

Nagle's rule (`Pacing`, `HOLD_S`): while an endorse item sent is unanswered, the endorse items
that callers queue meanwhile leave together when its answer comes (or `HOLD_S` after the last
message, or once `Pacing.enough` wait, or when a submission is queued, which is never held): an
open loop of spread-out callers then sends a few messages per endorse round trip instead of one
per transaction, and a lone caller still goes at once (benchmarks/RESULTS.md, lane lat59).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, cast

import grpc

from dltmw.aio.acks import ByKey
from dltmw.aio.batched_stream import BatchedStream, Bounds, Codec, Pacing, StreamCall
from dltmw.aio.tasks import TaskOwner
from dltmw.client.creator_signing import CreatorSigner
from dltmw.core.errors import DltmwError
from dltmw.rpc.status import CODE_OF_REASON, to_status
from dltmw.rpc.transact import MAX_OUTSTANDING
from dltmw.v1 import batch_pb2, gateway_service_pb2, gateway_service_pb2_grpc

G = gateway_service_pb2
Item = G.EndorseItem | G.SubmitItem
Outcome = G.EndorseResponse | G.SubmitResponse | G.CommitStatusResponse
QUEUE_MAX = 1 << 16  # items waiting to be sent; more fail at once with RESOURCE_EXHAUSTED
MESSAGE_BYTES_MAX = 2 * 1024 * 1024  # half the gateway's default gRPC message bound
# Nagle's rule on the stream (`aio/batched_stream.Pacing`): endorse items, answered within a
# few ms, clock it; while one is unanswered, the endorse items that follow wait for its answer
# (at most this long after the last was sent, and fewer than `Pacing.enough`) and leave together.
# 10 ms: items further apart than that (100 tx/s and below) are never held, so a low rate waits
# for nothing even when its answers are slow (a loaded host); the gateway's 50 ms
# (`ENDORSE_HOLD_S`) held them up to ~1.5x longer at 100 tx/s on a host at load 17-22
# (benchmarks/RESULTS.md, lane lat59).
HOLD_S = 0.01


def rpc_error(error: batch_pb2.ItemError) -> grpc.aio.AioRpcError:
    """The AioRpcError the unary RPC would have raised for this refusal."""
    if error.reason not in CODE_OF_REASON:  # a reason newer than this client
        return _plain_error(grpc.StatusCode.UNKNOWN, f"reason {error.reason}: {error.message}")
    status = to_status(DltmwError(error.reason, error.message))
    code = CODE_OF_REASON[error.reason]
    trailing = grpc.aio.Metadata(("grpc-status-details-bin", status.SerializeToString()))
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, status.message, None)


def _plain_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details, None)


def _late() -> grpc.aio.AioRpcError:
    """What a unary call raises at its deadline."""
    return _plain_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")


def _refused_here(exc: DltmwError) -> grpc.aio.AioRpcError:
    """An item refused before it left (the stream's queue is full), as the gateway would."""
    error = batch_pb2.ItemError(reason=exc.reason, message=exc.message)  # type: ignore[arg-type]
    return rpc_error(error)


class Pipeline:
    """One lazily opened Transact stream shared by every caller of one GatewayClient."""

    def __init__(
        self,
        stub: gateway_service_pb2_grpc.GatewayServiceStub,
        batch_max: int = 256,
        signer: CreatorSigner | None = None,
    ):
        self._stub = stub
        self._next_ref = 1
        self._acks = ByKey[Item, Outcome, G.TransactResponse](_key, self._outcomes)
        self._commit_only: set[int] = set()  # refs of `submit_committed` items in progress
        # items the caller left unsigned: signed once per request as it is packed (`_pack`)
        self._signer = signer
        self._unsigned: set[tuple[str, int]] = set()
        codec = Codec[Item, G.TransactRequest](
            pack=self._pack, failure=_failure, size_bytes=_size_bytes
        )
        bounds = Bounds(
            queue_max=QUEUE_MAX,
            batch_items_max=batch_max,
            batch_bytes_max=MESSAGE_BYTES_MAX,
            window_max=MAX_OUTSTANDING,  # the gateway's own bound per stream
        )
        self._stream = BatchedStream(
            "transact-stream",
            self._open,
            codec,
            self._acks,
            TaskOwner(),
            bounds=bounds,
            pacing=Pacing(_clocks, HOLD_S),
        )

    async def endorse(
        self, request: G.EndorseRequest, timeout_s: float, unsigned: bool = False
    ) -> G.EndorseResponse:
        """What `Endorse(request)` returns, or raises its AioRpcError. `unsigned`: the proposal
        is signed with the others of its request (needs the pipeline's signer)."""
        item = G.EndorseItem(ref=self._ref(), request=request)
        mark = self._leave_unsigned(("e", item.ref), unsigned)
        return cast(G.EndorseResponse, await self._answer(item, timeout_s, mark))

    async def submit_committed(
        self, request: G.SubmitRequest, timeout_s: float, unsigned: bool = False
    ) -> G.CommitStatusResponse:
        """Submit the envelope and return its commit status, answered once: the item is
        marked `commit_only`, so the gateway sends its CommitOutcome and no SubmitOutcome
        (module docstring); raises the AioRpcError `Submit` (a refusal) or `CommitStatus`
        would have raised. A gateway that predates the mark also sends the SubmitOutcome, an
        answer nobody waits for here (ByKey drops it). (The two-answer form, acceptance then
        a commit future, had no caller left: every SDK submission waits for its commit.)
        `unsigned`: as `endorse`'s, for the envelope."""
        ref = self._ref()
        item = G.SubmitItem(ref=ref, request=request, commit_only=True)
        mark = self._leave_unsigned(("s", ref), unsigned)
        self._commit_only.add(ref)
        try:
            return cast(G.CommitStatusResponse, await self._answer(item, timeout_s, mark))
        finally:
            self._commit_only.discard(ref)

    async def _answer(self, item: Item, timeout_s: float, mark: tuple[str, int]) -> Any:
        """The gateway's answer to `item`, or the AioRpcError of its refusal (here: a full
        queue); `mark` (`_leave_unsigned`'s) is dropped either way."""
        try:
            return await self._stream.call(item, timeout_s, _late)
        except DltmwError as exc:
            raise _refused_here(exc) from None
        finally:
            self._unsigned.discard(mark)

    async def close(self) -> None:
        """End the stream; waiting callers get UNAVAILABLE."""
        await self._stream.close()

    def _leave_unsigned(self, key: tuple[str, int], unsigned: bool) -> tuple[str, int]:
        if unsigned:
            if self._signer is None:
                raise ValueError("an unsigned item needs a pipeline with a signer")
            self._unsigned.add(key)
        return key

    def _pack(self, items: Sequence[Item]) -> G.TransactRequest:
        """The stream message of `items`, the unsigned ones signed once for all."""
        request = _request(items)
        if self._unsigned and self._signer is not None:
            self._signer.sign_request(request, self._unsigned.__contains__)
        return request

    def _ref(self) -> int:
        ref, self._next_ref = self._next_ref, self._next_ref + 1
        return ref

    async def _open(self) -> StreamCall[G.TransactRequest, G.TransactResponse]:
        return self._stub.Transact()  # type: ignore[call-arg, return-value]  # aio: write() mode

    def _outcomes(self, response: G.TransactResponse) -> list[tuple[Hashable, Any]]:
        """(key, result) of every outcome: the response, or the AioRpcError of a refusal; the
        refusal of a `commit_only` item answers its commit (`_key`)."""
        out: list[tuple[Hashable, Any]] = [
            (("e", e.ref), rpc_error(e.error) if e.HasField("error") else e.response)
            for e in response.endorsed
        ]
        for s in response.submitted:
            if s.HasField("error"):
                kind = "c" if s.ref in self._commit_only else "s"
                out.append(((kind, s.ref), rpc_error(s.error)))
            else:
                out.append((("s", s.ref), s.response))
        out += [
            (("c", c.ref), rpc_error(c.error) if c.HasField("error") else c.status)
            for c in response.committed
        ]
        return out


def _clocks(item: Item) -> bool:
    """Endorse items clock the stream; a submission is answered at its commit, much later."""
    return isinstance(item, G.EndorseItem)


def _key(item: Item) -> Hashable:
    """What the gateway's answer to `item` is filed under; a `commit_only` submission is
    answered by its commit."""
    if isinstance(item, G.EndorseItem):
        return ("e", item.ref)
    return ("c" if item.commit_only else "s", item.ref)


def _request(items: Sequence[Item]) -> G.TransactRequest:
    return G.TransactRequest(
        endorse=[i for i in items if isinstance(i, G.EndorseItem)],
        submit=[i for i in items if isinstance(i, G.SubmitItem)],
    )


def _size_bytes(item: Item) -> int:
    return item.ByteSize()


def _failure(cause: BaseException | None) -> BaseException:
    """What waiting callers get: the stream's own status if it ended with one."""
    if isinstance(cause, grpc.aio.AioRpcError):
        return cause
    return _plain_error(grpc.StatusCode.UNAVAILABLE, "Transact stream ended")
