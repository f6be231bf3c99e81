"""Client side of the gateway's Transact stream: many concurrent transactions, few messages.

`GatewayClient.submit_transaction` uses this by default, so every caller that keeps several
transactions in flight (`asyncio.gather`, a semaphore of workers) shares one stream: the
endorse and submit items queued at one moment leave in one TransactRequest, and the gateway's
outcomes come back grouped the same way. Each item is answered as its unary RPC would have been;
a refused item raises the same `grpc.aio.AioRpcError` (status code, message and the ErrorInfo
trailer that `rpc.status.reason_of` reads) that the unary call would have raised. If the stream
breaks, every waiting caller gets UNAVAILABLE and the next call opens a new stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from dltmw.aio.coalesce import bounded, next_or_none
from dltmw.core.errors import DltmwError
from dltmw.rpc.status import CODE_OF_REASON, to_status
from dltmw.v1 import batch_pb2, gateway_service_pb2, gateway_service_pb2_grpc

G = gateway_service_pb2
T = TypeVar("T")
logger = logging.getLogger(__name__)
Item = G.EndorseItem | G.SubmitItem
Call = grpc.aio.StreamStreamCall[G.TransactRequest, G.TransactResponse]


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


def _deadline_exceeded() -> grpc.aio.AioRpcError:
    return _plain_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")


class Pipeline:
    """One lazily opened Transact stream shared by every caller of one GatewayClient."""

    def __init__(self, stub: gateway_service_pb2_grpc.GatewayServiceStub, batch_max: int = 256):
        self._stub = stub
        self._batch_max = batch_max
        self._queue: asyncio.Queue[Item] = asyncio.Queue()
        self._next_ref = 1
        self._endorsing: dict[int, asyncio.Future[G.EndorseResponse]] = {}
        self._submitting: dict[int, asyncio.Future[asyncio.Future[G.CommitStatusResponse]]] = {}
        self._committing: dict[int, asyncio.Future[G.CommitStatusResponse]] = {}
        self._task: asyncio.Task[None] | None = None

    async def endorse(self, request: G.EndorseRequest, timeout_s: float) -> G.EndorseResponse:
        """What `Endorse(request)` returns, or raises its AioRpcError."""
        future: asyncio.Future[G.EndorseResponse] = asyncio.get_running_loop().create_future()
        ref = self._enqueue(lambda r: G.EndorseItem(ref=r, request=request))
        self._endorsing[ref] = future
        return await self._bounded(future, timeout_s, lambda: self._endorsing.pop(ref, None))

    async def submit(
        self, request: G.SubmitRequest, timeout_s: float
    ) -> asyncio.Future[G.CommitStatusResponse]:
        """Returns once the orderer accepted the envelope (as `Submit`), with a future of its
        commit status (as `CommitStatus`); raises the AioRpcError `Submit` would have raised."""
        loop = asyncio.get_running_loop()
        accepted: asyncio.Future[asyncio.Future[G.CommitStatusResponse]] = loop.create_future()
        ref = self._enqueue(lambda r: G.SubmitItem(ref=r, request=request))
        self._submitting[ref] = accepted
        self._committing[ref] = loop.create_future()
        try:
            return await self._bounded(accepted, timeout_s, lambda: None)
        except BaseException:
            self._committing.pop(ref, None)
            raise
        finally:
            self._submitting.pop(ref, None)

    async def wait_commit(
        self, committed: asyncio.Future[G.CommitStatusResponse], timeout_s: float
    ) -> G.CommitStatusResponse:
        """The commit status, or DEADLINE_EXCEEDED after `timeout_s`."""
        return await self._bounded(committed, timeout_s, lambda: None)

    async def close(self) -> None:
        """End the stream; waiting callers get UNAVAILABLE."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def _enqueue(self, make: Callable[[int], Item]) -> int:
        ref = self._next_ref
        self._next_ref += 1
        self._queue.put_nowait(make(ref))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="transact-stream")
        return ref

    @staticmethod
    async def _bounded(
        future: asyncio.Future[T], timeout_s: float, forget: Callable[[], object]
    ) -> T:
        try:
            return await bounded(future, timeout_s, _deadline_exceeded)
        finally:
            forget()

    async def _run(self) -> None:
        # grpc.aio: no request iterator = write() mode (the stubs only know the iterator form)
        call: Call = self._stub.Transact()  # type: ignore[call-arg, assignment]
        reader = asyncio.create_task(self._read(call))
        failure: grpc.aio.AioRpcError = _plain_error(
            grpc.StatusCode.UNAVAILABLE, "Transact stream ended"
        )
        try:
            while (first := await next_or_none(self._queue, reader)) is not None:
                items = [first]
                while len(items) < self._batch_max and not self._queue.empty():
                    items.append(self._queue.get_nowait())
                request = G.TransactRequest(
                    endorse=[i for i in items if isinstance(i, G.EndorseItem)],
                    submit=[i for i in items if isinstance(i, G.SubmitItem)],
                )
                await call.write(request)
        except grpc.aio.AioRpcError as exc:
            failure = exc
        except (grpc.aio.UsageError, asyncio.InvalidStateError) as exc:
            # InvalidStateError: a write after the call ended, before the reader saw the end
            logger.warning("Transact stream write failed: %s", exc)
        finally:
            reader.cancel()
            results = await asyncio.gather(reader, return_exceptions=True)
            if isinstance(results[0], grpc.aio.AioRpcError):
                failure = results[0]
            call.cancel()
            self._fail_all(failure)

    async def _read(self, call: Call) -> None:
        async for response in call:
            for e in response.endorsed:
                future = self._endorsing.pop(e.ref, None)
                if future is not None and not future.done():
                    if e.HasField("error"):
                        future.set_exception(rpc_error(e.error))
                    else:
                        future.set_result(e.response)
            for s in response.submitted:
                accepted = self._submitting.get(s.ref)
                if s.HasField("error"):
                    refused = rpc_error(s.error)
                    committing = self._committing.pop(s.ref, None)
                    if committing is not None:
                        _fail(committing, refused)
                    if accepted is not None and not accepted.done():
                        accepted.set_exception(refused)
                elif accepted is not None and not accepted.done():
                    accepted.set_result(self._committing[s.ref])
            for c in response.committed:
                committed = self._committing.pop(c.ref, None)
                if committed is not None and not committed.done():
                    if c.HasField("error"):
                        committed.set_exception(rpc_error(c.error))
                    else:
                        committed.set_result(c.status)

    def _fail_all(self, failure: grpc.aio.AioRpcError) -> None:
        waiting: list[asyncio.Future[Any]] = [
            *self._endorsing.values(),
            *self._submitting.values(),
            *self._committing.values(),
        ]
        self._endorsing.clear()
        self._submitting.clear()
        self._committing.clear()
        while not self._queue.empty():
            self._queue.get_nowait()
        for future in waiting:
            _fail(future, failure)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    """Fail `future` unless it is settled. Its caller may never look: the commit future of a
    submit whose stream broke is failed here together with the submit's own future, and the caller
    hears of the failure through that one only. So the error is marked retrieved; asyncio would
    otherwise log "Future exception was never retrieved" for a failure already reported."""
    if not future.done():
        future.set_exception(error)
        future.exception()
