"""Agreement before commit: what a recipient signs, and the commit-time check of what it signed.

Every recipient of a private payload executes it on its own private state BEFORE the hash-only
transaction is ordered and signs a `PrivateAgreementBody` (tx_id, payload hash, pre-state hash,
delta hash, the recipients' keys, AGREE or DISAGREE); the transaction carries the signatures
(`PrivateTransaction.agreements`). docs/privacy.md "Agreement before commit" has the design.

`agreement_code` is the commit rule and runs on EVERY node, recipients or not: it is a pure
function of the transaction's bytes and the channel config (signatures judged at the header
timestamp), so every node records the same validation code. What it cannot judge — whether a
recipient's private keys still hold the agreed pre-state — is the recipients' own check at
execution (`core/privacy/blocks.py`, STALE). The gateway's admission runs the same rule and
refuses the codes only a faulty submitter produces (`SUBMITTER_FAULTS`); a disagreement or a
mismatch between parties is ordered so that every node sees the divergence on the ledger. The
orderer does not run it (`txcheck.check_envelope`, `agreements`): commit does, everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from google.protobuf.message import DecodeError

from dltmw.core.channel import ChannelView
from dltmw.core.identity import IdentityError, UnknownReference
from dltmw.core.policy import PolicyResult
from dltmw.core.privacy import agreement_batch
from dltmw.core.privacy.agreement_policy import EXPRESSION, policy_result, requires_agreements
from dltmw.v1 import errors_pb2, private_agreement_pb2, transaction_pb2
from dltmw.v1.private_conflict_pb2 import HashedRead

A = private_agreement_pb2
C = transaction_pb2
R = errors_pb2
AGREE = A.AGREEMENT_VERDICT_AGREE
DISAGREE = A.AGREEMENT_VERDICT_DISAGREE
ALL_RECIPIENTS = A.PRIVATE_AGREEMENT_POLICY_ALL_RECIPIENTS
VALID = C.TX_VALIDATION_CODE_VALID
MISSING = C.TX_VALIDATION_CODE_PRIVATE_AGREEMENT_MISSING
BAD_SIGNATURE = C.TX_VALIDATION_CODE_PRIVATE_AGREEMENT_BAD_SIGNATURE
NOT_RECIPIENT = C.TX_VALIDATION_CODE_PRIVATE_AGREEMENT_NOT_RECIPIENT
WRONG_TX = C.TX_VALIDATION_CODE_PRIVATE_AGREEMENT_WRONG_TX
MISMATCH = C.TX_VALIDATION_CODE_PRIVATE_AGREEMENT_MISMATCH
DISAGREED = C.TX_VALIDATION_CODE_PRIVATE_AGREEMENT_DISAGREED
UNKNOWN_REFERENCE = C.TX_VALIDATION_CODE_UNKNOWN_IDENTITY_REFERENCE
# Refused at admission with these reasons: only a faulty (or malicious) submitter makes them.
SUBMITTER_FAULTS: dict[int, int] = {
    MISSING: R.ERROR_REASON_PRIVATE_AGREEMENT_MISSING,
    BAD_SIGNATURE: R.ERROR_REASON_PRIVATE_AGREEMENT_BAD_SIGNATURE,
    NOT_RECIPIENT: R.ERROR_REASON_PRIVATE_AGREEMENT_NOT_RECIPIENT,
    WRONG_TX: R.ERROR_REASON_PRIVATE_AGREEMENT_WRONG_TX,
    UNKNOWN_REFERENCE: R.ERROR_REASON_UNKNOWN_IDENTITY_REFERENCE,
}
# What a party signs alone (`agreement_batch.py` also builds batches from it).
signing_bytes = agreement_batch.signing_bytes


def agreement_body(
    channel_id: str,
    tx_id: str,
    payload_hash: bytes,
    hashes: tuple[bytes, bytes],
    recipient_keys: Sequence[bytes],
    verdict: int,
    hashed: tuple[Sequence[HashedRead], Sequence[bytes], Sequence[bytes]] = ((), (), ()),
    sender_key: bytes = b"",
) -> bytes:
    """The serialised body one party signs; `hashes` = (pre-state hash, delta hash), `hashed`
    = the keys its execution read and wrote (`core/privacy/conflict.py`)."""
    pre, delta = hashes
    return A.PrivateAgreementBody(
        hashed_reads=hashed[0],
        hashed_writes=hashed[1],
        hashed_deletes=hashed[2],
        channel_id=channel_id,
        tx_id=tx_id,
        payload_hash=payload_hash,
        pre_state_hash=pre,
        delta_hash=delta,
        recipient_keys=sorted(recipient_keys),
        verdict=verdict,  # type: ignore[arg-type]
        sender_key=sender_key,
    ).SerializeToString()


def verdict_on(own: tuple[bytes, bytes], proposed: tuple[bytes, bytes]) -> int:
    """AGREE iff this party's (pre-state, delta) hashes are the proposed ones."""
    return AGREE if own == proposed else DISAGREE


