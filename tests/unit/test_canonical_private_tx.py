"""A private transaction's data and an envelope are taken in exactly one encoding.

`txcheck.private_transaction` and `txcheck.canonical` check the encoding by serialising the
parsed message once its unknown fields are dropped (branch txc14), where the rule before rebuilt
the message field by field and serialised that. These tests pin the verdict: each
non-canonical encoding below was refused before and is refused now, and on seeded random
mutations the two rules agree byte for byte (`_rule_before` is the earlier code, kept here as
the reference)."""

from __future__ import annotations

import random

import pytest

from dltmw.core.txcheck import private_transaction
from dltmw.core.wire_field import canonical
from dltmw.core.wire_field import length_delimited as _field
from dltmw.v1 import common_pb2, private_agreement_pb2, private_purge_pb2, transaction_pb2

A = private_agreement_pb2
T = transaction_pb2
HASH = bytes(range(32))
UNKNOWN = b"\xb8\x3e\x01"  # field 999, varint 1: a field no release defines


def _proof(extra: bytes = b"", leaf_index: bytes | None = None) -> bytes:
    """An AgreementBatchProof (index 1 of 5), `extra` appended; `leaf_index` replaces the
    index's encoding (tag included)."""
    index = b"\x08\x01" if leaf_index is None else leaf_index
    return index + b"\x10\x05" + b"".join(_field(3, bytes([i]) * 32) for i in range(3)) + extra


def _agreement(extra: bytes = b"", proof: bytes | None = None) -> bytes:
    """A PrivateAgreement with a batch proof (`proof`'s bytes, `_proof()` by default)."""
    return (
        _field(1, b"body")
        + _field(2, b"signer")
        + _field(3, b"sig")
        + _field(520, _proof() if proof is None else proof)
        + extra
    )


def _tx(agreements: list[bytes], top: bytes = b"", hash_field: bytes | None = None) -> bytes:
    head = _field(1, HASH) if hash_field is None else hash_field
    return head + b"".join(_field(140, a) for a in agreements) + top


GOOD = _tx([_agreement(), _agreement(proof=_proof(leaf_index=b""))])


def _rule_before(data: bytes) -> T.PrivateTransaction | None:
    """`private_transaction` before branch txc14: rebuild the known fields, serialise, compare."""
    try:
        tx = T.PrivateTransaction.FromString(data)
    except Exception:
        return None
    agreements = []
    for a in tx.agreements:
        out = A.PrivateAgreement(body=a.body, signer=a.signer, signature=a.signature)
        if a.HasField("batch_proof"):
            p = a.batch_proof
            out.batch_proof.CopyFrom(
                A.AgreementBatchProof(leaf_index=p.leaf_index, leaf_count=p.leaf_count, path=p.path)
            )
        agreements.append(out)
    rebuilt = T.PrivateTransaction(payload_hash=tx.payload_hash, agreements=agreements)
    if len(tx.payload_hash) != 32 or rebuilt.SerializeToString() != data:
        return None
    return rebuilt


def test_the_canonical_encoding_is_taken() -> None:
    tx = private_transaction(GOOD)
    assert tx is not None and tx == _rule_before(GOOD)
    assert tx.payload_hash == HASH and len(tx.agreements) == 2
    assert tx.agreements[0].batch_proof.leaf_index == 1
    assert tx.agreements[1].HasField("batch_proof") and tx.agreements[1].batch_proof.leaf_index == 0
    assert private_transaction(_tx([])) is not None  # no agreements: the channel's rule decides


