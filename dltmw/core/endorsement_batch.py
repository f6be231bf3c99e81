"""Endorsements signed per batch: one signature over a Merkle root of many endorsements.

Why: with distinct keys and two organisations' AND, every transaction carried two endorsement
signatures (~23 µs each to make) and every peer verified the OTHER peer's at commit, and the
gateway verified it too (~62 µs each): about a fifth of the signature work of the whole path
(benchmarks/RESULTS.md, branch kvcpu). An endorser answers many proposals together (one
ProcessProposals message, one simulation batch of `Channel.endorse_many`), so it signs ONE
root over the endorsements of that batch (`core/batch_signature.py`, the shared rule); each
endorsement carries its inclusion proof (`Endorsement.batch_proof`). A node checking an
endorsement recomputes the root from the endorsement's own signed bytes and the proof and
verifies the signature over the root through `Membership.verify`, whose memo answers the
batch's other transactions: about one verification per endorser per batch.

What is accepted stays what was accepted before. The leaf is the very bytes a lone endorsement
signs, (response payload || endorser); a batch signature is over BATCH_DOMAIN || root.
Neither can pass for the other: the bytes of a batch signature begin with b"d" (0x64), which as
the first byte of a response payload is the tag of field 12 with wire type 4 (END_GROUP), a
payload that does not parse (the commit rule parses it, INVALID_ENDORSER_TRANSACTION), and an
empty payload has no proposal_hash; conversely, a lone signature passes as a batch one only if
(payload || endorser) were that domain and a SHA-256 root. A proof for one position cannot be
replayed for another or for a tree of another size (`merkle.root_from_path`), and leaves and
inner nodes are hashed apart (RFC 6962), so no inner node passes for an endorsement.

Only on channels whose config says so (`ChannelConfig.endorsement_batches`): peers of an
older release do not know batch proofs and would not count such an endorsement where newer
ones did; on a channel without the flag an endorsement with a proof counts for nothing on
every node (`signed_data` returns None), and endorsers sign alone. A batch of one is signed
alone (no proof): nothing to share, and a lone signature is what every release accepts.

On a channel with `ChannelConfig.identity_references` an endorser that the config lists signs
as its reference (`Endorsement.endorser` ~40 bytes instead of ~450, core/identity.py): the
signed bytes are (payload || endorser) as sent, so the reference is what the signature binds.
"""

from __future__ import annotations

from collections.abc import Sequence

from dltmw.core import batch_signature
from dltmw.core.identity import Membership, SigningIdentity
from dltmw.v1 import proposal_pb2

BATCH_DOMAIN = b"dltmw/endorsement-batch/v1"


def signing_bytes(payload: bytes, endorser: bytes) -> bytes:
    """What an endorser signs alone, and a batch's leaf: the response payload, then the
    endorser's serialised identity."""
    return payload + endorser


def signed_data(e: proposal_pb2.Endorsement, payload: bytes, batches: bool) -> bytes | None:
    """The bytes `e.signature` must verify over for response payload `payload`, or None when
    its batch proof cannot be right: a malformed path, or any proof on a channel without
    endorsement batches (`batches`)."""
    proof = e.batch_proof if e.HasField("batch_proof") else None
    leaf = signing_bytes(payload, e.endorser)
    return batch_signature.signed_data(leaf, proof, batches, BATCH_DOMAIN)


def sign(
    signer: SigningIdentity, membership: Membership, payloads: Sequence[bytes], batches: bool
) -> list[proposal_pb2.Endorsement]:
    """`signer`'s endorsements of `payloads` (serialised ProposalResponsePayload), in order:
    ONE signature over their Merkle root when there are several and the channel signs in
    batches (`batches`), else one signature each. Each signature is remembered as this node's
    own (`Membership.remember_own_signature`): the node checks its endorsements again at
    commit, and its own need no public-key operation there. The endorser is named by its
    reference where the channel takes them and lists it (`Membership.reference_of`)."""
    me = membership.reference_of(signer.identity_bytes)
    leaves = [signing_bytes(p, me) for p in payloads]
    signed = batch_signature.sign_items(signer, leaves, BATCH_DOMAIN, batches, membership)
    return [
        proposal_pb2.Endorsement(
            endorser=me,
            signature=signature,
            batch_proof=None if proof is None else batch_signature.wire_proof(proof),
        )
        for signature, proof in signed
    ]
