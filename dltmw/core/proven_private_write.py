"""What a VALID *private* transaction on another channel wrote: `proven_write` for the private
leg of a transfer (docs/cross-channel.md "A private leg").

A private transaction's public envelope carries only its payload hash and the recipients'
agreements; what it wrote lives in the recipients' private states. So a verifier is shown three
things and believes the record only if all hold together:

1. the commit proof (`commit_proof.verify_proof`) of a VALID `HEADER_TYPE_PRIVATE_TRANSACTION`
   envelope whose data is exactly a `PrivateTransaction` (nothing rides along in clear);
2. its agreements: the channel's config at that height requires `ALL_RECIPIENTS`, and the same
   commit rule every node of that channel ran (`core/privacy/agreement.agreement_code`,
   signatures judged at the envelope's header time) finds them VALID — every recipient, a peer
   of the channel named in its config, AGREEd to one delta hash; and every peer of each
   organisation the terms name for the leg, and the auditors, are exactly the recipients (the
   parties the leg pays hold the state; and only transactions among the same set conflict,
   `leg_recipient_keys`);
3. the disclosure: the outcome (status, response, resulting value of every key touched) whose
   `core/privacy/execution.state_hash` is that agreed delta hash — the bytes every recipient
   holds, not a story told by whoever presents the proof — in the fixed form of a private `xfer`
   lock or abort (`core/private_leg.disclosed_record`), with `xfer` the channel's built-in.

Trust: the channel's orderers and attesting peers (as for any commit proof) plus the agreeing
recipients (they signed the hash of what they computed; a recipient set that lies together can
disclose anything — they are the leg's own parties). Pure; `at` is an input.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from google.protobuf.message import DecodeError

from dltmw.core.channel import ChannelView
from dltmw.core.commit_proof import ProofError, verify_proof
from dltmw.core.light_client import LightClient
from dltmw.core.privacy.agreement import ALL_RECIPIENTS, agreed_body, agreement_code
from dltmw.core.privacy.execution import state_hash
from dltmw.core.private_leg import (
    MALFORMED,
    PrivateLegError,
    disclosed_record,
    parse_disclosure,
)
from dltmw.core.proven_write import MISMATCH, ProvenWrite, check_builtin
from dltmw.core.txcheck import private_transaction
from dltmw.v1 import (
    common_pb2,
    errors_pb2,
    private_leg_pb2,
    transaction_pb2,
)

R = errors_pb2
C = transaction_pb2
DISCLOSURE_MISMATCH = R.ERROR_REASON_PRIVATE_DISCLOSURE_MISMATCH
AGREEMENT_INVALID = R.ERROR_REASON_PRIVATE_LEG_AGREEMENT_INVALID


def parse_leg_proof(data: bytes) -> private_leg_pb2.PrivateLegProof:
    """A PrivateLegProof, or PRIVATE_LEG_MALFORMED."""
    try:
        proof = private_leg_pb2.PrivateLegProof.FromString(data)
    except DecodeError as exc:
        raise PrivateLegError(MALFORMED, f"a private leg proof does not parse: {exc}") from exc
    if not proof.HasField("commit_proof"):
        raise PrivateLegError(MALFORMED, "a private leg proof needs a commit proof")
    return proof


def proven_private_write(
    client: LightClient, data: bytes, at: datetime, recipients: Sequence[str]
) -> ProvenWrite:
    """The `t/<id>` value the private transaction proven VALID by `data` (a PrivateLegProof)
    wrote on `client`'s channel, as every recipient holds it; `recipients` = the organisations
    the terms name for the leg. ProofError / PrivateLegError saying why not (module docstring).
    The caller compares the record's channel and id with what it needs (PROOF_MISMATCH)."""
    leg_proof = parse_leg_proof(data)
    proven = verify_proof(leg_proof.commit_proof, client, at)
    if proven.code != C.TX_VALIDATION_CODE_VALID:
        raise ProofError(MISMATCH, "the proven transaction is not VALID")
    view = client.view_at(proven.block_number)
    check_builtin(view, "xfer", proven.channel_id)
    header, ptx = _private_envelope(proven.envelope)
    _check_agreements(view, header, ptx, recipients)
    disclosure = parse_disclosure(leg_proof.disclosure)
    d = disclosure
    agreed = agreed_body(ptx.agreements)
    digest = state_hash(d.status, d.response, d.namespace, d.values)
    if agreed is None or digest != agreed.delta_hash:
        raise PrivateLegError(
            DISCLOSURE_MISMATCH,
            "the disclosed outcome is not the one the recipients agreed to (delta hash differs)",
        )
    _, record = disclosed_record(disclosure)
    return ProvenWrite(proven.channel_id, proven.block_number, record)


