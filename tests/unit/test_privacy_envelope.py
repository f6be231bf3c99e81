"""The private-payload envelope: round trip, every tamper refused, wrong recipient, re-wrap."""

from __future__ import annotations

import hashlib
import random

import pytest

from dltmw.contracts import builtin_contract
from dltmw.core.privacy.envelope import (
    PayloadError,
    PrivacyKey,
    add_recipients,
    open_payload,
    payload_hash,
    recipients_of,
    seal,
)
from dltmw.core.privacy.execution import CONTRACT_FAILED, EXECUTED, execute, state_hash
from dltmw.core.rwset import StateEntry, Version
from dltmw.v1 import private_payload_pb2, proposal_pb2

RNG = random.Random(5)


def rand(n: int) -> bytes:
    return RNG.randbytes(n)


def key() -> PrivacyKey:
    return PrivacyKey(rand(32))


SENDER, ALICE, BOB, EVE = key(), key(), key(), key()
PLAINTEXT = b"trade 100 XYZ @ 12.5 " + rand(32)


def sealed(recipients: list[PrivacyKey] | None = None) -> private_payload_pb2.EncryptedPayload:
    keys = [k.public_key for k in (recipients or [ALICE, BOB])]
    return seal(
        PLAINTEXT, SENDER, keys, rand(32), rand(12), [rand(12) for _ in range(len(keys) + 1)]
    )


def reason(exc: pytest.ExceptionInfo[PayloadError]) -> str:
    return exc.value.reason_name


def test_every_recipient_and_the_sender_decrypt() -> None:
    p = sealed()
    h = payload_hash(p)
    assert h == hashlib.sha256(p.ciphertext).digest()
    for k in (SENDER, ALICE, BOB):
        assert open_payload(p, k, h) == PLAINTEXT
    assert sorted(recipients_of(p)) == sorted(k.public_key for k in (SENDER, ALICE, BOB))
    assert PLAINTEXT not in p.SerializeToString()


def test_non_recipient_is_refused_as_not_authorized() -> None:
    p = sealed()
    with pytest.raises(PayloadError) as exc:
        open_payload(p, EVE, payload_hash(p))
    assert reason(exc) == "NOT_AUTHORIZED"


def test_altered_ciphertext_is_a_hash_mismatch() -> None:
    p = sealed()
    h = payload_hash(p)
    p.ciphertext = bytes([p.ciphertext[0] ^ 1]) + p.ciphertext[1:]
    with pytest.raises(PayloadError) as exc:
        open_payload(p, ALICE, h)
    assert reason(exc) == "PAYLOAD_HASH_MISMATCH"


def test_altered_nonce_fails_authentication() -> None:
    p = sealed()
    h = payload_hash(p)
    p.nonce = rand(12)
    with pytest.raises(PayloadError) as exc:
        open_payload(p, ALICE, h)
    assert reason(exc) == "PAYLOAD_UNREADABLE"


@pytest.mark.parametrize("field", ["wrapped_key", "nonce"])
def test_altered_box_fails_authentication(field: str) -> None:
    p = sealed()
    h = payload_hash(p)
    box = p.recipient_boxes[recipients_of(p).index(ALICE.public_key)]
    value = getattr(box, field)
    setattr(box, field, bytes([value[0] ^ 0x80]) + value[1:])
    with pytest.raises(PayloadError) as exc:
        open_payload(p, ALICE, h)
    assert reason(exc) == "PAYLOAD_UNREADABLE"
    assert open_payload(p, BOB, h) == PLAINTEXT  # other boxes are untouched


def test_dropping_a_box_changes_the_bound_recipient_list() -> None:
    p = sealed()
    h = payload_hash(p)
    del p.recipient_boxes[recipients_of(p).index(BOB.public_key)]
    with pytest.raises(PayloadError) as exc:
        open_payload(p, ALICE, h)
    assert reason(exc) == "PAYLOAD_UNREADABLE"


