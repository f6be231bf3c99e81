"""Agreements signed per batch: one signature over a Merkle root of many agreements.

Why: every node checks every agreement of every private transaction at commit, so with one
signature per agreement a network of n recipients verified ~n² P-256 signatures per transaction
(with 10 recipients ~110 per transaction, a sixth of every peer's CPU; with 2, six per
transaction in all) and each recipient signed once per transaction. A recipient answers a
whole AgreeBatch at once, and a sender collects many transactions at once, so the party signs
ONE root over the batch's agreements (as a notary signs one root per batch of decisions,
`core/notarisation_proof.py`); each agreement carries its inclusion proof
(`PrivateAgreement.batch_proof`). A node checking the agreements of a block recomputes the
root from the agreement's own signed bytes and the proof, then verifies the signature over the
root with `Membership.verify`, whose verified-signature memo answers the batch's other
transactions without a public-key operation. So a node verifies each party's signature about
once per batch, and what it accepts is exactly what it accepted before: the leaf is the very
bytes a lone signature covers ("dltmw/pp/agreement/v1" || body), the root signature is under
its own domain ("dltmw/pp/agreement-batch/v1"), so neither form can pass for the other, and a
proof for one position cannot be replayed for another or for a tree of another size
(`merkle.root_from_path`).

Only on channels whose config says so (`ChannelConfig.private_agreement_batches`, set by
`dltmw init`): peers of an older release do not know batch proofs and would record such an
agreement BAD_SIGNATURE while newer ones recorded VALID; on a channel without the flag a batch
proof is BAD_SIGNATURE on every node (`signed_data` returns None), and signers sign alone.
"""

from __future__ import annotations

from collections.abc import Sequence

from dltmw.core import batch_signature
from dltmw.core.identity import Membership, SigningIdentity
from dltmw.v1 import private_agreement_pb2

A = private_agreement_pb2
AGREEMENT_DOMAIN = b"dltmw/pp/agreement/v1"
BATCH_DOMAIN = b"dltmw/pp/agreement-batch/v1"


def signing_bytes(body: bytes) -> bytes:
    """What a party signs alone, and a batch's leaf: the domain, then the serialised body."""
    return AGREEMENT_DOMAIN + body


def batch_signing_bytes(root: bytes) -> bytes:
    """What a party signs for a batch: the batch domain, then the Merkle root."""
    return BATCH_DOMAIN + root


def signed_data(agreement: A.PrivateAgreement, batches: bool) -> bytes | None:
    """The bytes `agreement.signature` must verify over, or None when its batch proof cannot be
    right: a malformed path, or any batch proof on a channel without batches (`batches`)."""
    proof = agreement.batch_proof if agreement.HasField("batch_proof") else None
    return batch_signature.signed_data(signing_bytes(agreement.body), proof, batches, BATCH_DOMAIN)


def batch(bodies: Sequence[bytes]) -> tuple[bytes, list[A.AgreementBatchProof]]:
    """(the bytes to sign once, one proof per body in order) for a batch of serialised bodies."""
    data, proofs = batch_signature.batch([signing_bytes(b) for b in bodies], BATCH_DOMAIN)
    return data, [_proof(p) for p in proofs]


def _proof(p: batch_signature.Proof) -> A.AgreementBatchProof:
    return A.AgreementBatchProof(leaf_index=p.index, leaf_count=p.count, path=p.path)


def sign(
    signer: SigningIdentity, membership: Membership, bodies: Sequence[bytes], batches: bool
) -> list[A.PrivateAgreement]:
    """`signer`'s agreements over `bodies` (serialised PrivateAgreementBody): ONE signature over
    their Merkle root when there are several and the channel signs in batches (`batches`), else
    one signature each. Each signature is remembered as this node's own
    (`Membership.remember_own_signature`): the node checks every agreement again at admission
    (as the gateway) and at commit, and its own needs no public-key operation there. The
    signer is named by its reference where the channel takes them and lists it
    (`Membership.reference_of`, core/identity.py)."""
    signed = batch_signature.sign_items(
        signer, [signing_bytes(b) for b in bodies], BATCH_DOMAIN, batches, membership
    )
    me = membership.reference_of(signer.identity_bytes)
    return [
        A.PrivateAgreement(
            body=b,
            signer=me,
            signature=signature,
            batch_proof=None if proof is None else _proof(proof),
        )
        for b, (signature, proof) in zip(bodies, signed, strict=True)
    ]
