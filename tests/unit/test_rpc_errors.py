"""The one classification of failures received from another node (dltmw.aio.rpc_errors): a table
of status codes x ErrorInfo reasons -> (verdict, drop the connection?), and the DltmwError a
failed call becomes in this node."""

from __future__ import annotations

import errno

import grpc
import pytest

from dltmw.aio.rpc_errors import Verdict, classify, from_rpc_error, reason_of, reconnects
from dltmw.aio.tasks import is_transient
from dltmw.core.errors import (
    ClientError,
    DltmwError,
    LimitExceeded,
    PeerError,
    TransientError,
    reason_value,
)
from dltmw.rpc.status import to_status
from dltmw.v1 import errors_pb2

S = grpc.StatusCode
R = errors_pb2
RETRY, FAIL, BLAME = Verdict.RETRY, Verdict.FAIL, Verdict.BLAME_PEER


def received(code: grpc.StatusCode, reason: str | None = None) -> grpc.aio.AioRpcError:
    """The AioRpcError a call raises when the other node answers `code` (with `reason` in its
    ErrorInfo, written by rpc/status.py exactly as a dltmw servicer writes it)."""
    trailing, details = grpc.aio.Metadata(), "details"
    if reason is not None:
        status = to_status(DltmwError(reason_value(reason), "refused"))
        status.code = code.value[0]  # the code under test, whatever the reason's own code is
        trailing = grpc.aio.Metadata(("grpc-status-details-bin", status.SerializeToString()))
        details = status.message
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, details, None)


@pytest.mark.parametrize(
    ("code", "reason", "verdict", "reconnect"),
    [
        (S.UNAVAILABLE, None, RETRY, True),
        (S.UNAVAILABLE, "SHUTTING_DOWN", RETRY, True),
        (S.UNAVAILABLE, "PEER_UNAVAILABLE", RETRY, True),
        (S.DEADLINE_EXCEEDED, None, RETRY, False),
        (S.CANCELLED, None, RETRY, False),
        (S.RESOURCE_EXHAUSTED, None, RETRY, False),
        (S.RESOURCE_EXHAUSTED, "OVERLOADED", RETRY, False),
        (S.RESOURCE_EXHAUSTED, "LIMIT_EXCEEDED", FAIL, False),
        (S.RESOURCE_EXHAUSTED, "MESSAGE_TOO_LARGE", FAIL, False),
        (S.INVALID_ARGUMENT, "MALFORMED", FAIL, False),
        (S.INVALID_ARGUMENT, None, FAIL, False),
        (S.PERMISSION_DENIED, "NOT_A_MEMBER", FAIL, False),
        (S.PERMISSION_DENIED, "TLS_IDENTITY_MISMATCH", FAIL, False),
        (S.UNAUTHENTICATED, None, FAIL, False),
        (S.ALREADY_EXISTS, "DUPLICATE_TX_ID", FAIL, False),
        (S.FAILED_PRECONDITION, "NOT_FOUND", FAIL, False),
        (S.ABORTED, "INPUT_CONSUMED", FAIL, False),
        (S.ABORTED, "ENDORSEMENT_MISMATCH", FAIL, False),
        (S.NOT_FOUND, None, FAIL, False),
        (S.OUT_OF_RANGE, None, FAIL, False),
        (S.UNKNOWN, None, BLAME, True),
        (S.INTERNAL, None, BLAME, True),
        (S.DATA_LOSS, None, BLAME, True),
        (S.UNIMPLEMENTED, None, BLAME, True),
    ],
    ids=lambda v: v.name if isinstance(v, S | Verdict) else str(v),
)
def test_status_code_and_reason_decide_the_verdict(
    code: grpc.StatusCode, reason: str | None, verdict: Verdict, reconnect: bool
) -> None:
    exc = received(code, reason)
    assert reason_of(exc) == reason
    assert classify(exc) is verdict
    assert reconnects(exc) is reconnect
    assert is_transient(exc) is (verdict is not FAIL)


