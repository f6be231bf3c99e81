"""Batch signatures of a notary (core/notary_batch.py, handlers/notary.py): one signature per
decided step, each answer checkable alone with its proof; a proof of another transaction, a
bent proof or a signature of another batch does not verify; signatures made before batch
signing (over the tx_id, no proof) still do. Negative controls: the byzantine notaries of the
simulator (`sim/notary_byzantine.py`) give answers that none of them verifies; and the batch
domain is what keeps a signature over the bare root from passing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from utxo_parties import make_parties, tx

from dltmw.core.errors import ClientError
from dltmw.core.handlers import notary as notary_handler
from dltmw.core.handlers.notary import Ask, Decide, SingleNotary, signed
from dltmw.core.merkle import Proof, Tree
from dltmw.core.notary import NotarisationAsk
from dltmw.core.notary_batch import batch_message, decode, encode, proof_to_pb, signed_message
from dltmw.core.utxo.build import cash_output, sign_transaction
from dltmw.core.utxo.model import Command, Ref, Window
from dltmw.core.utxo.verify import (
    check_notarised,
    check_notary_signature,
    cluster_proofs,
    read_signed,
)
from dltmw.sim.notary_byzantine import BEHAVIOURS
from dltmw.v1 import errors_pb2, utxo_pb2

P = make_parties()
NOW = datetime.now(UTC)
NOTARY = P.notary.identity_bytes


class Counting:
    """The notary's key, counting how often it signs."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, data: bytes) -> bytes:
        self.calls += 1
        return P.notary.sign(data)


class Empty:
    def consumer_of(self, ref: Ref) -> str | None:
        return None

    def signature_of(self, tx_id: str) -> bytes | None:
        return None


def asks(n: int, start: int = 0) -> tuple[Ask, ...]:
    return tuple(
        Ask(NotarisationAsk(f"{i:064x}", (Ref(f"{i:064x}", 0),), (), Window(), b""), 0, i)
        for i in range(start, start + n)
    )


def verifies(tx_id: str, signature: bytes, proof: Proof | None) -> bool:
    try:
        check_notary_signature(tx_id, NOTARY, signature, proof, P.membership, NOW)
    except ClientError:
        return False
    return True


def test_a_step_of_200_notarisations_signs_once_and_each_answer_verifies_alone() -> None:
    sign = Counting()
    core = SingleNotary(sign)
    core.step(Decide(asks(200), Empty()))
    decisions = [d for _, d in core.ready().replies]
    assert sign.calls == 1
    assert len({d.signature for d in decisions}) == 1
    for d in decisions:
        assert d.proof is not None and d.proof.count == 200
        assert verifies(d.tx_id, d.signature, d.proof)


def test_a_proof_of_another_transaction_or_a_bent_proof_does_not_verify() -> None:
    core = SingleNotary(P.notary.sign)
    core.step(Decide(asks(5), Empty()))
    a, b, *_ = [d for _, d in core.ready().replies]
    assert a.proof is not None and b.proof is not None
    assert not verifies(a.tx_id, a.signature, b.proof)  # b's place in the batch
    assert not verifies(b.tx_id, a.signature, a.proof)  # a's proof for b
    bent = Proof(a.proof.index, a.proof.count, (bytes(32), *a.proof.path[1:]))
    assert not verifies(a.tx_id, a.signature, bent)
    assert not verifies(a.tx_id, a.signature, None)  # a batch signature is not over the tx_id


def test_a_signature_of_another_batch_does_not_verify() -> None:
    core = SingleNotary(P.notary.sign)
    core.step(Decide(asks(3), Empty()))
    first = [d for _, d in core.ready().replies]
    core.step(Decide(asks(3, start=10), Empty()))
    second = [d for _, d in core.ready().replies]
    assert not verifies(first[0].tx_id, second[0].signature, first[0].proof)


def test_a_signature_over_the_tx_id_made_before_batch_signing_still_verifies() -> None:
    tx_id = "ab" * 32
    legacy = P.notary.sign(tx_id.encode())
    assert verifies(tx_id, legacy, None)
    assert decode(legacy) == (legacy, None)  # a stored bare signature reads as one
    assert signed(tx_id, legacy).proof is None
    # ... and a batch signature can never pass as one over a tx_id: its message is prefixed
    assert signed_message(tx_id, Proof(0, 1, ())) != tx_id.encode()


