"""Unit tier for the notary workload's client side (`dltmw/bench/flow_drivers.py`): the requests
it builds from a template are exactly the ones the SDK builds, and an answer counts only when it
verifies offline (the notary's signature, by the notary's certificate, over the root the leaf
proof leads to from the tx_id asked)."""

from __future__ import annotations

import random

from utxo_parties import make_parties

from dltmw.bench.flow_drivers import AnswerCheck, RequestTemplate
from dltmw.core.notary_batch import proof_to_pb, sign_tree
from dltmw.core.utxo.build import TxSpec, build_transaction, notarisation_payload
from dltmw.core.utxo.model import Command, Ref, read_transaction
from dltmw.v1 import errors_pb2, notarisation_pb2

P = make_parties()
NOTARY = "notary0"
BAD = errors_pb2.ERROR_REASON_BAD_SIGNATURE


def test_a_template_request_is_byte_for_byte_the_sdk_request() -> None:
    rng = random.Random(7)
    me = P.alice.identity_bytes
    template = RequestTemplate(NOTARY, me)
    for n in (1, 2, 3, 2, 1):
        nonce = rng.randbytes(32)
        inputs = [Ref(rng.randbytes(32).hex(), rng.randrange(3)) for _ in range(n)]
        spec = TxSpec(NOTARY, nonce, inputs, commands=[Command("cash", "move", (me,))])
        wire = read_transaction(build_transaction(spec))
        tx_id, request = template.request(nonce, inputs)
        assert tx_id == wire.tx_id
        assert request.payload == notarisation_payload(wire, me).SerializeToString()
        assert not request.signature  # signed with its batch


def _answers(
    tx_ids: list[str], signer: bytes, sign: object
) -> list[notarisation_pb2.NotarisationResult]:
    signature, proofs = sign_tree(tx_ids, sign)  # type: ignore[arg-type]
    out = []
    for tx_id, proof in zip(tx_ids, proofs, strict=True):
        result = notarisation_pb2.NotarisationResult()
        result.response.tx_id = tx_id
        result.response.notary_signature.signer = signer
        result.response.notary_signature.signature = signature
        proof_to_pb(proof, result.response.batch_proof)
        out.append(result)
    return out


def _asked(tx_ids: list[str]) -> list[tuple[str, notarisation_pb2.NotarisationRequest]]:
    return [(t, notarisation_pb2.NotarisationRequest()) for t in tx_ids]


TX_IDS = [f"{i:064x}" for i in range(1, 6)]
CHECK = AnswerCheck(P.notary.identity_bytes, P.membership)


def test_the_notarys_batch_answers_verify() -> None:
    results = _answers(TX_IDS, P.notary.identity_bytes, P.notary.sign)
    CHECK.check(_asked(TX_IDS), results)
    assert [r.reason for r in results] == [0] * 5


def test_an_answer_about_another_tx_id_is_refused() -> None:
    results = _answers(TX_IDS, P.notary.identity_bytes, P.notary.sign)
    results[2].response.tx_id = TX_IDS[3]  # signature and proof still fit the tx_id asked
    CHECK.check(_asked(TX_IDS), results)
    assert [r.reason for r in results] == [0, 0, BAD, 0, 0]


def test_a_valid_signature_by_someone_else_than_the_notary_is_refused() -> None:
    results = _answers(TX_IDS, P.alice.identity_bytes, P.alice.sign)  # a member, not the notary
    CHECK.check(_asked(TX_IDS), results)
    assert [r.reason for r in results] == [BAD] * 5


def test_a_bent_proof_beside_good_ones_of_the_same_batch_is_refused() -> None:
    results = _answers(TX_IDS, P.notary.identity_bytes, P.notary.sign)
    results[4].response.batch_proof.path[0] = bytes(32)  # the same signature, another root
    CHECK.check(_asked(TX_IDS), results)
    assert [r.reason for r in results] == [0, 0, 0, 0, BAD]


def test_a_signature_of_another_batch_is_refused() -> None:
    results = _answers(TX_IDS, P.notary.identity_bytes, P.notary.sign)
    other = _answers([f"{i:064x}" for i in range(7, 12)], P.notary.identity_bytes, P.notary.sign)
    results[1].response.notary_signature.signature = other[1].response.notary_signature.signature
    CHECK.check(_asked(TX_IDS), results)
    assert [r.reason for r in results] == [0, BAD, 0, 0, 0]
    assert "answer does not verify" in results[1].message


def test_refusals_stay_refusals() -> None:
    results = _answers(TX_IDS[:1], P.notary.identity_bytes, P.notary.sign)
    results[0].reason = errors_pb2.ERROR_REASON_INPUT_CONSUMED
    CHECK.check(_asked(TX_IDS[:1]), results)
    assert results[0].reason == errors_pb2.ERROR_REASON_INPUT_CONSUMED
