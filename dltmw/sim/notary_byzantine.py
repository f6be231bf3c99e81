"""Byzantine single notaries: batch signatures that must not pass (issue 18 item 2's controls).

A faulty notary holds only its own key, so it can sign anything as itself; what it cannot do
is make a client accept an answer that does not put the client's tx_id under a root it signed
in the batch domain (`core/notary_batch.py`). Each behaviour here replaces the one step that
makes those answers — `sign_tree`, as the notary's core calls it (`core/handlers/notary.py`):
sign the batch's Merkle root once, return each tx_id's proof — so the production notary node
runs it unchanged otherwise, crashes and retries included. The scenario's checker
(`notary_checks.check_no_double_spend`, verifying each answer with `check_notary_signature`)
must call every answer of these notaries "forged" (the negative controls of
tests/sim/test_notary_sim.py):

- `unseparated-root`: signs the bare root, without the batch domain — a signature the same key
  could have made over the same tree for another purpose (a block's tx_root is one);
- `root-of-another-batch`: signs the root of the batch before this one (its own first batch
  honestly), with this batch's proofs;
- `bent-proof`: signs honestly but answers with proofs that lead elsewhere: one sibling hash
  changed, or, in a batch of one, a made-up sibling;
- `proof-of-another-batch`: answers with the signature and the proofs of the batch before this
  one (its own first batch honestly): a valid signature, whose tree does not hold the tx_id.

The same steps replace a faulty notary-cluster member's signing (`sim/notary_cluster.py`, through
`ClusterDecider`'s `tree_signer`), where clients must refuse its answers and still reach f+1.

The stored batch is `SignedBatch(signature, tx_ids)`, from which the store rebuilds honest
proofs, so a retry answered from the store may differ from the first answer; the controls ask
for "forged", which every one of these answers is on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from dltmw.core.handlers.notary import SignTree
from dltmw.core.merkle import HASH_BYTES, Proof, Tree
from dltmw.core.notary_batch import batch_message, sign_tree

Sign = Callable[[bytes], bytes]


def _tree(tx_ids: Sequence[str]) -> Tree:
    return Tree([t.encode() for t in tx_ids])


def unseparated_root(tx_ids: Sequence[str], sign: Sign) -> tuple[bytes, list[Proof]]:
    """The root signed without `BATCH_DOMAIN`."""
    tree = _tree(tx_ids)
    return sign(tree.root), tree.proofs()


def bent(proof: Proof) -> Proof:
    """A proof of the same leaf that leads to another root."""
    if not proof.path:  # a batch of one: claim a sibling that is not there
        return Proof(0, 2, (bytes(HASH_BYTES),))
    first = bytes([proof.path[0][0] ^ 1]) + proof.path[0][1:]
    return Proof(proof.index, proof.count, (first, *proof.path[1:]))


def bent_proof(tx_ids: Sequence[str], sign: Sign) -> tuple[bytes, list[Proof]]:
    """An honest signature, every proof bent."""
    signature, proofs = sign_tree(tx_ids, sign)
    return signature, [bent(p) for p in proofs]


class RootOfAnotherBatch:
    """Signs the previous batch's root for this one (the first honestly)."""

    def __init__(self) -> None:
        self._last: bytes | None = None

    def __call__(self, tx_ids: Sequence[str], sign: Sign) -> tuple[bytes, list[Proof]]:
        tree = _tree(tx_ids)
        root = self._last if self._last is not None else tree.root
        self._last = tree.root
        return sign(batch_message(root)), tree.proofs()


class ProofOfAnotherBatch:
    """Answers with the previous batch's signature and proofs (the first batch honestly)."""

    def __init__(self) -> None:
        self._last: tuple[bytes, list[Proof]] | None = None

    def __call__(self, tx_ids: Sequence[str], sign: Sign) -> tuple[bytes, list[Proof]]:
        honest = sign_tree(tx_ids, sign)
        last, self._last = self._last, honest
        if last is None:
            return honest
        signature, proofs = last
        return signature, [proofs[i % len(proofs)] for i in range(len(tx_ids))]


BEHAVIOURS: dict[str, Callable[[], SignTree]] = {
    "unseparated-root": lambda: unseparated_root,
    "root-of-another-batch": RootOfAnotherBatch,
    "bent-proof": lambda: bent_proof,
    "proof-of-another-batch": ProofOfAnotherBatch,
}