def test_a_signature_over_the_bare_root_is_not_a_batch_signature() -> None:
    """Domain separation: the notary's key over the same tree's root WITHOUT the batch domain
    (as another use of the key over a Merkle root, a block's tx_root, would sign it) verifies
    for no tx_id of the tree; over the batch message it verifies for each. (Red with the
    domain dropped from `batch_message`.)"""
    tx_ids = [f"{i:064x}" for i in range(3)]
    tree = Tree([t.encode() for t in tx_ids])
    bare, batch = P.notary.sign(tree.root), P.notary.sign(batch_message(tree.root))
    for tx_id, proof in zip(tx_ids, tree.proofs(), strict=True):
        assert not verifies(tx_id, bare, proof)
        assert verifies(tx_id, batch, proof)


@pytest.mark.parametrize("behaviour", sorted(BEHAVIOURS))
def test_negative_control_a_byzantine_notarys_answers_do_not_verify(
    monkeypatch: pytest.MonkeyPatch, behaviour: str
) -> None:
    """The core signs with a byzantine `sign_tree` (the simulator's, `sim/notary_byzantine.py`):
    after a first batch (which the "another batch" ones answer honestly), no answer of a batch
    of one or of five passes the check that passes every honest answer above."""
    monkeypatch.setattr(notary_handler, "sign_tree", BEHAVIOURS[behaviour]())
    core = SingleNotary(P.notary.sign)
    core.step(Decide(asks(2), Empty()))
    core.ready()
    for start, n in ((10, 1), (20, 5)):
        core.step(Decide(asks(n, start=start), Empty()))
        decisions = [d for _, d in core.ready().replies]
        assert len(decisions) == n and all(d.proof is not None for d in decisions)
        assert not any(verifies(d.tx_id, d.signature, d.proof) for d in decisions), behaviour


def test_the_stored_form_round_trips_and_refuses_truncation() -> None:
    proof = Proof(5, 9, tuple(bytes([i]) * 32 for i in range(4)))
    stored = encode(b"\x30sig", proof)
    assert decode(stored) == (b"\x30sig", proof)
    with pytest.raises(ValueError):
        decode(stored[:-1])


def test_a_malformed_proof_is_bad_signature_naming_the_transaction() -> None:
    with pytest.raises(ClientError) as err:
        signed_message("cd" * 32, Proof(7, 3, ()))
    assert err.value.reason == errors_pb2.ERROR_REASON_BAD_SIGNATURE
    assert "cdcd" in str(err.value)


def _recorded(proof_of: int) -> tuple[list[str], bytes]:
    """Two issuances notarised in one batch; the first recorded (SignedUtxoTransaction) with
    the batch proof of transaction `proof_of`."""
    me = P.bank.identity_bytes
    wires = [
        tx(
            outputs=[cash_output(me, me, "JPY", 100 + i)],
            commands=[Command("cash", "issue", (me,))],
        )
        for i in range(2)
    ]
    core = SingleNotary(P.notary.sign)
    batch = tuple(
        Ask(NotarisationAsk(w.tx_id, (), (), Window(), b""), 0, i) for i, (_, w) in enumerate(wires)
    )
    core.step(Decide(batch, Empty()))
    decisions = [d for _, d in core.ready().replies]
    raw, wire = wires[0]
    msg = sign_transaction(raw, wire.tx_id, [P.bank])
    msg.notary_signature.signer = NOTARY
    msg.notary_signature.signature = decisions[0].signature
    proof = decisions[proof_of].proof
    assert proof is not None
    proof_to_pb(proof, msg.notary_batch_proof)
    return [w.tx_id for _, w in wires], msg.SerializeToString()


def test_a_recorded_transaction_is_notarised_with_its_own_proof_only() -> None:
    _, good = _recorded(proof_of=0)
    check_notarised(read_signed(good), NOTARY, P.membership, NOW)
    _, swapped = _recorded(proof_of=1)
    with pytest.raises(ClientError) as err:
        check_notarised(read_signed(swapped), NOTARY, P.membership, NOW)
    assert err.value.reason == errors_pb2.ERROR_REASON_BAD_SIGNATURE


def test_cluster_signatures_need_one_proof_each_when_batch_signed() -> None:
    _, raw = _recorded(proof_of=0)
    msg = utxo_pb2.SignedUtxoTransaction.FromString(raw)
    msg.notary_signatures.add().CopyFrom(msg.notary_signature)
    msg.notary_signatures.add().CopyFrom(msg.notary_signature)
    msg.notary_batch_proofs.add().CopyFrom(msg.notary_batch_proof)  # one proof, two signatures
    with pytest.raises(ClientError) as err:
        cluster_proofs(read_signed(msg.SerializeToString()))
    assert err.value.reason == errors_pb2.ERROR_REASON_BAD_SIGNATURE
