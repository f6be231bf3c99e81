"""One signature over a Merkle root of many items: the shared rule of every "signed per batch".

Why: a P-256 verification costs ~60 µs of CPU and a signature ~23 µs on these machines, and
several parties sign and check every transaction (benchmarks/RESULTS.md, branch kvcpu: ~36 % of
all CPU on the endorse → order → validate path). A party that produces many signed items at once
(a recipient's agreements of one AgreeBatch, an endorser's answers of one ProcessProposals
message, a client's envelopes of one request) can sign ONE root over them; each item carries
its inclusion proof (`common.BatchProof` or an older proof message of the same shape). A node
checking an item recomputes the root from the item's own signed bytes and the proof, and
verifies the signature over the root through its verified-signature memo
(`core/verified_memo.py`), which answers the batch's other items without a public-key
operation: about one verification per signer per batch.

What is accepted stays exactly what was accepted before. The leaf is the very bytes a lone
signature of the item covers; the signature of a batch is over the kind's own batch domain
followed by the root, so a batch signature cannot pass for a lone one or for another kind's; a
proof for one position cannot be replayed for another or for a tree of another size
(`merkle.root_from_path`, RFC 9162 §2.1.3.2). The signature remains checkable by anyone,
offline, forever: the item, its proof and the signer's certificate are all it needs.

Only where the channel's config says so (each kind has its own flag): nodes of an older release
do not know batch proofs and would record such an item invalid while newer ones recorded it
valid; where the flag is off, an item carrying a proof fails on every node (`signed_data`
returns None), and signers sign alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from dltmw.core.identity import Membership, SigningIdentity
from dltmw.core.merkle import Proof, Tree, root_from_path
from dltmw.v1 import common_pb2

__all__ = ["Proof", "ProofFields", "batch", "sign_batch", "sign_items", "signed_data", "wire_proof"]


class ProofFields(Protocol):
    """What a proof message carries (`common.BatchProof` and the older proof messages)."""

    @property
    def leaf_index(self) -> int: ...

    @property
    def leaf_count(self) -> int: ...

    @property
    def path(self) -> Sequence[bytes]: ...


def signed_data(
    item: bytes, proof: ProofFields | None, batches: bool, batch_domain: bytes
) -> bytes | None:
    """The bytes a signature of `item` must verify over: `item` itself when it was signed alone
    (`proof` None), else `batch_domain` + the root its proof leads to; None when the proof
    cannot be right — a malformed path, or any proof where batches are off (`batches`)."""
    if proof is None:
        return item
    if not batches:
        return None
    root = root_from_path(item, proof.leaf_index, proof.leaf_count, proof.path)
    return None if root is None else batch_domain + root


def batch(items: Sequence[bytes], batch_domain: bytes) -> tuple[bytes, list[Proof]]:
    """(the bytes to sign once, one proof per item in order) for a batch of items, each given
    as the bytes a lone signature of it covers."""
    tree = Tree(items)
    return batch_domain + tree.root, tree.proofs()


def sign_batch(
    signer: SigningIdentity, membership: Membership, items: Sequence[bytes], batch_domain: bytes
) -> tuple[bytes, list[Proof]]:
    """`signer`'s ONE signature over `items` and each item's proof. The signature is remembered
    as this node's own (`Membership.remember_own_signature`): the node checks the items again
    (as gateway, at commit) and its own need no public-key operation there."""
    data, proofs = batch(items, batch_domain)
    signature = signer.sign(data)
    membership.remember_own_signature(signer, data, signature)
    return signature, proofs


def sign_items(
    signer: SigningIdentity,
    items: Sequence[bytes],
    batch_domain: bytes,
    batches: bool,
    membership: Membership | None = None,
) -> list[tuple[bytes, Proof | None]]:
    """(signature, proof) of each of `items` (each the bytes a lone signature covers), in
    order: ONE signature over their root, a proof each, when there are several and the channel
    signs in batches (`batches`); else each signed alone, no proof (a batch of one gains
    nothing, and a lone signature is what every release accepts). With a node's `membership`,
    each signature is remembered as the node's own (`Membership.remember_own_signature`): the
    node checks the items again and its own need no public-key operation there."""
    if len(items) > 1 and batches:
        if membership is None:
            data, proofs = batch(items, batch_domain)
            signature = signer.sign(data)
        else:
            signature, proofs = sign_batch(signer, membership, items, batch_domain)
        return [(signature, p) for p in proofs]
    out: list[tuple[bytes, Proof | None]] = []
    for item in items:
        signature = signer.sign(item)
        if membership is not None:
            membership.remember_own_signature(signer, item, signature)
        out.append((signature, None))
    return out


def wire_proof(proof: Proof) -> common_pb2.BatchProof:
    """`proof` as the wire's `common.BatchProof`."""
    return common_pb2.BatchProof(leaf_index=proof.index, leaf_count=proof.count, path=proof.path)
