"""The single-notary core: admission of signed requests (tampering refused with a specific
reason) and the ordered decision over the spent-set (uniqueness, references, time window,
idempotency, conflicts naming only a hash)."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from utxo_parties import NOTARY, NOW, make_parties, tx

from dltmw.core.errors import ClientError
from dltmw.core.handlers.notary import Ask, Decide, Decision, SingleNotary
from dltmw.core.notary import NotarisationAsk, NotaryIdentity, admit
from dltmw.core.notary_batch import signed_message
from dltmw.core.utxo.build import (
    cash_output,
    notarisation_payload,
    sign_request,
    sign_transaction,
    state_ref,
)
from dltmw.core.utxo.model import Command, Ref, Window, to_ns
from dltmw.core.utxo.verify import read_signed
from dltmw.v1 import errors_pb2, notarisation_pb2, utxo_pb2

P = make_parties()
ME = NotaryIdentity(NOTARY, P.notary.identity_bytes)
A, B, BANK = P.alice.identity_bytes, P.bob.identity_bytes, P.bank.identity_bytes
ANY_TIME = Window()
R1, R2, R3 = (Ref(f"{i:064x}", 0) for i in (1, 2, 3))


class MemoryView:
    """A durable spent-set stand-in: what earlier batches committed."""

    def __init__(self) -> None:
        self.consumed: dict[Ref, str] = {}
        self.signatures: dict[str, bytes] = {}

    def consumer_of(self, ref: Ref) -> str | None:
        return self.consumed.get(ref)

    def signature_of(self, tx_id: str) -> bytes | None:
        return self.signatures.get(tx_id)


def notary() -> tuple[SingleNotary, MemoryView]:
    view = MemoryView()
    return SingleNotary(P.notary.sign), view


def run(
    handler: SingleNotary, view: MemoryView, *asks: NotarisationAsk, now: int = 0
) -> list[Decision]:
    """Step a batch, 'persist' what it spent into the view, return the decisions."""
    handler.step(Decide(tuple(Ask(ask, now, i) for i, ask in enumerate(asks)), view))
    out = handler.ready()
    for spent in out.decided:
        view.consumed.update(spent.consumed)
        view.signatures.update(spent.attestations())
    assert [token for token, _ in out.replies] == list(range(len(asks)))
    return [d for _, d in out.replies]


def ask(
    tx_id: str, *inputs: Ref, refs: tuple[Ref, ...] = (), window: Window = ANY_TIME
) -> NotarisationAsk:
    return NotarisationAsk(tx_id, inputs, refs, window, A)


T1, T2, T3 = "a1" * 32, "b2" * 32, "c3" * 32


def test_first_spend_wins_within_and_across_batches() -> None:
    handler, view = notary()
    first, second = run(handler, view, ask(T1, R1, R2), ask(T2, R2, R3))
    P.membership.verify(
        P.notary.identity_bytes, signed_message(T1, first.proof), first.signature, NOW
    )
    assert second.reason == errors_pb2.ERROR_REASON_INPUT_CONSUMED
    assert [c.ref for c in second.conflicts] == [R2]
    assert second.conflicts[0].consuming_tx_id_hash == hashlib.sha256(T1.encode()).digest()
    assert T1 not in second.message
    assert view.consumed == {R1: T1, R2: T1}
    (later,) = run(handler, view, ask(T3, R1))
    assert later.reason == errors_pb2.ERROR_REASON_INPUT_CONSUMED and not later.signature


def test_re_notarising_returns_the_same_signature_even_after_the_window_closed() -> None:
    handler, view = notary()
    (first,) = run(handler, view, ask(T1, R1, window=Window(None, 10)), now=5)
    dup_in_batch = run(
        handler,
        view,
        ask(T1, R1, window=Window(None, 10)),
        ask(T1, R1, window=Window(None, 10)),
        now=50,
    )
    assert [d.signature for d in dup_in_batch] == [first.signature] * 2
    fresh_handler = SingleNotary(P.notary.sign)  # a restart: only the durable view remains
    (again,) = run(fresh_handler, view, ask(T1, R1, window=Window(None, 10)), now=99)
    assert again.signature == first.signature and again.reason == 0


def test_second_request_for_the_same_tx_in_one_batch_gets_the_same_signature() -> None:
    handler, view = notary()
    one, two = run(handler, view, ask(T1, R1), ask(T1, R1))
    assert one.signature and one.signature == two.signature


def test_consumed_reference_is_refused_and_marked() -> None:
    handler, view = notary()
    run(handler, view, ask(T1, R1))
    (d,) = run(handler, view, ask(T2, R2, refs=(R1,)))
    assert d.reason == errors_pb2.ERROR_REASON_INPUT_CONSUMED
    assert d.conflicts[0].is_reference and d.conflicts[0].ref == R1
    assert R2 not in view.consumed


def test_references_are_not_consumed() -> None:
    handler, view = notary()
    a, b = run(handler, view, ask(T1, R1, refs=(R3,)), ask(T2, R2, refs=(R3,)))
    assert a.signature and b.signature and R3 not in view.consumed


@pytest.mark.parametrize(
    ("window", "ok"),
    [(Window(10, 20), True), (Window(11, 20), False), (Window(None, 10), False)],
    ids=["inside", "too-early", "too-late"],
)
def test_time_window_is_checked_at_the_notary(window: Window, ok: bool) -> None:
    handler, view = notary()
    (d,) = run(handler, view, ask(T1, R1, window=window), now=10)
    assert bool(d.signature) is ok
    if not ok:
        assert d.reason == errors_pb2.ERROR_REASON_TIME_WINDOW_INVALID and not view.consumed


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(st.lists(st.integers(0, 6), min_size=0, max_size=3), max_size=5), max_size=5)
)
def test_no_state_is_ever_consumed_twice(batches: list[list[list[int]]]) -> None:
    """Property: against a naive model, exactly the asks whose inputs were all free succeed."""
    handler, view = notary()
    model: dict[Ref, str] = {}
    n = 0
    for batch in batches:
        asks = []
        for inputs in batch:
            n += 1
            refs = tuple(dict.fromkeys(Ref(f"{i:064x}", 0) for i in inputs))
            asks.append(ask(f"{n:064x}", *refs))
        for a, d in zip(asks, run(handler, view, *asks), strict=True):
            free = all(r not in model for r in a.inputs)
            assert bool(d.signature) is free
            if free:
                model.update((r, a.tx_id) for r in a.inputs)
        assert view.consumed == model


# --- admission -------------------------------------------------------------------------------


def request(**overrides: object) -> tuple[notarisation_pb2.NotarisationRequest, str]:
    """A correctly signed request spending R1, R2 with reference R3."""
    _, wire = tx(
        inputs=[R1, R2],
        references=[R3],
        outputs=[cash_output(BANK, B, "JPY", 1)],
        commands=[Command("cash", "move", (A,))],
        window=Window(None, to_ns(NOW) + 10**12),
    )
    payload = notarisation_payload(wire, A)
    for k, v in overrides.items():
        if k == "mutate":
            v(payload)  # type: ignore[operator]
        else:
            setattr(payload, k, v)
    return sign_request(payload, P.alice), wire.tx_id


def test_a_well_formed_request_is_admitted() -> None:
    req, tx_id = request()
    got = admit(req, ME, P.membership, NOW)
    assert got.tx_id == tx_id and got.inputs == (R1, R2) and got.references == (R3,)


def _resigned_by_other(req: notarisation_pb2.NotarisationRequest) -> None:
    req.signature = P.bob.sign(req.payload)


def _payload_changed_after_signing(req: notarisation_pb2.NotarisationRequest) -> None:
    payload = notarisation_pb2.NotarisationPayload.FromString(req.payload)
    payload.inputs.append(state_ref(Ref("ee" * 32, 0)))
    req.payload = payload.SerializeToString()


TAMPERED = {
    "wrong-signer": (dict(), _resigned_by_other, "BAD_SIGNATURE"),
    "inputs-changed-after-signing": (dict(), _payload_changed_after_signing, "BAD_SIGNATURE"),
    "signed-other-inputs-than-tx": (
        dict(mutate=lambda p: p.inputs.append(state_ref(Ref("ee" * 32, 0)))),
        None,
        "TX_ID_MISMATCH",
    ),
    "dropped-reference": (
        dict(mutate=lambda p: p.ClearField("references")),
        None,
        "TX_ID_MISMATCH",
    ),
    "widened-time-window": (
        dict(mutate=lambda p: p.ClearField("time_window")),
        None,
        "TX_ID_MISMATCH",
    ),
    "wrong-tx-id": (dict(tx_id="ab" * 32), None, "TX_ID_MISMATCH"),
    "malformed-tx-id": (dict(tx_id="nothex"), None, "INVALID_FIELD"),
    "other-notary": (dict(notary="notary9"), None, "INVALID_FIELD"),
    "short-hash": (dict(outputs_hash=b"x"), None, "INVALID_FIELD"),
    "non-member-requester": (dict(requester=P.outsider.identity_bytes), None, "NOT_A_MEMBER"),
    "duplicate-input": (
        dict(mutate=lambda p: p.inputs.append(state_ref(R1))),
        None,
        "INVALID_FIELD",
    ),
}


@pytest.mark.parametrize("case", TAMPERED.values(), ids=TAMPERED.keys())
def test_tampered_requests_are_refused(case: tuple[dict[str, object], object, str]) -> None:
    overrides, post, reason = case
    req, _ = request(**overrides)
    if overrides.get("requester") == P.outsider.identity_bytes:
        req.signature = P.outsider.sign(req.payload)
    if post is not None:
        post(req)  # type: ignore[operator]
    with pytest.raises(ClientError) as err:
        admit(req, ME, P.membership, NOW)
    assert err.value.reason_name == reason


def test_unsigned_and_garbage_requests_are_refused() -> None:
    req, _ = request()
    for bad, reason in [
        (replace_sig(req, b""), "MISSING_FIELD"),
        (notarisation_pb2.NotarisationRequest(payload=b"\xff", signature=b"x"), "MALFORMED"),
    ]:
        with pytest.raises(ClientError) as err:
            admit(bad, ME, P.membership, NOW)
        assert err.value.reason_name == reason


def replace_sig(
    req: notarisation_pb2.NotarisationRequest, sig: bytes
) -> notarisation_pb2.NotarisationRequest:
    return notarisation_pb2.NotarisationRequest(payload=req.payload, signature=sig)


# --- validating mode ---------------------------------------------------------------------------

VALIDATING = replace(ME, validating=True)


def _issue() -> bytes:
    raw, wire = tx(
        outputs=[cash_output(BANK, A, "JPY", 100)], commands=[Command("cash", "issue", (BANK,))]
    )
    stx = sign_transaction(raw, wire.tx_id, [P.bank])
    stx.notary_signature.signer = P.notary.identity_bytes
    stx.notary_signature.signature = P.notary.sign(wire.tx_id.encode())
    return stx.SerializeToString()


def _move(dep: bytes, amount: int, signers: list[object]) -> notarisation_pb2.NotarisationRequest:
    issued = read_signed(dep).wire
    raw, wire = tx(
        inputs=[issued.out_ref(0)],
        outputs=[cash_output(BANK, B, "JPY", amount)],
        commands=[Command("cash", "move", (A,))],
    )
    stx = sign_transaction(raw, wire.tx_id, signers)  # type: ignore[arg-type]
    payload = notarisation_payload(wire, A, stx.SerializeToString(), [dep])
    return sign_request(payload, P.alice)


def test_validating_notary_accepts_a_valid_transaction() -> None:
    got = admit(_move(_issue(), 100, [P.alice]), VALIDATING, P.membership, NOW)
    assert len(got.inputs) == 1


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: _move(_issue(), 101, [P.alice]), "CONTRACT_FAILED"),
        (lambda: _move(_issue(), 100, []), "BAD_SIGNATURE"),
        (lambda: _move(_unnotarised_issue(), 100, [P.alice]), "BAD_SIGNATURE"),
        (lambda: _without_dependencies(_move(_issue(), 100, [P.alice])), "NOT_FOUND"),
        (lambda: request()[0], "MISSING_FIELD"),
    ],
    ids=[
        "contract-refuses",
        "missing-signature",
        "dependency-not-notarised",
        "no-backchain",
        "no-transaction",
    ],
)
def test_validating_notary_refuses(make: object, reason: str) -> None:
    with pytest.raises(ClientError) as err:
        admit(make(), VALIDATING, P.membership, NOW)  # type: ignore[operator]
    assert err.value.reason_name == reason


def _unnotarised_issue() -> bytes:
    dep = utxo_pb2.SignedUtxoTransaction.FromString(_issue())
    dep.ClearField("notary_signature")
    return dep.SerializeToString()


def _without_dependencies(
    req: notarisation_pb2.NotarisationRequest,
) -> notarisation_pb2.NotarisationRequest:
    payload = notarisation_pb2.NotarisationPayload.FromString(req.payload)
    del payload.dependencies[:]
    return sign_request(payload, P.alice)


def test_a_decided_cluster_request_that_breaks_admission_arithmetic_is_refused_not_raised() -> None:
    """A faulty cluster primary can wrap any bytes; every replica re-admits a decided batch
    (`runtime/roles/notary/cluster_open.open_request`), so an item must become a refusal, never an
    exception that would stop every replica's loop on the same batch."""
    from dltmw.core.notary_cluster import wrap
    from dltmw.runtime.roles.notary.cluster_open import open_request

    def far_future(payload: notarisation_pb2.NotarisationPayload) -> None:
        payload.time_window.until_time.seconds = 2**62

    req, _ = request(mutate=far_future)
    good, _ = request()
    stamp_ns = to_ns(NOW)
    wrapped = wrap([req.SerializeToString(), good.SerializeToString()], stamp_ns, 0)
    opened = open_request(wrapped, 4, ME, P.membership)
    refused, admitted = opened.items
    assert isinstance(refused, Decision) and refused.reason == errors_pb2.ERROR_REASON_INVALID_FIELD
    assert isinstance(admitted, NotarisationAsk)
