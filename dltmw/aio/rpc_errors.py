"""Errors received from another node: the ONE classification of what to do about them.

`rpc/status.py` turns this node's failures into statuses on the way out; this module reads the
statuses (and the transport failures) that come back on the way in. Every caller of another node
— stream clients (`aio/batched_stream.py`), the replica links, the vault's flows, the privacy
manager, Deliver, block catch-up, the task owner's restart rule (`aio/tasks.is_transient`) —
asks the same two questions here instead of deciding from a status code locally:

`classify(exc)` — whose fault, so what now?
  RETRY       the other node is unreachable, slow, overloaded or stopping, or the connection
              broke: the same request may succeed later (UNAVAILABLE, DEADLINE_EXCEEDED,
              CANCELLED, RESOURCE_EXHAUSTED without a request-size reason; `TransientError`;
              connection-level OS errors).
  FAIL        the other node gave a definite answer about OUR request (a bad request, not
              allowed, a conflict, a request beyond its limits): sending it again unchanged
              gets the same answer, so the caller gets it (INVALID_ARGUMENT, PERMISSION_DENIED,
              FAILED_PRECONDITION, ABORTED, ALREADY_EXISTS, RESOURCE_EXHAUSTED with
              LIMIT_EXCEEDED or MESSAGE_TOO_LARGE, ...; `ClientError`; anything unrecognised —
              a bug is never retried).
  BLAME_PEER  the other node broke the contract (UNKNOWN, INTERNAL, DATA_LOSS, UNIMPLEMENTED: a
              failure dltmw never answers with on purpose; `PeerError`: a bad signature, a
              response that does not match the request). Not this node's fault, so never a
              reason for this node to stop; try again only after a backoff.

`reconnects(exc)` — drop the cached connection and re-resolve the address? Only when the
failure says the connection itself is bad: UNAVAILABLE (the node stopped or moved to another
port), a BLAME_PEER failure (whatever answered is not a sane node; a restart may have replaced
it), and RETRY failures below gRPC (no address, a refused connection). Not for a slow answer
(DEADLINE_EXCEEDED) or an overloaded one: the connection is fine, and dropping a shared channel
would cancel every other call on it.

`from_rpc_error(exc, node_id)` — the DltmwError to raise in this node for a failed call to
`node_id` (the inbound twin of `rpc/status.to_status`): a refusal with an ErrorInfo reason keeps
that reason and its metadata (as `PeerError`: another node's answer, relayed), a RETRY failure
with one keeps them as `TransientError`; an unreachable node, a slow one, or one that answers
without a reason is `TransientError(PEER_UNAVAILABLE)`.
"""

from __future__ import annotations

import enum
import errno

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from dltmw.core.errors import DltmwError, PeerError, TransientError, reason_value
from dltmw.v1 import errors_pb2

DOMAIN = "dltmw.v1"  # the ErrorInfo domain of dltmw statuses (rpc/status.py writes it)
S = grpc.StatusCode


class Verdict(enum.Enum):
    """What a caller does about a failure received from another node (module docstring)."""

    RETRY = "retry"
    FAIL = "fail"
    BLAME_PEER = "blame_peer"


RETRY_CODES = frozenset({S.UNAVAILABLE, S.DEADLINE_EXCEEDED, S.CANCELLED, S.RESOURCE_EXHAUSTED})
BLAME_CODES = frozenset({S.UNKNOWN, S.INTERNAL, S.DATA_LOSS, S.UNIMPLEMENTED})
# RESOURCE_EXHAUSTED reasons that are about the request, not the other node's load.
REQUEST_TOO_BIG = frozenset({"LIMIT_EXCEEDED", "MESSAGE_TOO_LARGE"})
TRANSIENT_ERRNOS = frozenset({errno.EIO, errno.ENOSPC, errno.EAGAIN, errno.EBUSY, errno.EINTR})


def error_info(error: BaseException) -> error_details_pb2.ErrorInfo | None:
    """The dltmw ErrorInfo (reason, metadata) a failed call carries, if any."""
    if not isinstance(error, grpc.RpcError):
        return None
    try:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except ValueError:  # a status whose details contradict its code: no usable reason
        return None
    if status is None:
        return None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info) and info.domain == DOMAIN:
            return info
    return None


def reason_of(error: BaseException) -> str | None:
    """The ErrorInfo reason (short name, e.g. "NOT_FOUND") a failed call carries, if any."""
    info = error_info(error)
    return str(info.reason) if info is not None else None


def classify(exc: BaseException) -> Verdict:
    """RETRY, FAIL or BLAME_PEER for a failure received from another node (module docstring)."""
    if isinstance(exc, grpc.aio.AioRpcError):
        code = exc.code()
        if code == S.RESOURCE_EXHAUSTED and reason_of(exc) in REQUEST_TOO_BIG:
            return Verdict.FAIL
        if code in RETRY_CODES:
            return Verdict.RETRY
        return Verdict.BLAME_PEER if code in BLAME_CODES else Verdict.FAIL
    if isinstance(exc, TransientError | ConnectionError | TimeoutError):
        return Verdict.RETRY
    if isinstance(exc, PeerError):
        return Verdict.BLAME_PEER
    if isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS:
        return Verdict.RETRY
    return Verdict.FAIL


def reconnects(exc: BaseException) -> bool:
    """Should the caller drop its cached connection to that node (module docstring)?"""
    verdict = classify(exc)
    if verdict is Verdict.BLAME_PEER:
        return True
    if verdict is not Verdict.RETRY:
        return False
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code() == S.UNAVAILABLE
    return True  # below gRPC: no address, connection refused or reset


def from_rpc_error(exc: grpc.aio.AioRpcError, node_id: str) -> DltmwError:
    """The DltmwError for a failed call to `node_id` (module docstring)."""
    info = error_info(exc)
    text = f"{node_id}: {exc.details()}"
    if info is None or exc.code() in (S.UNAVAILABLE, S.DEADLINE_EXCEEDED):
        return TransientError(errors_pb2.ERROR_REASON_PEER_UNAVAILABLE, text)
    reason = str(info.reason)
    try:
        value = reason_value(reason)
    except ValueError:  # a reason newer than this node
        return PeerError(errors_pb2.ERROR_REASON_PEER_UNAVAILABLE, f"{text} ({reason})")
    metadata = dict(info.metadata)  # relayed as the other node gave it (which limit, which key)
    if classify(exc) is Verdict.RETRY:
        return TransientError(value, text, metadata)
    return PeerError(value, text, metadata)
