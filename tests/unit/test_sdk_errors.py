"""The SDK's typed exceptions: every ErrorInfo reason a node sends becomes the one class a
caller handles, with the reason, the status name and the server's message (without the reason
prefix the server adds), and `retryable` says whether the same request may succeed later.

The failed calls are built exactly as a node's request boundary builds them (`rpc/status.py`
via the Transact pipeline's `rpc_error`), so a change on either side shows here.
"""

from __future__ import annotations

import grpc
import pytest

from dltmw import sdk  # noqa: F401 - the package imports cleanly on its own
from dltmw.client.pipeline import rpc_error
from dltmw.rpc.status import CODE_OF_REASON
from dltmw.sdk import errors as E
from dltmw.v1 import batch_pb2, errors_pb2

EXPECTED: dict[str, type[E.Error]] = {
    "MALFORMED": E.InvalidRequest,
    "MISSING_FIELD": E.InvalidRequest,
    "INVALID_FIELD": E.InvalidRequest,
    "TX_ID_MISMATCH": E.InvalidRequest,
    "BAD_SIGNATURE": E.PermissionDenied,
    "NOT_A_MEMBER": E.PermissionDenied,
    "NOT_AUTHORIZED": E.PermissionDenied,
    "TLS_IDENTITY_MISMATCH": E.PermissionDenied,
    "DUPLICATE_TX_ID": E.AlreadyExists,
    "ALREADY_JOINED": E.AlreadyExists,
    "TIMESTAMP_OUT_OF_WINDOW": E.PreconditionFailed,
    "CHANNEL_NOT_FOUND": E.NotFound,
    "ROLE_NOT_HOSTED": E.PreconditionFailed,
    "CONTRACT_NOT_FOUND": E.NotFound,
    "NOT_FOUND": E.NotFound,
    "TIME_WINDOW_INVALID": E.PreconditionFailed,
    "PAYLOAD_HASH_MISMATCH": E.PreconditionFailed,
    "PAYLOAD_UNREADABLE": E.PreconditionFailed,
    "STALE_VIEW": E.PreconditionFailed,
    "MESSAGE_TOO_LARGE": E.LimitExceeded,
    "OVERLOADED": E.Overloaded,
    "LIMIT_EXCEEDED": E.LimitExceeded,
    "CONTRACT_FAILED": E.ContractRefused,
    "ENDORSEMENT_POLICY_UNSATISFIABLE": E.EndorsementFailed,
    "ENDORSEMENT_MISMATCH": E.EndorsementFailed,
    "INPUT_CONSUMED": E.InputConsumed,
    "PEER_UNAVAILABLE": E.Unavailable,
    "SHUTTING_DOWN": E.Unavailable,
    "WAIT_TIMEOUT": E.Unavailable,
    "HEIGHT_NOT_REACHED": E.Unavailable,
    "PACKAGE_INVALID": E.InvalidRequest,
    "PACKAGE_NOT_INSTALLED": E.NotFound,
    "CONTRACT_NOT_COMMITTED": E.PreconditionFailed,
    "PACKAGE_MISMATCH": E.PreconditionFailed,
    "CONFIG_SEQUENCE_STALE": E.PreconditionFailed,
    "CONFIG_UPDATE_UNSIGNED": E.PermissionDenied,
    "CONFIG_POLICY_UNSATISFIED": E.PermissionDenied,
    "CONFIG_SIGNER_NOT_ADMIN": E.PermissionDenied,
    "CONFIG_INVALID": E.InvalidRequest,
    "REPLICA_SET_CHANGE_INVALID": E.InvalidRequest,
    "REPLICA_SET_TOO_SMALL": E.InvalidRequest,
    "REPLICA_ORG_UNKNOWN": E.InvalidRequest,
    "REPLICA_IDENTITY_INVALID": E.InvalidRequest,
    "CERTIFICATE_REVOKED": E.PermissionDenied,
    "STANDBY_NOT_PROMOTED": E.PreconditionFailed,
    "ACTIVE_STILL_ALIVE": E.PreconditionFailed,
    "ACTIVE_SUPERSEDED": E.PreconditionFailed,
    "STALE_READ": E.StaleRead,
    "PROOF_WRONG_CHANNEL": E.InvalidRequest,
    "PROOF_BAD_ORDERER_SIGNATURE": E.InvalidRequest,
    "PROOF_ORDERER_QUORUM": E.InvalidRequest,
    "PROOF_INCLUSION_INVALID": E.InvalidRequest,
    "PROOF_ATTESTATION_INVALID": E.InvalidRequest,
    "PROOF_MISMATCH": E.InvalidRequest,
    "LIGHT_CLIENT_REJECTED": E.InvalidRequest,
    "PROOF_UNAVAILABLE": E.PreconditionFailed,
    "TRUST_ROOT_MISMATCH": E.InvalidRequest,
    "UNSUPPORTED_ALGORITHM": E.InvalidRequest,
    "ORDERING_UNAVAILABLE": E.Unavailable,
    "PRIVATE_AGREEMENT_MISSING": E.InvalidRequest,
    "PRIVATE_AGREEMENT_BAD_SIGNATURE": E.InvalidRequest,
    "PRIVATE_AGREEMENT_NOT_RECIPIENT": E.InvalidRequest,
    "PRIVATE_AGREEMENT_WRONG_TX": E.InvalidRequest,
    "PRIVATE_AGREEMENT_TIMEOUT": E.Unavailable,
    "PRIVATE_PURGE_NOT_AUTHORIZED": E.PermissionDenied,
    "PRIVATE_PURGE_MALFORMED": E.InvalidRequest,
    "PRIVATE_PURGE_BAD_SIGNATURE": E.InvalidRequest,
    "NOTARY_NOT_TRUSTED": E.InvalidRequest,
    "NOTARISATION_PROOF_INVALID": E.InvalidRequest,
    "ESCROW_MISMATCH": E.InvalidRequest,
    "ESCROW_PAYOUT_INVALID": E.InvalidRequest,
    "UTXO_CONTRACT_UNKNOWN": E.PreconditionFailed,
    "UTXO_CONTRACT_NOT_APPROVED": E.PreconditionFailed,
    "UTXO_CONTRACT_BUDGET_EXCEEDED": E.ContractRefused,
    "PRIVACY_GROUP_UNKNOWN": E.PreconditionFailed,
    "PRIVACY_GROUP_EXISTS": E.AlreadyExists,
    "PRIVACY_GROUP_NOT_MEMBER": E.PermissionDenied,
    "PRIVACY_GROUP_RECIPIENTS_MISMATCH": E.InvalidRequest,
    "PRIVACY_GROUP_INVALID": E.InvalidRequest,
    "PRIVATE_DISCLOSURE_MISMATCH": E.InvalidRequest,
    "PRIVATE_LEG_AGREEMENT_INVALID": E.InvalidRequest,
    "PRIVATE_LEG_MALFORMED": E.InvalidRequest,
    "PRIVATE_LEG_COMMITMENT_MISMATCH": E.InvalidRequest,
    "PRIVACY_GROUP_LAST_MEMBER": E.PreconditionFailed,
    "PRIVACY_GROUP_ID_TAKEN": E.AlreadyExists,
    "STORAGE_UNAVAILABLE": E.Unavailable,
    "NOTARY_BATCH_SIGNATURE_INVALID": E.PermissionDenied,
    "NOTARY_BATCH_REQUEST_INVALID": E.InvalidRequest,
    "CREATOR_BATCH_REFUSED": E.InvalidRequest,
    "UNKNOWN_IDENTITY_REFERENCE": E.PreconditionFailed,
    "PAYLOAD_PURGED": E.PayloadPurged,
    "PAYLOAD_NOT_HELD": E.PreconditionFailed,  # node to node (AgreeBatch): not held yet
    "PRIVATE_DELIVERY_GIVEN_UP": E.DeliveryGivenUp,  # resume: the sender will not order it
}
RETRYABLE = {
    "OVERLOADED",
    "ENDORSEMENT_MISMATCH",
    "PEER_UNAVAILABLE",
    "SHUTTING_DOWN",
    "WAIT_TIMEOUT",
    "HEIGHT_NOT_REACHED",
    "STALE_READ",  # refused before ordering: endorse again
    "ORDERING_UNAVAILABLE",  # the replicated log did not acknowledge: submit again
    "PRIVATE_AGREEMENT_TIMEOUT",  # a recipient did not answer in time: collect again
    "STORAGE_UNAVAILABLE",  # a read of the node's storage failed for a reason that may pass
}