NOT_CANONICAL = {
    "unknown field at top level": _tx([_agreement()], top=UNKNOWN),
    "unknown field first, then the known ones": UNKNOWN + GOOD,
    "unknown field inside an agreement": _tx([_agreement(), _agreement(extra=UNKNOWN)]),
    "unknown field inside a batch proof": _tx([_agreement(proof=_proof(extra=UNKNOWN))]),
    "known field number, wrong wire type (payload_hash as a varint)": GOOD + b"\x08\x01",
    "payload_hash twice": _tx([_agreement()], hash_field=_field(1, b"x" * 32) + _field(1, HASH)),
    "signer twice inside an agreement": _tx([_agreement(extra=_field(2, b"signer"))]),
    "batch proof twice (merged)": _tx([_agreement(extra=_field(520, _proof()))]),
    "fields out of order (agreements before payload_hash)": _field(140, _agreement())
    + _field(1, HASH),
    "non-minimal varint (leaf_index 1 as 0x81 0x00)": _tx(
        [_agreement(proof=_proof(leaf_index=b"\x08\x81\x00"))]
    ),
    "non-minimal length prefix (payload_hash's 32 as 0xa0 0x00)": _tx(
        [_agreement()], hash_field=b"\x0a\xa0\x00" + HASH
    ),
    "explicitly encoded default (leaf_index 0)": _tx(
        [_agreement(proof=_proof(leaf_index=b"\x08\x00"))]
    ),
    "hash of 31 bytes": _tx([_agreement()], hash_field=_field(1, HASH[:31])),
    "hash of 33 bytes": _tx([_agreement()], hash_field=_field(1, HASH + b"!")),
    "no hash": _tx([_agreement()], hash_field=b""),
    "a purge riding along": GOOD
    + _field(180, private_purge_pb2.PrivatePurge(body=b"b").SerializeToString()),
    "truncated": GOOD[:-1],
}


@pytest.mark.parametrize("name", sorted(NOT_CANONICAL))
def test_a_non_canonical_private_transaction_is_refused(name: str) -> None:
    data = NOT_CANONICAL[name]
    assert _rule_before(data) is None, "the case must have been refused before"
    assert private_transaction(data) is None


def _mutations(seed: int, base: bytes, n: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        b = bytearray(base)
        for _ in range(rng.randint(1, 3)):
            op, at = rng.randrange(4), rng.randrange(len(b) + 1)
            if op == 0 and at < len(b):
                b[at] ^= 1 << rng.randrange(8)
            elif op == 1:
                b[at:at] = bytes([rng.randrange(256)])
            elif op == 2 and at < len(b):
                del b[at]
            else:  # splice in a stretch of the base elsewhere
                start = rng.randrange(len(base))
                b[at:at] = base[start : start + rng.randint(1, 12)]
        out.append(bytes(b))
    return out


def test_the_rule_agrees_with_the_rule_before_on_random_mutations() -> None:
    bases = [GOOD, _tx([_agreement(), _agreement(extra=UNKNOWN)]), NOT_CANONICAL["truncated"]]
    taken = 0
    for seed, base in enumerate(bases):
        for data in _mutations(seed, base, 1500):
            before, now = _rule_before(data), private_transaction(data)
            assert (before is None) == (now is None), data.hex()
            if now is not None:
                taken += 1
                assert now == before and now.SerializeToString() == data
    assert taken > 20  # some mutations stay canonical (a flipped bit inside a value)


def _envelope(extra: bytes = b"", proof: bytes | None = None) -> bytes:
    out = _field(1, b"payload") + _field(2, b"sig")
    return out + (b"" if proof is None else _field(581, proof)) + extra


@pytest.mark.parametrize(
    "data",
    [
        _envelope(extra=UNKNOWN),
        _envelope(proof=_proof(extra=UNKNOWN)),
        _envelope(proof=_proof(leaf_index=b"\x08\x00")),
        _envelope(extra=_field(2, b"sig")),
        _field(2, b"sig") + _field(1, b"payload"),
    ],
    ids=["unknown", "unknown in proof", "explicit default", "duplicate", "out of order"],
)
def test_a_non_canonical_envelope_is_refused(data: bytes) -> None:
    assert not canonical(common_pb2.Envelope.FromString(data), data)


def test_a_canonical_envelope_is_taken() -> None:
    for data in (_envelope(), _envelope(proof=_proof())):
        assert canonical(common_pb2.Envelope.FromString(data), data)


def test_a_purge_with_an_unknown_field_anywhere_is_refused() -> None:
    """`private_purge` checks its encoding with the same `canonical` (wire_field)."""
    from dltmw.core.privacy.purge import private_purge

    purge = private_purge_pb2.PrivatePurge(
        body=b"b", approvals=[private_purge_pb2.PurgeApproval(signer=b"s", signature=b"x")]
    )
    data = transaction_pb2.PrivateTransaction(purge=purge).SerializeToString()
    assert private_purge(data) == purge
    assert private_purge(data + _field(999, b"x")) is None  # beside the purge
    inner = purge.SerializeToString() + _field(3, b"x")  # inside it
    assert private_purge(_field(180, inner)) is None
    assert transaction_pb2.PrivateTransaction.FromString(_field(180, inner)).purge.body == b"b"
