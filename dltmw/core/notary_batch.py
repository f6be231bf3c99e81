"""A notary's batch signature: one signature over the Merkle root of the tx_ids it notarised in
one decided batch, and per transaction the leaf proof that puts its tx_id under that root.

Why: signing was 16 % of a single notary's time and every cluster replica signed every tx_id;
a batch of n decisions now costs one signature. What a signature proves is unchanged — "this
notary notarised this tx_id" — and anyone can still check it alone, offline, forever: with the
tx_id, the proof and the notary's certificate, recompute the root and verify the signature over
`BATCH_DOMAIN || root` (`signed_message`). The domain prefix keeps a batch signature from ever
passing as the older per-transaction kind (a signature over the tx_id's text, which carries no
proof and is still accepted, so transactions notarised before batch signing stay valid).

Stored form: a decided batch is kept once (`SignedBatch`: the signature and the tx_ids in leaf
order, from which every proof is rebuilt the same way), so a retried request gets the very same
answer, also after a restart. `encode`/`decode` are one tx_id's attestation in one value —
signature with its proof — as the notary stored it per tx_id before batches were kept once (and
as simulations keep it); rows written before batch signing hold a bare signature and decode with
no proof.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dltmw.core.errors import ClientError
from dltmw.core.merkle import PATH_MAX, Proof, Tree, root_of
from dltmw.v1 import errors_pb2, notarisation_pb2

BATCH_DOMAIN = b"dltmw/notary-batch/v1\x00"
_MAGIC = b"\xffNB1"  # never the first bytes of a DER (0x30) or raw signature stored before
_HEAD = struct.Struct(">H")
_TAIL = struct.Struct(">IIB")


@dataclass(frozen=True)
class SignedBatch:
    """One decided batch as stored: the notary's signature over the Merkle root of `tx_ids`
    (distinct, in leaf order). Every tx_id's proof follows from these alone (`proofs`)."""

    signature: bytes
    tx_ids: tuple[str, ...]

    def proofs(self) -> list[Proof]:
        """Each tx_id's proof, in order (rebuilt: the same proofs the answers carried)."""
        return Tree([t.encode() for t in self.tx_ids]).proofs()

    def attestations(self) -> list[tuple[str, bytes]]:
        """(tx_id, `encode`d signature and proof) of each tx_id, in order."""
        sig = self.signature
        return [(t, encode(sig, p)) for t, p in zip(self.tx_ids, self.proofs(), strict=True)]


def batch_message(root: bytes) -> bytes:
    """What a notary signs for a batch whose tx_id tree has `root`."""
    return BATCH_DOMAIN + root


def sign_batch(tx_ids: Sequence[str], sign: Callable[[bytes], bytes]) -> list[bytes]:
    """Sign the batch `tx_ids` (distinct, in decision order) once; the stored attestation of
    each, in the same order."""
    signature, proofs = sign_tree(tx_ids, sign)
    return [encode(signature, proof) for proof in proofs]


def sign_tree(tx_ids: Sequence[str], sign: Callable[[bytes], bytes]) -> tuple[bytes, list[Proof]]:
    """Sign the batch `tx_ids` once: the signature and each tx_id's proof, in order (what
    `sign_batch` encodes; the notary answers from these without decoding what it stores)."""
    tree = Tree([t.encode() for t in tx_ids])  # leaf = SHA-256(0x00 || tx_id UTF-8)
    signature = sign(batch_message(tree.root))
    return signature, tree.proofs()


def signed_message(tx_id: str, proof: Proof | None) -> bytes:
    """The bytes the notary's signature must verify over for `tx_id`: the batch message of the
    root its proof leads to, or (no proof: signed before batch signing) the tx_id's text.
    BAD_SIGNATURE when the proof cannot be a proof at all."""
    if proof is None:
        return tx_id.encode()
    root = root_of(tx_id.encode(), proof)
    if root is None:
        raise ClientError(
            errors_pb2.ERROR_REASON_BAD_SIGNATURE,
            f"the notary's batch proof for {tx_id} is malformed "
            f"(leaf {proof.index} of {proof.count}, {len(proof.path)} hashes)",
        )
    return batch_message(root)


def encode(signature: bytes, proof: Proof) -> bytes:
    """The stored attestation: signature and proof in one value."""
    path = b"".join(proof.path)
    return (
        _MAGIC
        + _HEAD.pack(len(signature))
        + signature
        + _TAIL.pack(proof.index, proof.count, len(proof.path))
        + path
    )


def decode(stored: bytes) -> tuple[bytes, Proof | None]:
    """(signature, proof) of a stored attestation; a bare signature (stored before batch
    signing) has no proof. ValueError on a value this module did not write."""
    if not stored.startswith(_MAGIC):
        return stored, None
    at = len(_MAGIC)
    (length,) = _HEAD.unpack_from(stored, at)
    at += _HEAD.size
    signature = stored[at : at + length]
    at += length
    index, count, n = _TAIL.unpack_from(stored, at)
    at += _TAIL.size
    if n > PATH_MAX or len(stored) != at + 32 * n or len(signature) != length:
        raise ValueError("stored notary attestation is truncated")
    path = tuple(stored[at + 32 * i : at + 32 * (i + 1)] for i in range(n))
    return signature, Proof(index, count, path)


def proof_to_pb(proof: Proof, out: notarisation_pb2.NotaryBatchProof) -> None:
    """Fill the wire form of a proof (in place)."""
    out.leaf_index, out.leaf_count = proof.index, proof.count
    out.path.extend(proof.path)


def proof_of_pb(msg: notarisation_pb2.NotaryBatchProof) -> Proof:
    """The proof a wire message carries (checked only when it is used: `signed_message`)."""
    return Proof(msg.leaf_index, msg.leaf_count, tuple(msg.path))