def _private_envelope(
    envelope: bytes,
) -> tuple[common_pb2.Header, C.PrivateTransaction]:
    """(header, data) of a private transaction's envelope; PRIVATE_LEG_MALFORMED for any other."""
    try:
        payload = common_pb2.Payload.FromString(common_pb2.Envelope.FromString(envelope).payload)
        header = common_pb2.Header.FromString(payload.header)
    except DecodeError as exc:
        raise PrivateLegError(MALFORMED, f"the proven envelope does not parse: {exc}") from exc
    ptx = private_transaction(payload.data)
    if header.type != common_pb2.HEADER_TYPE_PRIVATE_TRANSACTION or ptx is None:
        raise PrivateLegError(MALFORMED, "the proven transaction is not a private transaction")
    if not ptx.payload_hash:
        raise PrivateLegError(MALFORMED, "the proven private transaction carries no payload")
    return header, ptx


def _check_agreements(
    view: ChannelView,
    header: common_pb2.Header,
    ptx: C.PrivateTransaction,
    recipients: Sequence[str],
) -> None:
    """Point 2 of the module docstring."""
    if view.config.private_agreement != ALL_RECIPIENTS:
        raise PrivateLegError(
            AGREEMENT_INVALID, f"{view.channel_id} does not require every recipient's agreement"
        )
    at = header.timestamp.ToDatetime(tzinfo=UTC)
    code = agreement_code(ptx.agreements, view, header.tx_id, ptx.payload_hash, at)
    if code != C.TX_VALIDATION_CODE_VALID:
        name = C.TxValidationCode.Name(code)  # type: ignore[arg-type]
        raise PrivateLegError(AGREEMENT_INVALID, f"the agreements do not hold: {name}")
    body = agreed_body(ptx.agreements)
    holders = set(body.recipient_keys) if body is not None else set()
    if holders != leg_recipient_keys(view, recipients):
        raise PrivateLegError(
            AGREEMENT_INVALID,
            f"the recipients are not exactly the peers of {', '.join(recipients)} and the "
            "auditors the terms name for the leg",
        )


def leg_recipient_keys(view: ChannelView, recipients: Sequence[str]) -> set[bytes]:
    """The privacy keys every transaction of the leg must be sealed for: the peers of the
    organisations the terms name, and the channel's auditors (who hold every payload).
    Exactly these, not a superset: the private-state conflict rule (PRIVATE_STATE_CONFLICT)
    scopes its hashed keys by the recipient set, so only transactions among the SAME set are
    ordered against each other; a pabort sealed for one more node would not conflict with a
    concurrent plock, and both could be proven (docs/cross-channel.md "A private leg")."""
    auditors = set(view.config.privacy_auditors)
    keys = {
        p.privacy_public_key
        for p in view.config.peers
        if p.org_id in recipients or p.node_id in auditors
    }
    named = {p.org_id for p in view.config.peers if p.privacy_public_key}
    if b"" in keys or not set(recipients) <= named:
        return {b""}  # a named organisation without a peer with a privacy key: nothing matches
    return keys