def test_every_reason_a_node_sends_has_its_expected_class() -> None:
    sent = {errors_pb2.ErrorReason.Name(r).removeprefix("ERROR_REASON_") for r in CODE_OF_REASON}
    assert sent == set(EXPECTED)  # a new reason must be given its class here


@pytest.mark.parametrize("reason", sorted(EXPECTED))
def test_reason_maps_to_class_with_details(reason: str) -> None:
    value = errors_pb2.ErrorReason.Value(f"ERROR_REASON_{reason}")
    exc = rpc_error(batch_pb2.ItemError(reason=value, message="what went wrong"))
    error = E.from_rpc_error(exc)
    assert type(error) is EXPECTED[reason]
    assert error.reason == reason
    assert error.code == CODE_OF_REASON[value].name
    assert error.message == "what went wrong"
    assert error.retryable == (reason in RETRYABLE)
    assert not isinstance(error, grpc.RpcError)


def test_status_without_reason_is_classed_by_code() -> None:
    def bare(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
        return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), "x", None)

    unavailable = E.from_rpc_error(bare(grpc.StatusCode.UNAVAILABLE))
    assert type(unavailable) is E.Unavailable and unavailable.retryable
    assert unavailable.reason == "" and unavailable.code == "UNAVAILABLE"
    deadline = E.from_rpc_error(bare(grpc.StatusCode.DEADLINE_EXCEEDED))
    assert type(deadline) is E.Unavailable
    # A code dltmw never sends on purpose is the base class, naming the code, not retryable.
    internal = E.from_rpc_error(bare(grpc.StatusCode.INTERNAL))
    assert type(internal) is E.Error and internal.code == "INTERNAL" and not internal.retryable


def test_a_stream_lost_under_a_write_is_unavailable() -> None:
    """grpc's asyncio client reports a write on a stream that already ended (its gateway
    killed) as INTERNAL "Internal error from Core" with no ErrorInfo (grpc/grpc#36066): the
    SDK takes it for the connection's loss and fails over (a fresh clone's test_sdk_failover
    raised it to the caller). Red without the `_LOST_STREAM` case in `from_rpc_error`."""
    lost = grpc.aio.AioRpcError(
        grpc.StatusCode.INTERNAL,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(),
        "Internal error from Core",
        'Failed "execute_batch": (SendMessageOperation,)',
    )
    error = E.from_rpc_error(lost)
    assert type(error) is E.Unavailable and error.retryable and error.code == "INTERNAL"


def test_commit_failed_names_code_block_and_tx() -> None:
    error = E.CommitFailed("ab" * 32, "MVCC_READ_CONFLICT", 7)
    assert error.validation_code == "MVCC_READ_CONFLICT" and error.block_number == 7
    assert "MVCC_READ_CONFLICT" in str(error) and "block 7" in str(error)
    assert not error.retryable