def test_box_moved_onto_another_payload_does_not_open() -> None:
    p, q = sealed(), sealed()
    i = recipients_of(p).index(ALICE.public_key)
    q.recipient_boxes[recipients_of(q).index(ALICE.public_key)].CopyFrom(p.recipient_boxes[i])
    with pytest.raises(PayloadError) as exc:
        open_payload(q, ALICE, payload_hash(q))
    assert reason(exc) == "PAYLOAD_UNREADABLE"


def test_relabelled_sender_does_not_open() -> None:
    p = sealed()
    h = payload_hash(p)
    p.sender_public_key = EVE.public_key
    with pytest.raises(PayloadError) as exc:
        open_payload(p, ALICE, h)
    assert reason(exc) == "PAYLOAD_UNREADABLE"


def test_adding_a_recipient_rewraps_without_reencrypting() -> None:
    p = sealed()
    h = payload_hash(p)
    q = add_recipients(p, SENDER, [EVE.public_key], [rand(12) for _ in range(4)])
    assert q.ciphertext == p.ciphertext and payload_hash(q) == h
    for k in (SENDER, ALICE, BOB, EVE):
        assert open_payload(q, k, h) == PLAINTEXT
    with pytest.raises(PayloadError):
        add_recipients(p, ALICE, [EVE.public_key], [rand(12) for _ in range(4)])


def test_short_key_material_is_invalid() -> None:
    with pytest.raises(PayloadError):
        seal(b"x", SENDER, [ALICE.public_key], rand(31), rand(12), [rand(12)] * 2)
    with pytest.raises(PayloadError):
        seal(b"x", SENDER, [b"\x01" * 31], rand(32), rand(12), [rand(12)] * 2)


class DictState:
    def __init__(self, values: dict[str, bytes]) -> None:
        self.values = values

    def get(self, namespace: str, key: str) -> tuple[bytes, Version] | None:
        v = self.values.get(key)
        return None if v is None else (v, Version(1, 0))

    def range(self, namespace: str, start: str, end: str, limit: int) -> list[StateEntry]:
        keys = sorted(k for k in self.values if k >= start and (not end or k < end))
        return [StateEntry(k, self.values[k], Version(1, 0)) for k in keys[:limit]]


def _inv(function: str, *args: str) -> private_payload_pb2.PrivateInvocation:
    return private_payload_pb2.PrivateInvocation(
        contract="bank", function=function, args=[a.encode() for a in args]
    )


def test_same_state_same_hash_different_state_different_hash() -> None:
    inv = _inv("deposit", "A", "10")
    a = execute(builtin_contract, inv, DictState({"A": b"100"}), Version(2, 0))
    b = execute(builtin_contract, inv, DictState({"A": b"100"}), Version(2, 0))
    c = execute(builtin_contract, inv, DictState({"A": b"500"}), Version(2, 0))
    assert a.status == EXECUTED and a.state_hash == b.state_hash
    assert [w.value for w in a.writes] == [b"110"]
    assert c.state_hash != a.state_hash


def test_contract_refusal_writes_nothing() -> None:
    out = execute(
        builtin_contract, _inv("withdraw", "A", "1000"), DictState({"A": b"1"}), Version(2, 0)
    )
    assert out.status == CONTRACT_FAILED and out.writes == ()
    missing = execute(
        builtin_contract, _inv("x").__class__(contract="nope"), DictState({}), Version(2, 0)
    )
    assert missing.status == CONTRACT_FAILED and missing.response.status == 404


def test_state_hash_encoding_is_unambiguous() -> None:
    r = proposal_pb2.ContractResponse(status=200)
    assert state_hash(EXECUTED, r, "kv", {"ab": b"c"}) != state_hash(
        EXECUTED, r, "kv", {"a": b"bc"}
    )
    assert state_hash(EXECUTED, r, "kv", {"a": None}) != state_hash(EXECUTED, r, "kv", {"a": b""})
