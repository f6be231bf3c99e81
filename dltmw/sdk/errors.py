"""Typed exceptions of the SDK: what a program embedding dltmw catches instead of gRPC errors.

Every failed call to a dltmw node carries a status code and an `ErrorInfo` reason
(`docs/wire.md`); this module turns that pair into one exception class per thing a caller does
differently — fix the request, ask for permission, retry, give up on a refused contract call —
so no `grpc.aio.AioRpcError` reaches the user. Every exception keeps the reason's short name
(`reason`), the gRPC status name (`code`), the server's message and the ErrorInfo metadata, and
says whether the same request may succeed later (`retryable`: the SDK has already retried
those it could, within its deadline, before raising).

A transaction that was ordered but committed with a code other than VALID raises
`CommitFailed` (the ledger keeps it, with its code: it cannot be "retried" under the same tx id).
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc

from dltmw.aio.rpc_errors import error_info

__all__ = [
    "AgreementPending",
    "AlreadyExists",
    "CommitFailed",
    "CommitUnknown",
    "ContractRefused",
    "DeliveryGivenUp",
    "EndorsementFailed",
    "Error",
    "InputConsumed",
    "InvalidRequest",
    "LimitExceeded",
    "NotFound",
    "Overloaded",
    "PayloadPurged",
    "PermissionDenied",
    "PreconditionFailed",
    "StaleRead",
    "Unavailable",
    "from_rpc_error",
]


class Error(Exception):
    """A dltmw call failed; `reason` is the ErrorInfo reason ("" when the node sent none)."""

    retryable = False

    def __init__(
        self, message: str, reason: str = "", code: str = "", metadata: Mapping[str, str] = {}
    ) -> None:
        super().__init__(f"{reason or code or 'ERROR'}: {message}")
        self.message = message
        self.reason = reason
        self.code = code
        self.metadata = dict(metadata)


class InvalidRequest(Error):
    """The request is malformed or names something invalid: fix it (INVALID_ARGUMENT)."""


class PermissionDenied(Error):
    """Bad signature, not a member, not authorised (PERMISSION_DENIED)."""


class AlreadyExists(Error):
    """The transaction id is already on the ledger or in flight (ALREADY_EXISTS)."""


class PreconditionFailed(Error):
    """The node cannot serve this request in its present state (FAILED_PRECONDITION)."""


class NotFound(PreconditionFailed):
    """The channel, contract or item named does not exist (CHANNEL/CONTRACT_NOT_FOUND, ...)."""


class PayloadPurged(PreconditionFailed):
    """A private payload the client's organisation was a recipient of was removed from its
    node by a purge transaction (PAYLOAD_PURGED, FAILED_PRECONDITION): it will never be
    readable there again. Not a `NotFound`: that is "not a recipient" to `receive_private`.
    `purge_tx_id` and `block_number` name the purge (ErrorInfo metadata)."""

    @property
    def purge_tx_id(self) -> str:
        """The tx id of the purge transaction that removed the payload."""
        return self.metadata.get("purge_tx_id", "")

    @property
    def block_number(self) -> int:
        """The block that carried the purge (-1 when the node did not say)."""
        return int(self.metadata.get("block_number", "-1"))


class DeliveryGivenUp(PreconditionFailed):
    """A private transaction to collect (or resume) whose payload's sending node gave up its
    delivery to some recipient (PRIVATE_DELIVERY_GIVEN_UP, FAILED_PRECONDITION): abandoned
    (`abandon_private`, `dltmw private abandon`), expired (`[private] delivery_expiry_s`) or
    the recipient was removed (from the channel config, or from the privacy group the payload
    was sent to). Its node will not order it, so resuming cannot succeed: answered at once,
    instead of the `AgreementPending` a resume would end in after its whole deadline. Not
    `retryable`. `nodes` and `states` (EXPIRED, RECIPIENT_REMOVED, ABANDONED, in the order of
    `nodes`) come from the ErrorInfo metadata (docs/privacy.md, "Queued delivery")."""

    @property
    def nodes(self) -> tuple[str, ...]:
        """The recipient nodes whose delivery was given up."""
        return tuple(n for n in self.metadata.get("nodes", "").split(",") if n)

    @property
    def states(self) -> dict[str, str]:
        """node -> why its delivery was given up (EXPIRED, RECIPIENT_REMOVED, ABANDONED)."""
        states = self.metadata.get("state", "").split(",")
        return dict(zip(self.nodes, states, strict=False))


class ContractRefused(Error):
    """The contract refused the call (its own reason in `message`; ABORTED/CONTRACT_FAILED)."""


class EndorsementFailed(Error):
    """The endorsers disagreed or the policy cannot be met (ENDORSEMENT_MISMATCH/UNSATISFIABLE);
    a mismatch is retryable (the endorsers were at different heights)."""


class InputConsumed(Error):
    """A UTXO input was already consumed (a double spend; the notary's conflict)."""


class LimitExceeded(Error):
    """The request is beyond a configured limit: make it smaller (RESOURCE_EXHAUSTED)."""


class Overloaded(Error):
    """The node refused for load: the same request may succeed later."""

    retryable = True


class Unavailable(Error):
    """The node is unreachable, stopping, behind or slow: the same request may succeed later."""

    retryable = True


class AgreementPending(Unavailable):
    """A private transaction's payload was sent, but a recipient's agreement did not come within
    the client's deadline (PRIVATE_AGREEMENT_TIMEOUT, UNAVAILABLE): the recipient is down and
    its delivery is queued by the sender's node, or slow. Nothing was ordered. `nodes` are the
    recipients missing; `Client.resume_private(error)` collects again for the same `tx_id`
    and `payload_hash` and submits it — never a second payload (docs/privacy.md, "Queued
    delivery")."""

    def __init__(
        self,
        message: str,
        metadata: Mapping[str, str],
        channel_id: str,
        payload_hash: bytes,
        tx_id: str,
        nonce: bytes | None,
        creator: bytes | None = None,
    ) -> None:
        super().__init__(
            message, reason="PRIVATE_AGREEMENT_TIMEOUT", code="UNAVAILABLE", metadata=metadata
        )
        self.channel_id = channel_id
        self.payload_hash = payload_hash
        self.tx_id = tx_id
        self.nonce = nonce
        self.creator = creator  # as the tx id names it (None: in full), for the resume

    @property
    def nodes(self) -> tuple[str, ...]:
        """The recipient nodes whose agreement is missing."""
        return tuple(sorted(n for n in self.metadata.get("nodes", "").split(",") if n))


class StaleRead(Error):
    """Refused before ordering (STALE_READ, ABORTED): a version the transaction read has since
    been replaced at the gateway's peer, so every peer would invalidate it. Nothing was ordered;
    run the transaction again (a new endorsement on the current state) — `retryable`."""

    retryable = True


class CommitFailed(Error):
    """The transaction was ordered but committed with `validation_code` (not VALID)."""

    def __init__(self, tx_id: str, validation_code: str, block_number: int) -> None:
        super().__init__(
            f"transaction {tx_id} committed in block {block_number} as {validation_code}",
            reason=validation_code,
            code="COMMITTED",
            metadata={"tx_id": tx_id, "block_number": str(block_number)},
        )
        self.tx_id = tx_id
        self.validation_code = validation_code
        self.block_number = block_number


class CommitUnknown(Error):
    """The transaction was handed on to be ordered, but its commit was not seen: every gateway
    failed or was slow until the deadline, or a gateway the client failed over to refused it
    after the first may already have handed it to the orderer. It may commit yet, or may never
    have reached an orderer. `tx_id` and `channel_id` name it; `reason` / `code` / `message`
    are those of the last failure. `Client.resume_submit(error)` offers the same transaction
    (tx id) again and waits for its commit (a copy already ordered is refused as a duplicate or
    committed as DUPLICATE_TXID, never applied), so it is applied at most once; its tx id can
    also be looked for in `Client.blocks`. Calling `submit` again instead would be a second
    transaction under a new tx id — hence not `retryable` (Fabric's gateway SDKs carry the tx
    id in their commit errors for the same reason)."""

    def __init__(
        self,
        cause: Error,
        channel_id: str,
        tx_id: str,
        payload: bytes,
        result: bytes,
        creator: bytes,
    ) -> None:
        super().__init__(
            f"transaction {tx_id} may or may not commit: {cause.message}",
            reason=cause.reason,
            code=cause.code,
            metadata={**cause.metadata, "tx_id": tx_id},
        )
        self.channel_id = channel_id
        self.tx_id = tx_id
        self.payload = payload  # the endorsed transaction (signed again by `resume_submit`)
        self.result = result  # the contract's answer at endorsement
        self.creator = creator  # as the tx id names it


# The class for each reason that needs its own; otherwise the class of the status code.
_BY_REASON: dict[str, type[Error]] = {
    "NOT_FOUND": NotFound,
    "CHANNEL_NOT_FOUND": NotFound,
    "CONTRACT_NOT_FOUND": NotFound,
    "PACKAGE_NOT_INSTALLED": NotFound,
    "CONFIG_SEQUENCE_STALE": PreconditionFailed,  # ABORTED, but no contract refused anything
    "CONTRACT_FAILED": ContractRefused,
    "ENDORSEMENT_MISMATCH": EndorsementFailed,
    "ENDORSEMENT_POLICY_UNSATISFIABLE": EndorsementFailed,
    "INPUT_CONSUMED": InputConsumed,
    "OVERLOADED": Overloaded,
    "LIMIT_EXCEEDED": LimitExceeded,
    "MESSAGE_TOO_LARGE": LimitExceeded,
    "STALE_READ": StaleRead,
    "PAYLOAD_PURGED": PayloadPurged,
    "PRIVATE_DELIVERY_GIVEN_UP": DeliveryGivenUp,
}
S = grpc.StatusCode
_BY_CODE: dict[grpc.StatusCode, type[Error]] = {
    S.INVALID_ARGUMENT: InvalidRequest,
    S.PERMISSION_DENIED: PermissionDenied,
    S.UNAUTHENTICATED: PermissionDenied,
    S.ALREADY_EXISTS: AlreadyExists,
    S.FAILED_PRECONDITION: PreconditionFailed,
    S.NOT_FOUND: NotFound,
    S.ABORTED: ContractRefused,
    S.RESOURCE_EXHAUSTED: Overloaded,
    S.UNAVAILABLE: Unavailable,
    S.DEADLINE_EXCEEDED: Unavailable,
    S.CANCELLED: Unavailable,
}
RETRYABLE_REASONS = frozenset({"ENDORSEMENT_MISMATCH"})
# What grpc's asyncio client reports when a stream write fails because the stream has already
# ended — a gateway killed under a Transact stream — in place of the stream's own status
# (grpc/grpc#36066; fix proposed in grpc/grpc#43486). No dltmw node answers INTERNAL on
# purpose, and such a status carries no ErrorInfo: it is the connection's loss, Unavailable
# (the SDK's steps repeat on another gateway with the same tx id). Seen in a fresh clone's
# test_sdk_failover, stop 58.
_LOST_STREAM = "Internal error from Core"


def from_rpc_error(exc: grpc.aio.AioRpcError) -> Error:
    """The typed exception for a failed call (a code dltmw never answers with on purpose —
    UNKNOWN, INTERNAL, UNIMPLEMENTED — is an `Error` naming the code)."""
    info = error_info(exc)
    reason = info.reason if info is not None else ""
    metadata = dict(info.metadata) if info is not None else {}
    cls = _BY_REASON.get(reason) or _BY_CODE.get(exc.code(), Error)
    if info is None and exc.code() == S.INTERNAL and exc.details() == _LOST_STREAM:
        cls = Unavailable
    message = (exc.details() or "").removeprefix(f"{reason}: ")
    error = cls(message, reason=reason, code=exc.code().name, metadata=metadata)
    if reason in RETRYABLE_REASONS:
        error.retryable = True
    return error
