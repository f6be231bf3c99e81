"""Which failures of a node's loops may pass: the one classification its `TaskOwner` uses.

The asyncio toolkit knows the transport's transient failures (`aio.tasks.is_transient`: a peer
unavailable, slow or overloaded, another node's misbehaviour, connection-level OS errors); the
storage layer knows its own (`ledger.retry.is_transient_storage_error`: sqlite busy/locked, I/O
errors, a full disk). A node's loops see both, so the node composes them here.
"""

from __future__ import annotations

import asyncio

import grpc

from dltmw.aio.tasks import is_transient as is_transient_transport
from dltmw.core.errors import TransientError
from dltmw.ledger.retry import is_transient_storage_error


def is_transient(exc: BaseException) -> bool:
    """May the failure `exc` of a node's loop pass, so that trying again later is right?"""
    return is_transient_transport(exc) or is_transient_storage_error(exc)


# What a batched stream client to another node meets when the stream is gone: the call's status,
# grpc's refusal of a call used in the wrong style, the node being unreachable (TransientError),
# and — at a write after the call ended that its reader has not seen yet — asyncio's
# InvalidStateError (grpc.aio's "RPC already finished"; found by the simulator: uncaught, it
# stopped the node).
STREAM_FAILURES: tuple[type[Exception], ...] = (
    grpc.aio.AioRpcError,
    grpc.aio.UsageError,
    asyncio.InvalidStateError,
    TransientError,
)
