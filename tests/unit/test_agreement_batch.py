"""Agreements signed per batch (core/privacy/agreement_batch.py): one signature over a Merkle
root of many transactions' agreements, checked through each agreement's proof by the commit
rule (`agreement_code`), verified once per batch per node, and refused on a channel that does
not allow batches (peers of an older release could not check them).

Real keys, certificates and the real commit rule; the runtime side (`Agreements._sign_all`)
with a stand-in node context (its signer) and channel (id and config view).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from proof_alterations import PROOF_ALTERATIONS, alter_proof

from dltmw.core.channel import ChannelView, channel_view
from dltmw.core.hashing import compute_tx_id
from dltmw.core.identity import SigningIdentity
from dltmw.core.privacy import agreement as ag
from dltmw.core.privacy import agreement_batch
from dltmw.core.txcheck import private_transaction
from dltmw.runtime.roles.privacy.agreement import Agreements
from dltmw.v1 import config_pb2
from dltmw.v1 import private_agreement_pb2 as A
from dltmw.v1 import transaction_pb2 as C
from tests.unit.test_agreement_own_signature import _counted
from tests.unit.test_private_agreement import CHANNEL, HASH, HASHES, NOW, _view

Peers = list[tuple[SigningIdentity, bytes]]


def _views(batches: bool) -> tuple[ChannelView, Peers]:
    view, _, peers = _view(A.PRIVATE_AGREEMENT_POLICY_ALL_RECIPIENTS)
    config = config_pb2.ChannelConfig()
    config.CopyFrom(view.config)
    config.private_agreement_batches = batches
    return channel_view(config), peers


@pytest.fixture(scope="module")
def parties() -> tuple[ChannelView, Peers]:
    return _views(batches=True)


def _tx_ids(n: int) -> list[str]:
    return [compute_tx_id(bytes([i]) * 24, b"creator") for i in range(n)]


def _bodies(tx_ids: list[str], keys: list[bytes]) -> list[bytes]:
    return [ag.agreement_body(CHANNEL, t, HASH, HASHES, keys, ag.AGREE) for t in tx_ids]


def _signed_batches(peers: Peers, tx_ids: list[str]) -> list[list[A.PrivateAgreement]]:
    """Per transaction, the agreements of peers 0 and 1, each party's signed as ONE batch (with
    a membership of its own: the checking view below has remembered nothing)."""
    keys = [peers[0][1], peers[1][1]]
    own_view, _ = _views(batches=True)
    per_party = [
        agreement_batch.sign(signer, own_view.membership, _bodies(tx_ids, keys), batches=True)
        for signer, _ in peers[:2]
    ]
    return [list(pair) for pair in zip(*per_party, strict=True)]


def test_a_batch_is_valid_and_each_party_is_verified_once_per_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    view, peers = _views(batches=True)
    tx_ids = _tx_ids(5)
    signed = _signed_batches(peers, tx_ids)
    assert all(a.HasField("batch_proof") for pair in signed for a in pair)
    assert len({a.signature for pair in signed for a in pair}) == 2  # one per party
    calls = _counted(monkeypatch)
    codes = [
        ag.agreement_code(pair, view, t, HASH, NOW) for pair, t in zip(signed, tx_ids, strict=True)
    ]
    assert codes == [ag.VALID] * 5
    assert len(calls) == 2  # one public-key operation per party for the five transactions
    assert all(c.startswith(agreement_batch.BATCH_DOMAIN) for c in calls)


def test_a_batch_proof_is_refused_on_a_channel_without_batches() -> None:
    view, peers = _views(batches=False)
    tx_ids = _tx_ids(3)
    signed = _signed_batches(peers, tx_ids)
    codes = [
        ag.agreement_code(pair, view, t, HASH, NOW) for pair, t in zip(signed, tx_ids, strict=True)
    ]
    assert codes == [ag.BAD_SIGNATURE] * 3


def _altered(agreement: A.PrivateAgreement, how: str) -> A.PrivateAgreement:
    out = A.PrivateAgreement()
    out.CopyFrom(agreement)
    if alter_proof(out, how):
        pass
    elif how == "body":
        body = A.PrivateAgreementBody.FromString(out.body)
        body.delta_hash = b"x" * 32
        out.body = body.SerializeToString()
    return out


@pytest.mark.parametrize(
    "how",
    [*PROOF_ALTERATIONS, "body"],  # and another body under the same proof
)
def test_an_altered_batch_agreement_is_a_bad_signature(
    parties: tuple[ChannelView, Peers], how: str
) -> None:
    view, peers = parties
    tx_ids = _tx_ids(4)
    signed = _signed_batches(peers, tx_ids)
    pair = [_altered(signed[1][0], how), signed[1][1]]
    assert ag.agreement_code(pair, view, tx_ids[1], HASH, NOW) == ag.BAD_SIGNATURE
    assert ag.agreement_code(signed[1], view, tx_ids[1], HASH, NOW) == ag.VALID  # control


def test_an_agreement_of_another_transaction_in_the_batch_is_a_replay(
    parties: tuple[ChannelView, Peers],
) -> None:
    view, peers = parties
    tx_ids = _tx_ids(3)
    signed = _signed_batches(peers, tx_ids)
    pair = [signed[2][0], signed[1][1]]  # a valid proof, of another transaction's agreement
    assert ag.agreement_code(pair, view, tx_ids[1], HASH, NOW) == ag.WRONG_TX


def test_a_private_transaction_keeps_its_batch_proofs_and_nothing_else(
    parties: tuple[ChannelView, Peers],
) -> None:
    _, peers = parties
    signed = _signed_batches(peers, _tx_ids(3))
    data = C.PrivateTransaction(payload_hash=HASH, agreements=signed[0]).SerializeToString()
    parsed = private_transaction(data)
    assert parsed is not None and list(parsed.agreements) == signed[0]
    # an unknown field inside a batch proof would ride along in clear: refused
    smuggled = C.PrivateTransaction.FromString(data)
    unknown = b"\xa0\x06\x01"  # field 100, varint 1
    smuggled.agreements[0].batch_proof.MergeFromString(unknown)
    assert private_transaction(smuggled.SerializeToString()) is None


def _node(signer: SigningIdentity, view: ChannelView) -> tuple[Agreements, object, list[bytes]]:
    signed: list[bytes] = []

    class Counting:
        identity_bytes = signer.identity_bytes
        identity_id = signer.identity_id

        def sign(self, data: bytes) -> bytes:
            signed.append(data)
            return signer.sign(data)

    node = Agreements(SimpleNamespace(signer=Counting()), None)  # type: ignore[arg-type]
    return node, SimpleNamespace(channel_id=CHANNEL, view=view), signed


@pytest.mark.parametrize("batches", [True, False])
def test_a_node_signs_a_batch_once_where_the_channel_allows_it(batches: bool) -> None:
    view, peers = _views(batches)
    node, channel, signed = _node(peers[0][0], view)
    tx_ids = _tx_ids(6)
    keys = [peers[0][1], peers[1][1]]
    agreements = node._sign_all(channel, _bodies(tx_ids, keys))  # type: ignore[arg-type]
    assert len(signed) == (1 if batches else 6)
    assert all(a.HasField("batch_proof") == batches for a in agreements)
    # its own signatures need no public-key operation at this node (admission, commit)
    other = agreement_batch.sign(
        peers[1][0], _views(batches)[0].membership, _bodies(tx_ids, keys), batches
    )
    for mine, theirs, t in zip(agreements, other, tx_ids, strict=True):
        assert ag.agreement_code([mine, theirs], view, t, HASH, NOW) == ag.VALID


@settings(max_examples=25, deadline=None)
@given(size=st.integers(min_value=1, max_value=40), data=st.data())
def test_every_position_of_any_batch_size_verifies(
    parties: tuple[ChannelView, Peers], size: int, data: st.DataObject
) -> None:
    view, peers = parties
    tx_ids = _tx_ids(size)
    signed = _signed_batches(peers, tx_ids)
    i = data.draw(st.integers(min_value=0, max_value=size - 1))
    assert ag.agreement_code(signed[i], view, tx_ids[i], HASH, NOW) == ag.VALID
    if size > 1:  # the proof of position i does not hold at any other position
        j = data.draw(st.integers(min_value=0, max_value=size - 1).filter(lambda j: j != i))
        moved = A.PrivateAgreement()
        moved.CopyFrom(signed[i][0])
        moved.batch_proof.CopyFrom(signed[j][0].batch_proof)
        assert ag.agreement_code([moved, signed[i][1]], view, tx_ids[i], HASH, NOW) == (
            ag.BAD_SIGNATURE
        )


@pytest.mark.parametrize(
    ("change", "code"),
    [("delta", ag.MISMATCH), ("verdict", ag.DISAGREED)],
)
def test_a_party_whose_body_differs_by_a_byte_is_judged_on_its_own_body(
    change: str, code: int
) -> None:
    """The commit rule parses each distinct body once (`parsed`, keyed by the exact bytes):
    a second party that signed, in its batch, a body of the same length differing from the
    first's (another delta hash, or DISAGREE) must still give MISMATCH / DISAGREED, never
    the first party's VALID. (Red with the parse keyed by the body's length.)"""
    view, peers = _views(batches=True)
    tx_ids = _tx_ids(3)
    keys = [peers[0][1], peers[1][1]]
    own_view, _ = _views(batches=True)
    bodies = _bodies(tx_ids, keys)
    if change == "delta":
        other = [
            ag.agreement_body(CHANNEL, t, HASH, (HASHES[0], b"e" * 32), keys, ag.AGREE)
            for t in tx_ids
        ]
    else:
        other = [ag.agreement_body(CHANNEL, t, HASH, HASHES, keys, ag.DISAGREE) for t in tx_ids]
    assert [len(b) for b in other] == [len(b) for b in bodies]  # same length, other bytes
    first = agreement_batch.sign(peers[0][0], own_view.membership, bodies, batches=True)
    second = agreement_batch.sign(peers[1][0], own_view.membership, other, batches=True)
    for pair, t in zip(zip(first, second, strict=True), tx_ids, strict=True):
        assert ag.agreement_code(list(pair), view, t, HASH, NOW) == code
    twin = agreement_batch.sign(peers[1][0], own_view.membership, bodies, batches=True)
    assert ag.agreement_code([first[1], twin[1]], view, tx_ids[1], HASH, NOW) == ag.VALID