def agreement_code(
    agreements: Sequence[A.PrivateAgreement],
    channel: ChannelView,
    tx_id: str,
    payload_hash: bytes,
    at: datetime,
) -> int:
    """The validation code the agreements give a private transaction (VALID if they hold).
    An agreement signed in a batch is checked through its proof (`agreement_batch.py`).

    Total: any bytes give a code. Checked per agreement in this order: signature (51; a signer
    by reference the config does not list: 70, `core/identity.py`), signer a
    recipient (52), same transaction (53); then over all: a DISAGREE (55), the same hashes,
    recipients and sender (54), the signers enough (50): every recipient, or under a policy
    expression the sender and a set satisfying it (`agreement_policy.py`)."""
    if not agreements:
        return MISSING if requires_agreements(channel.config) else VALID
    peers = channel.config.peers
    if len(agreements) > len(peers):
        return NOT_RECIPIENT  # more signers than the channel has peers
    bodies: list[A.PrivateAgreementBody] = []
    signer_keys: set[bytes] = set()
    # Each signer looked up once in a map, not by a scan of the peers per agreement: every node
    # checks every recipient's agreement of every transaction, so a scan was O(recipients²) per
    # transaction and node (6 % of a peer's GIL time with 10 recipients, benchmarks/RESULTS.md).
    key_of: dict[bytes, bytes] = {}
    for n in peers:
        key_of.setdefault(n.identity, n.privacy_public_key)  # the first, as a scan finds it
    batches = channel.config.private_agreement_batches
    # Each distinct body parsed once: the parties of a transaction that agree sign the very same
    # body bytes (it names no signer), so with 10 recipients 11 parses were 10 too many. Keyed
    # by the exact bytes, so a party's other body is parsed, and judged, on its own; only the
    # parse is shared, each signature is still checked over its own proof (test_agreement_batch).
    parsed: dict[bytes, A.PrivateAgreementBody] = {}
    for agreement in agreements:
        # A batch's root: the memo answers its other transactions (`agreement_batch.py`).
        data = agreement_batch.signed_data(agreement, batches)
        if data is None:
            return BAD_SIGNATURE
        try:
            body = parsed.get(agreement.body)
            if body is None:
                body = parsed[agreement.body] = A.PrivateAgreementBody.FromString(agreement.body)
            who = channel.membership.verify(agreement.signer, data, agreement.signature, at)
        except UnknownReference:
            return UNKNOWN_REFERENCE
        except (DecodeError, IdentityError):
            return BAD_SIGNATURE
        if body.verdict not in (AGREE, DISAGREE):
            return BAD_SIGNATURE
        # The signer in full: the bytes as sent, or the config identity its reference names.
        key = key_of.get(who.identity_bytes, b"")
        if not key or key not in body.recipient_keys:
            return NOT_RECIPIENT
        if key in signer_keys:
            return BAD_SIGNATURE  # one party, one signature
        if (body.channel_id, body.tx_id, body.payload_hash) != (
            channel.channel_id,
            tx_id,
            payload_hash,
        ):
            return WRONG_TX
        signer_keys.add(key)
        bodies.append(body)
    if any(b.verdict == DISAGREE for b in bodies):
        return DISAGREED
    first = bodies[0]
    first_agreed = _agreed_on(first)  # (serialised once, not once per comparison)
    # A body parsed from the same bytes as the first (the same object, above) agrees with it.
    if any(b is not first and _agreed_on(b) != first_agreed for b in bodies[1:]):
        return MISMATCH
    if channel.config.private_agreement == EXPRESSION:
        result = policy_result(channel.config, first.recipient_keys, first.sender_key, signer_keys)
        return VALID if result is PolicyResult.SATISFIED else MISSING
    if signer_keys != set(first.recipient_keys):
        return MISSING
    return VALID


def _agreed_on(body: A.PrivateAgreementBody) -> tuple[object, ...]:
    """What every party's AGREE must name alike: hashes, recipients, the keys read and written."""
    reads = [r.SerializeToString(deterministic=True) for r in body.hashed_reads]
    return (
        body.pre_state_hash,
        body.delta_hash,
        list(body.recipient_keys),
        reads,
        list(body.hashed_writes),
        list(body.hashed_deletes),
        body.sender_key,
    )


def agreed_body(agreements: Sequence[A.PrivateAgreement]) -> A.PrivateAgreementBody | None:
    """The body the agreements of a VALID transaction agree on (the first's), or None."""
    return A.PrivateAgreementBody.FromString(agreements[0].body) if agreements else None
