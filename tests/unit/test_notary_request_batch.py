"""Requester batch signatures (`core/request_batch.py`): one signature by the requester over a
whole NotariseStream batch. Any request swapped, added, removed or changed breaks it; requests of
a signed batch must name the signer and carry no signature of their own; the per-request checks
still run; a notary-cluster replica checks a batch once however many parts it was split into;
and deciding batch-signed requests keeps every state consumed at most once, retries answered
with the same signature (property against a naive model)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given, settings
from hypothesis import strategies as st
from utxo_parties import NOTARY, NOW, make_parties, tx

from dltmw.core import identity as identity_module
from dltmw.core import request_batch
from dltmw.core.errors import ClientError
from dltmw.core.handlers.notary import Ask, Decide, SingleNotary
from dltmw.core.identity import Membership
from dltmw.core.notary import NotaryIdentity, admit
from dltmw.core.notary_cluster import Part, wrap, wrap_parts
from dltmw.core.utxo.build import notarisation_payload
from dltmw.core.utxo.model import Command, Ref, to_ns
from dltmw.runtime.roles.notary.cluster_open import open_request
from dltmw.v1 import errors_pb2, notarisation_pb2, notary_service_pb2

P = make_parties()
ME = NotaryIdentity(NOTARY, P.notary.identity_bytes)
A = P.alice.identity_bytes
Message = notary_service_pb2.NotariseStreamRequest
BAD_BATCH = "NOTARY_BATCH_SIGNATURE_INVALID"
BAD_REQUEST = "NOTARY_BATCH_REQUEST_INVALID"


def payload(inputs: tuple[Ref, ...], requester: bytes = A) -> bytes:
    _, wire = tx(inputs=list(inputs), commands=[Command("cash", "move", (requester,))])
    return notarisation_payload(wire, requester).SerializeToString()


def payloads(n: int, first: int = 0) -> list[bytes]:
    return [payload((Ref(f"{first + i:064x}", 0),)) for i in range(n)]


def signed(raw: list[bytes]) -> Message:
    return request_batch.sign_batch(raw, P.alice)


def hashes_of(message: Message) -> list[bytes]:
    return [request_batch.payload_hash(r.payload) for r in message.requests]


def check(message: Message, membership: Membership | None = None) -> bytes:
    """What the notary does first with a batch-signed message."""
    return request_batch.check(
        message.batch_signature, hashes_of(message), membership or P.membership, NOW
    )


def test_the_signed_bytes_are_the_domain_then_the_digest_of_the_payload_hashes() -> None:
    raw = payloads(3)
    digest = hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in raw)).digest()
    message = request_batch.signed_message(map(request_batch.payload_hash, raw))
    assert message == b"dltmw/notary-request-batch/v1\x00" + digest
    reordered = request_batch.signed_message(map(request_batch.payload_hash, raw[::-1]))
    assert reordered != message


def test_a_signed_batch_is_admitted_request_by_request() -> None:
    message = signed(payloads(3))
    assert all(not r.signature for r in message.requests)
    signer = check(message)
    assert signer == A
    asks = [admit(r, ME, P.membership, NOW, signer) for r in message.requests]
    assert [a.inputs[0].tx_id for a in asks] == [f"{i:064x}" for i in range(3)]


def _swap(m: Message) -> None:
    first, second = Message(requests=m.requests[:2]).requests
    m.requests[0].CopyFrom(second)
    m.requests[1].CopyFrom(first)


def _add(m: Message) -> None:
    m.requests.add(payload=payload((Ref("ee" * 32, 0),)))


def _remove(m: Message) -> None:
    del m.requests[1]


def _replace(m: Message) -> None:
    m.requests[2].payload = payload((Ref("ee" * 32, 0),))


def _other_signer(m: Message) -> None:
    m.batch_signature.signature = P.bob.sign(request_batch.signed_message(hashes_of(m)))


def _outsider(m: Message) -> None:
    m.batch_signature.signer = P.outsider.identity_bytes
    m.batch_signature.signature = P.outsider.sign(request_batch.signed_message(hashes_of(m)))


def _no_signature(m: Message) -> None:
    m.batch_signature.signature = b""


def _per_request_signature_as_batch(m: Message) -> None:
    m.batch_signature.signature = P.alice.sign(m.requests[0].payload)


BROKEN: dict[str, Callable[[Message], None]] = {
    "two-requests-swapped": _swap,
    "a-request-added": _add,
    "a-request-removed": _remove,
    "a-request-replaced": _replace,
    "signed-by-another-member": _other_signer,
    "signer-not-a-member": _outsider,
    "signature-missing": _no_signature,
    "a-per-request-signature-as-the-batch-one": _per_request_signature_as_batch,
}


@pytest.mark.parametrize("breaks", BROKEN.values(), ids=BROKEN.keys())
def test_a_changed_batch_or_a_bad_signature_is_refused(
    breaks: Callable[[Message], None],
) -> None:
    message = signed(payloads(4))
    breaks(message)
    with pytest.raises(ClientError) as err:
        check(message)
    assert err.value.reason_name == BAD_BATCH


def test_a_batch_signature_never_passes_as_a_per_request_signature() -> None:
    message = signed(payloads(1))
    request = notarisation_pb2.NotarisationRequest(
        payload=message.requests[0].payload, signature=message.batch_signature.signature
    )
    with pytest.raises(ClientError) as err:
        admit(request, ME, P.membership, NOW)
    assert err.value.reason_name == "BAD_SIGNATURE"


def test_requests_of_a_signed_batch_name_the_signer_and_carry_no_own_signature() -> None:
    bob_asks = payload((Ref("dd" * 32, 0),), requester=P.bob.identity_bytes)
    message = signed([*payloads(1), bob_asks])
    signer = check(message)  # alice signed a batch holding a request naming bob
    with pytest.raises(ClientError) as err:
        admit(message.requests[1], ME, P.membership, NOW, signer)
    assert err.value.reason_name == BAD_REQUEST
    own = notarisation_pb2.NotarisationRequest(
        payload=message.requests[0].payload, signature=P.alice.sign(message.requests[0].payload)
    )
    with pytest.raises(ClientError) as err:
        admit(own, ME, P.membership, NOW, signer)
    assert err.value.reason_name == BAD_REQUEST


def test_per_request_checks_still_run_under_a_batch_signature() -> None:
    wrong = notarisation_pb2.NotarisationPayload.FromString(payloads(1)[0])
    wrong.tx_id = "ab" * 32
    message = signed([wrong.SerializeToString()])
    signer = check(message)
    with pytest.raises(ClientError) as err:
        admit(message.requests[0], ME, P.membership, NOW, signer)
    assert err.value.reason_name == "TX_ID_MISMATCH"


# --- the notary cluster: the batch in wraps ----------------------------------------------------

CLUSTER = NotaryIdentity(NOTARY, P.notary.identity_bytes)


def parts(message: Message, cut: int) -> list[bytes]:
    """The batch split in two wraps, as a replica wraps a large batch (all hashes in each)."""
    raws = [r.SerializeToString() for r in message.requests]
    stamp = to_ns(NOW)
    hashes = hashes_of(message)
    return [
        wrap(raws[:cut], stamp, 0, message.batch_signature, hashes),
        wrap(raws[cut:], stamp, 0, message.batch_signature, hashes),
    ]


def fresh_membership() -> Membership:
    """The same members with an empty cache of verified signatures."""
    roots = {org: P.membership.root_certificate(org) for org in P.membership.org_ids}
    return Membership({o: c.public_bytes(Encoding.PEM) for o, c in roots.items() if c})


def test_a_replica_checks_a_split_batch_signature_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    real = identity_module.verify_signature

    def counting(key: object, data: bytes, signature: bytes) -> None:
        calls.append(data)
        real(key, data, signature)  # type: ignore[arg-type]

    monkeypatch.setattr(identity_module, "verify_signature", counting)
    membership = fresh_membership()
    message = signed(payloads(6))
    opened = [open_request(w, 4, CLUSTER, membership) for w in parts(message, 4)]
    items = [i for u in opened for i in u.items]
    assert [getattr(i, "inputs", None) for i in items] == [(Ref(f"{k:064x}", 0),) for k in range(6)]
    assert len(calls) == 1  # one public-key operation for the batch, none per request
    assert open_request(parts(message, 2)[0], 4, CLUSTER, membership).items
    assert len(calls) == 1  # re-opened (e.g. the admitting replica): remembered, not redone


def test_a_replica_refuses_a_forged_batch_and_requests_it_does_not_cover() -> None:
    message = signed(payloads(3))
    _other_signer(message)
    for part in parts(message, 1):
        opened = open_request(part, 4, CLUSTER, P.membership)
        assert {getattr(i, "reason", None) for i in opened.items} == {_reason(BAD_BATCH)}
    good = signed(payloads(3))
    raws = [r.SerializeToString() for r in good.requests]
    smuggled = notarisation_pb2.NotarisationRequest(payload=payload((Ref("ee" * 32, 0),)))
    forged = wrap(
        [*raws, smuggled.SerializeToString()],
        to_ns(NOW),
        0,
        good.batch_signature,
        hashes_of(good),
    )
    items = open_request(forged, 4, CLUSTER, P.membership).items
    assert [getattr(i, "reason", 0) for i in items] == [0, 0, 0, _reason(BAD_REQUEST)]
    unsigned = wrap([smuggled.SerializeToString()], to_ns(NOW), 0)
    (refused,) = open_request(unsigned, 4, CLUSTER, P.membership).items
    assert getattr(refused, "reason", 0) == _reason("MISSING_FIELD")


def _reason(name: str) -> int:
    return errors_pb2.ErrorReason.Value("ERROR_REASON_" + name)


# --- deciding batch-signed requests: the property --------------------------------------------


class MemoryView:
    def __init__(self) -> None:
        self.consumed: dict[Ref, str] = {}
        self.signatures: dict[str, bytes] = {}

    def consumer_of(self, ref: Ref) -> str | None:
        return self.consumed.get(ref)

    def signature_of(self, tx_id: str) -> bytes | None:
        return self.signatures.get(tx_id)


POOL = [payload((Ref(f"{i:064x}", 0), Ref(f"{i + 1:064x}", 0))) for i in range(6)]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(0, len(POOL) - 1), max_size=6), max_size=5))
def test_batch_signed_requests_spend_each_state_once_and_retries_get_the_same_answer(
    batches: list[list[int]],
) -> None:
    """Batches of batch-signed requests drawn from a pool of overlapping transactions (so a
    transaction may come again, in the same batch or later: a retry): against a naive model,
    a transaction is signed iff all its inputs were free or it was signed before, and then
    with the very signature it got the first time; no state is consumed twice."""
    core, view = SingleNotary(P.notary.sign), MemoryView()
    model: dict[Ref, str] = {}
    first_answer: dict[str, bytes] = {}
    for picks in batches:
        message = signed([POOL[i] for i in picks])
        signer = check(message)
        asks = [admit(r, ME, P.membership, NOW, signer) for r in message.requests]
        core.step(Decide(tuple(Ask(a, to_ns(NOW), k) for k, a in enumerate(asks)), view))
        out = core.ready()
        for spent in out.decided:
            view.consumed.update(spent.consumed)
            view.signatures.update(spent.attestations())
        for a, (_, decision) in zip(asks, out.replies, strict=True):
            if a.tx_id in first_answer:
                assert decision.signature == first_answer[a.tx_id]
                continue
            free = all(r not in model for r in a.inputs)
            assert bool(decision.signature) is free
            if free:
                model.update((r, a.tx_id) for r in a.inputs)
                first_answer[a.tx_id] = decision.signature
        assert view.consumed == model


def test_a_merged_wrap_opens_each_part_against_its_own_batch_signature() -> None:
    """Two clients' batch-signed messages merged into one wrap (`wrap_parts`): every request
    is admitted, in part order; a request moved into the OTHER part (whose hashes do not
    name it) is refused there, although the wrap as a whole names it."""
    first, second = signed(payloads(3)), signed(payloads(2, first=10))

    def part_of(message: Message, requests: list[bytes]) -> Part:
        return Part(requests, message.batch_signature, hashes_of(message))

    raws = [[r.SerializeToString() for r in m.requests] for m in (first, second)]
    merged = wrap_parts([part_of(first, raws[0]), part_of(second, raws[1])], to_ns(NOW), 1)
    items = open_request(merged, 4, CLUSTER, P.membership).items
    inputs = [getattr(i, "inputs", None) for i in items]
    assert inputs == [(Ref(f"{k:064x}", 0),) for k in (0, 1, 2, 10, 11)]
    moved = wrap_parts(
        [part_of(first, raws[0][:2]), part_of(second, [*raws[1], raws[0][2]])], to_ns(NOW), 1
    )
    items = open_request(moved, 4, CLUSTER, P.membership).items
    assert [getattr(i, "reason", 0) for i in items] == [0, 0, 0, 0, _reason(BAD_REQUEST)]
