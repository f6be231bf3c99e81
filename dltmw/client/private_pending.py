"""Waiting for the agreement of a recipient whose payload delivery is pending (queued delivery,
docs/privacy.md "Queued delivery").

On a channel that requires agreements a Send to a recipient that is down succeeds: its node
queues the delivery and answers with the recipient as pending. Until the queue delivered the
payload and the recipient agreed, a collection fails with PRIVATE_AGREEMENT_TIMEOUT naming it
(ErrorInfo metadata `nodes`); under ALL_RECIPIENTS nothing can be ordered without it. So the
client neither gives up at once nor waits without end: it collects again with capped,
jittered exponential backoff (tenacity, the jitter from `aio/entropy`, so a simulated run
replays), bounded by its deadline, and each call's own gRPC deadline is cut to what is left.

Past the deadline the caller gets `PrivateAgreementPending`: the very gRPC error of the last
attempt (UNAVAILABLE, PRIVATE_AGREEMENT_TIMEOUT; callers that catch `grpc.aio.AioRpcError` see
what they saw before) plus what it takes to resume the SAME transaction later — the payload
hash, the tx id and, when the SDK chose it, the nonce. Resuming (`PrivacyClient.resume_private`)
collects again and submits under that tx id: no second Send, so never a second payload, and a
second submission of one tx id is refused by the gateway or marked DUPLICATE_TXID by the ledger.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
from tenacity import AsyncRetrying, retry_if_exception

from dltmw.aio.rpc_errors import error_info, reason_of
from dltmw.aio.tasks import backoff_s

T = TypeVar("T")
PENDING_REASON = "PRIVATE_AGREEMENT_TIMEOUT"
PENDING_DEADLINE_S = 60.0  # a PrivacyClient's default wait for a pending recipient
BACKOFF_FIRST_S = 0.25  # the queue's own first redelivery look is after 1 s
BACKOFF_MAX_S = 4.0
CALL_MAX_S = 60.0  # one collection call's deadline (the node's own is 10 s per recipient)
MIN_CALL_S = 0.5  # a last attempt gets at least this long
# A call that ran out of time (`until_agreed`: after a pending answer, still pending).
OUT_OF_TIME = frozenset({grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED})


def is_pending(exc: BaseException) -> bool:
    """A collection that failed because some recipient has not agreed (yet): worth again."""
    return isinstance(exc, grpc.aio.AioRpcError) and reason_of(exc) == PENDING_REASON


class PrivateAgreementPending(grpc.aio.AioRpcError):
    """The agreements of a private transaction were not all collected within the client's
    deadline (module docstring): the last attempt's gRPC error (code, details, ErrorInfo), with
    the transaction to resume — `channel_id`, `payload_hash`, `tx_id`, `nonce` (None when the
    caller chose the tx id itself), `creator` (as the tx id names it: in full or by reference,
    `client/creator_reference.py`; None: in full) — and the recipient nodes still missing
    (`nodes`)."""

    def __init__(
        self,
        error: grpc.aio.AioRpcError,
        channel_id: str,
        payload_hash: bytes,
        tx_id: str,
        nonce: bytes | None = None,
        creator: bytes | None = None,
    ) -> None:
        super().__init__(
            error.code(),
            error.initial_metadata(),
            error.trailing_metadata(),  # type: ignore[arg-type]  # (the same object back)
            error.details(),
            error.debug_error_string(),
        )
        self.channel_id = channel_id
        self.payload_hash = payload_hash
        self.tx_id = tx_id
        self.nonce = nonce
        self.creator = creator

    @property
    def nodes(self) -> tuple[str, ...]:
        """The recipient nodes whose agreement is missing, as the node named them."""
        info = error_info(self)
        names = info.metadata.get("nodes", "") if info is not None else ""
        return tuple(sorted(n for n in names.split(",") if n))

    def __str__(self) -> str:
        return (
            f"agreements of tx {self.tx_id} (payload {self.payload_hash.hex()[:16]}..) still "
            f"missing from {', '.join(self.nodes) or '?'}: {self.details()}"
        )


async def until_agreed(collect: Callable[[float], Awaitable[T]], deadline_s: float) -> T:
    """`collect(timeout_s)` again while it fails for a pending recipient (`is_pending`), with
    jittered backoff, for at most `deadline_s` in all; the last attempt's error after that
    (any other error at once). `timeout_s` is what is left of the deadline (capped)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    pending: list[BaseException] = []  # the last attempt that came back pending

    async def attempt() -> T:
        try:
            return await collect(min(CALL_MAX_S, max(MIN_CALL_S, end - loop.time())))
        except grpc.aio.AioRpcError as exc:
            if is_pending(exc):
                pending[:] = [exc]
            elif pending and exc.code() in OUT_OF_TIME:
                # a later attempt ran out of its (shorter) time while the node still waited on
                # the pending recipient: the transaction is as pending as before — say so, with
                # what the caller needs to resume it, not a bare DEADLINE_EXCEEDED
                raise pending[0] from exc
            raise

    retrying = AsyncRetrying(
        retry=retry_if_exception(is_pending),
        wait=lambda state: min(
            backoff_s(state.attempt_number, BACKOFF_FIRST_S, BACKOFF_MAX_S),
            max(0.0, end - loop.time()),
        ),
        stop=lambda _: loop.time() >= end,  # the loop's clock: virtual in a simulation
        reraise=True,
    )
    result: T = await retrying(attempt)
    return result
