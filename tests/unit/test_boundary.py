"""The request boundary's pure parts: bounds on a decoded request, the in-flight budget, the
rate-limited malformed-input log, and the keepalive / limits settings a node loads."""

from __future__ import annotations

import logging

import pytest

from dltmw.core.errors import ClientError, LimitExceeded
from dltmw.rpc.boundary import Boundary, RateLimitedLog
from dltmw.rpc.budget import Budget, Caller
from dltmw.rpc.channel_options import Keepalive, client_options, server_options
from dltmw.rpc.status import CODE_OF_REASON, detached, to_status
from dltmw.runtime.config import Limits
from dltmw.v1 import errors_pb2, orderer_service_pb2, privacy_manager_service_pb2

A = Caller("ipv4:127.0.0.1:1000", b"a" * 32)
A2 = Caller("ipv4:127.0.0.1:1001", b"a" * 32)  # the same identity on another connection
B = Caller("ipv4:127.0.0.1:2000", b"b" * 32)
LIMITS = Limits(
    items_per_request_max=3,
    item_bytes_max=10,
    query_bytes_max=64,
    inflight_rpcs_per_connection_max=2,
    inflight_rpcs_per_identity_max=3,
    inflight_bytes_per_identity_max=100,
)
ORDERER = orderer_service_pb2.DESCRIPTOR.services_by_name["OrdererService"]
PRIVACY = privacy_manager_service_pb2.DESCRIPTOR.services_by_name["PrivacyManagerService"]


def _rule(service, name: str):
    return Boundary(LIMITS).rule(service, service.methods_by_name[name])


def _broadcast(*envelopes: bytes) -> bytes:
    return orderer_service_pb2.BroadcastRequest(envelopes=list(envelopes)).SerializeToString()


@pytest.mark.parametrize(
    ("raw", "limit"),
    [
        (_broadcast(b"x", b"y", b"z", b"w"), "items_per_request_max"),
        (_broadcast(b"x" * 11), "item_bytes_max"),
        (_broadcast(b"x", b"y", b"z"), None),
    ],
    ids=["four-entries-exceed-three", "an-entry-over-the-byte-bound", "three-entries-pass"],
)
def test_repeated_fields_are_bounded_before_any_entry_is_used(raw: bytes, limit: str | None):
    boundary = Boundary(LIMITS)
    rule = _rule(ORDERER, "Broadcast")
    if limit is None:
        assert len(boundary.admit(rule, raw, A).envelopes) == 3  # type: ignore[attr-defined]
        return
    with pytest.raises(LimitExceeded) as refused:
        boundary.admit(rule, raw, A)
    assert refused.value.metadata == {"limit": limit, "max": str(getattr(LIMITS, limit))}
    assert refused.value.__traceback__ is not None
    assert detached(refused.value).__traceback__ is None


def test_query_methods_are_capped_at_query_bytes_max() -> None:
    rule = _rule(PRIVACY, "Receive")
    assert (rule.request_bytes_max, rule.request_bytes_limit) == (64, "query_bytes_max")
    with pytest.raises(LimitExceeded) as refused:
        Boundary(LIMITS).admit(rule, b"\x0a\x41" + b"q" * 65, A)
    assert refused.value.limit == "query_bytes_max"
    assert _rule(PRIVACY, "Send").request_bytes_limit == "max_message_bytes"


def test_limit_exceeded_is_resource_exhausted_with_the_limit_in_error_info() -> None:
    error = LimitExceeded("items_per_request_max", 1000, "too many")
    status = to_status(error)
    assert CODE_OF_REASON[error.reason].value[0] == status.code == 8  # RESOURCE_EXHAUSTED
    assert error.reason == errors_pb2.ERROR_REASON_LIMIT_EXCEEDED
    assert "limit items_per_request_max = 1000" in status.message


def test_undecodable_bytes_are_malformed_and_logged_once_per_caller_per_interval(caplog) -> None:
    now = [0.0]
    boundary = Boundary(LIMITS)
    boundary.log = RateLimitedLog(60.0, clock=lambda: now[0])
    rule = _rule(ORDERER, "Deliver")
    with caplog.at_level(logging.WARNING, logger="dltmw.rpc.boundary"):
        for caller in (A, A2, A, B, A):
            with pytest.raises(ClientError) as refused:
                boundary.admit(rule, b"\xff\xff\xff", caller)
            assert refused.value.reason == errors_pb2.ERROR_REASON_MALFORMED
        now[0] = 61.0
        with pytest.raises(ClientError):
            boundary.admit(rule, b"\xff", A)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines  # A (A2 is the same identity), B, then A after the interval
    assert "3 more since the last report" in lines[2]
    assert not any(r.exc_info for r in caplog.records)


def test_budget_bounds_calls_per_connection_and_per_identity_and_bytes() -> None:
    budget = Budget(LIMITS)
    budget.open_call(A)
    budget.open_call(A)
    with pytest.raises(LimitExceeded) as per_connection:
        budget.open_call(A)
    assert per_connection.value.limit == "inflight_rpcs_per_connection_max"
    budget.open_call(A2)  # same identity, another connection: the third call of the identity
    with pytest.raises(LimitExceeded) as per_identity:
        budget.open_call(Caller("ipv4:127.0.0.1:1002", A.identity))
    assert per_identity.value.limit == "inflight_rpcs_per_identity_max"
    budget.open_call(B)  # another identity is not affected
    budget.take_bytes(B, 100)
    with pytest.raises(LimitExceeded) as per_bytes:
        budget.take_bytes(B, 1)
    assert per_bytes.value.limit == "inflight_bytes_per_identity_max"
    budget.give_bytes(B, 100)
    for caller in (A, A, A2, B):
        budget.close_call(caller)
    assert budget.idle


def test_keepalive_server_permits_what_its_clients_do() -> None:
    k = Keepalive(time_ms=20_000, timeout_ms=10_000, min_recv_ping_interval_ms=10_000)
    server = dict(server_options(k))
    client = dict(client_options(k))
    assert (
        server["grpc.http2.min_ping_interval_without_data_ms"] <= client["grpc.keepalive_time_ms"]
    )
    assert (
        server["grpc.keepalive_permit_without_calls"]
        == client["grpc.keepalive_permit_without_calls"]
    )
    with pytest.raises(ValueError, match="must not exceed"):
        Keepalive(time_ms=1000, min_recv_ping_interval_ms=2000)


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="items_per_request_max"):
        Limits(items_per_request_max=0)