@pytest.mark.parametrize(
    ("exc", "verdict", "reconnect"),
    [
        (TransientError(R.ERROR_REASON_PEER_UNAVAILABLE, "no address"), RETRY, True),
        (TransientError(R.ERROR_REASON_OVERLOADED, "queue full"), RETRY, True),
        (ConnectionRefusedError("refused"), RETRY, True),
        (TimeoutError(), RETRY, True),
        (OSError(errno.EAGAIN, "again"), RETRY, True),
        (PeerError(R.ERROR_REASON_BAD_SIGNATURE, "their signature"), BLAME, True),
        (ClientError(R.ERROR_REASON_INVALID_FIELD, "ours"), FAIL, False),
        (LimitExceeded("items_per_request_max", 4, "too many"), FAIL, False),
        (OSError(errno.EACCES, "denied"), FAIL, False),
        (RuntimeError("a bug"), FAIL, False),
    ],
    ids=[
        "transient-error",
        "local-overload",
        "connection-refused",
        "timeout",
        "transient-errno",
        "peer-error",
        "client-error",
        "limit-exceeded",
        "other-errno",
        "bug",
    ],
)
def test_failures_below_grpc_are_classified_the_same_way(
    exc: BaseException, verdict: Verdict, reconnect: bool
) -> None:
    assert classify(exc) is verdict
    assert reconnects(exc) is reconnect


@pytest.mark.parametrize(
    ("code", "reason", "kind", "reason_out"),
    [
        (S.UNAVAILABLE, None, TransientError, "PEER_UNAVAILABLE"),
        (S.UNAVAILABLE, "SHUTTING_DOWN", TransientError, "PEER_UNAVAILABLE"),
        (S.DEADLINE_EXCEEDED, "WAIT_TIMEOUT", TransientError, "PEER_UNAVAILABLE"),
        (S.UNKNOWN, None, TransientError, "PEER_UNAVAILABLE"),
        (S.RESOURCE_EXHAUSTED, "OVERLOADED", TransientError, "OVERLOADED"),
        (S.RESOURCE_EXHAUSTED, "LIMIT_EXCEEDED", PeerError, "LIMIT_EXCEEDED"),
        (S.FAILED_PRECONDITION, "NOT_FOUND", PeerError, "NOT_FOUND"),
        (S.PERMISSION_DENIED, "NOT_AUTHORIZED", PeerError, "NOT_AUTHORIZED"),
    ],
    ids=lambda v: v.name if isinstance(v, S) else str(v),
)
def test_a_failed_call_becomes_an_error_that_keeps_the_other_nodes_reason(
    code: grpc.StatusCode, reason: str | None, kind: type[DltmwError], reason_out: str
) -> None:
    error = from_rpc_error(received(code, reason), "peer0.org2")
    assert type(error) is kind
    assert error.reason_name == reason_out
    assert error.message.startswith("peer0.org2: ")


def test_a_relayed_refusal_keeps_the_other_nodes_metadata() -> None:
    """A gateway relaying an endorser's STALE_READ (or a LIMIT_EXCEEDED) must tell the client
    which key (which limit): the metadata used to be dropped on the way through."""
    for kind, refusal in (
        (
            PeerError,
            DltmwError(R.ERROR_REASON_STALE_READ, "stale", {"namespace": "bank", "key": "A"}),
        ),
        (TransientError, DltmwError(R.ERROR_REASON_OVERLOADED, "busy", {"queue": "endorse"})),
    ):
        status = to_status(refusal)
        trailing = grpc.aio.Metadata(("grpc-status-details-bin", status.SerializeToString()))
        code = S.ABORTED if kind is PeerError else S.RESOURCE_EXHAUSTED
        exc = grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, status.message, None)
        error = from_rpc_error(exc, "peer0.org2")
        assert type(error) is kind and error.reason == refusal.reason
        assert error.metadata == refusal.metadata


def test_a_status_whose_details_contradict_its_code_has_no_reason() -> None:
    status = to_status(ClientError(R.ERROR_REASON_MALFORMED, "x"))  # INVALID_ARGUMENT inside
    trailing = grpc.aio.Metadata(("grpc-status-details-bin", status.SerializeToString()))
    exc = grpc.aio.AioRpcError(S.ABORTED, grpc.aio.Metadata(), trailing, status.message, None)
    assert reason_of(exc) is None
    assert classify(exc) is FAIL
