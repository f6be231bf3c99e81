"""Error reasons to gRPC statuses (dltmw.rpc.status): complete, deliberate, round-trippable."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2

from dltmw.core.errors import ClientError, DltmwError, PeerError, TransientError, reason_value
from dltmw.rpc.status import CODE_OF_REASON, DOMAIN, to_status
from dltmw.v1 import errors_pb2

S = grpc.StatusCode
ALLOWED = frozenset(
    {
        S.INVALID_ARGUMENT,
        S.PERMISSION_DENIED,
        S.ALREADY_EXISTS,
        S.ABORTED,
        S.FAILED_PRECONDITION,
        S.RESOURCE_EXHAUSTED,
        S.UNAVAILABLE,
    }
)
REASONS = [
    (name, value)
    for name, value in errors_pb2.ErrorReason.items()
    if value != errors_pb2.ERROR_REASON_UNSPECIFIED
]
IDS = [name.removeprefix("ERROR_REASON_") for name, _ in REASONS]


def test_every_reason_is_listed() -> None:
    assert len(REASONS) == len(errors_pb2.ErrorReason.keys()) - 1 > 20
    assert errors_pb2.ERROR_REASON_UNSPECIFIED not in CODE_OF_REASON
    assert set(CODE_OF_REASON) == {value for _, value in REASONS}


@pytest.mark.parametrize(("name", "value"), REASONS, ids=IDS)
def test_reason_maps_to_an_allowed_code(name: str, value: int) -> None:
    code = CODE_OF_REASON[value]
    assert code in ALLOWED
    assert code not in {S.UNKNOWN, S.INTERNAL, S.OK}


@pytest.mark.parametrize(("name", "value"), REASONS, ids=IDS)
def test_to_status_round_trips_the_reason(name: str, value: int) -> None:
    short = name.removeprefix("ERROR_REASON_")
    status = to_status(ClientError(value, "msg"), tx_id="abc")
    assert status.code == CODE_OF_REASON[value].value[0]
    assert status.message == f"{short}: msg"
    [detail] = status.details
    info = error_details_pb2.ErrorInfo()
    assert detail.Unpack(info)
    assert info.reason == short
    assert info.domain == DOMAIN == "dltmw.v1"
    assert dict(info.metadata) == {"tx_id": "abc"}
    assert reason_value(info.reason) == value


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (PeerError(errors_pb2.ERROR_REASON_ENDORSEMENT_MISMATCH, "m"), S.ABORTED),
        (TransientError(errors_pb2.ERROR_REASON_OVERLOADED, "m"), S.RESOURCE_EXHAUSTED),
        (ClientError(errors_pb2.ERROR_REASON_BAD_SIGNATURE, "m"), S.PERMISSION_DENIED),
    ],
    ids=["peer-error", "transient-error", "client-error"],
)
def test_code_depends_on_reason_not_error_class(error: DltmwError, code: grpc.StatusCode) -> None:
    assert to_status(error).code == code.value[0]
