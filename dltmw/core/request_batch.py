"""Requester batch signatures: one signature by a requester over a whole batch of notarisation
requests, instead of one per request (docs/utxo.md "Requester batch signatures").

Why: checking each request's ECDSA signature was half of a notary's CPU per notarisation. A
client that streams its requests in batches signs the batch once; the notary verifies that one
signature, then checks that every request of the batch names the signer as its requester.

What is signed: `"dltmw/notary-request-batch/v1" 0x00 || SHA-256(h_1 || ... || h_n)` with
`h_i = SHA-256(payload_i)`, the serialised NotarisationPayloads of the batch in order. Changing,
adding, removing or reordering a request changes the digest, so the signature no longer
verifies. The domain prefix keeps a batch signature from ever passing as a signature over one
payload (or over anything else this requester signs). The payload hashes are kept separate
(rather than hashing the payloads in one stream) so a notary cluster can split a signed batch
over several PBFT requests and still let every replica check the one signature: each part
carries the hashes of the whole batch (`check_part`).

What it replaces: only the per-request requester signature. Every other check of a request
(addressed to this notary, refs, tx_id recomputed, and for a validating notary the contracts and
every required signer's signature over the tx_id) is still done per request.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime

from dltmw.core.errors import ClientError
from dltmw.core.identity import IdentityError, Membership, SigningIdentity
from dltmw.v1 import errors_pb2, identity_pb2, notarisation_pb2, notary_service_pb2

R = errors_pb2
DOMAIN = b"dltmw/notary-request-batch/v1\x00"


def payload_hash(payload: bytes) -> bytes:
    """h_i: SHA-256 of one serialised NotarisationPayload."""
    return hashlib.sha256(payload).digest()


def signed_message(hashes: Iterable[bytes]) -> bytes:
    """The bytes a requester signs for a batch whose payloads hash to `hashes` (in order)."""
    return DOMAIN + hashlib.sha256(b"".join(hashes)).digest()


def sign_batch(
    payloads: Sequence[bytes], signer: SigningIdentity
) -> notary_service_pb2.NotariseStreamRequest:
    """A batch-signed NotariseStream message for serialised payloads (each naming `signer` as
    its requester): the requests carry no signature of their own."""
    message = notary_service_pb2.NotariseStreamRequest(
        requests=[notarisation_pb2.NotarisationRequest(payload=p) for p in payloads]
    )
    message.batch_signature.signer = signer.identity_bytes
    message.batch_signature.signature = signer.sign(signed_message(map(payload_hash, payloads)))
    return message


def check(
    signature: identity_pb2.Signature,
    hashes: Sequence[bytes],
    membership: Membership,
    now: datetime,
) -> bytes:
    """Verify a batch signature over payload hashes; the signer's identity bytes, or
    NOTARY_BATCH_SIGNATURE_INVALID. `Membership.verify` remembers what it verified, so a node
    that meets the same batch again (a cluster replica re-opening what it admitted, or the next
    part of a split batch) does no public-key operation."""
    if not signature.signer or not signature.signature:
        raise ClientError(
            R.ERROR_REASON_NOTARY_BATCH_SIGNATURE_INVALID, "batch signature or signer is missing"
        )
    try:
        membership.verify(signature.signer, signed_message(hashes), signature.signature, now)
    except IdentityError as exc:
        raise ClientError(
            R.ERROR_REASON_NOTARY_BATCH_SIGNATURE_INVALID,
            f"requester batch signature refused: {exc.message}",
        ) from None
    return signature.signer


def check_part(payloads: Sequence[bytes], hashes: Sequence[bytes]) -> list[bool]:
    """For each payload of a part of a signed batch: is it one the signature covers (its hash
    among the batch's `hashes`)? A part never adds requests the requester did not sign."""
    covered = set(hashes)
    return [payload_hash(p) in covered for p in payloads]
