"""The notary's sqlite spent-set: what a decision spent is committed at once and read back for
the next one (through the seen-filters that skip lookups of keys never written), signatures
survive a reopen (same bytes), and the primary key refuses a double spend even if the core were
wrong."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from utxo_parties import make_parties

from dltmw.core.handlers.notary import Ask, Decide, NotaryEffects, SingleNotary
from dltmw.core.notary import NotarisationAsk
from dltmw.core.utxo.model import Ref, Window
from dltmw.ledger.notary_store import NotaryStore
from dltmw.ledger.seen_filter import SeenFilter
from dltmw.v1 import errors_pb2

P = make_parties()
R1, R2 = Ref("01" * 32, 0), Ref("02" * 32, 1)
T1, T2 = "a1" * 32, "b2" * 32
NO_WINDOW = Window()


def ask(tx_id: str, *inputs: Ref) -> Ask:
    return Ask(NotarisationAsk(tx_id, inputs, (), NO_WINDOW, b""), 0, tx_id)


def decide(store: NotaryStore, *asks: Ask) -> NotaryEffects:
    """One driver step, by hand: load the rows the asks touch, step a core, record what it
    spent (all on the store thread, as the driver runs it)."""

    def step() -> NotaryEffects:
        core = SingleNotary(P.notary.sign)
        core.step(Decide(asks, store.rows_for([a.ask for a in asks])))
        effects = core.ready()
        for spent in effects.decided:
            store.record(spent)
        return effects

    return store.run(step)


def test_decisions_are_durable_and_idempotent_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "notary.sqlite"
    store = NotaryStore(path, P.notary.sign)
    store.open()
    first = decide(store, ask(T1, R1, R2), ask(T2, R2))
    store.close()
    signed, refused = (d for _, d in first.replies)
    assert signed.signature and refused.reason == errors_pb2.ERROR_REASON_INPUT_CONSUMED
    reopened = NotaryStore(path, P.notary.sign)
    reopened.open()
    again = decide(reopened, ask(T1, R1, R2), ask(T2, R2))
    reopened.close()
    assert [d for _, d in again.replies] == [d for _, d in first.replies]
    assert again.decided == ()  # nothing new spent: the stored signature was answered
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM spent").fetchone()[0] == 2
        assert conn.execute("SELECT tx_id, inputs FROM notarised").fetchall() == [(T1, 2)]


class BrokenView:
    """A view that forgets everything: the core would sign a double spend."""

    def consumer_of(self, ref: Ref) -> str | None:
        return None

    def signature_of(self, tx_id: str) -> bytes | None:
        return None


def test_the_primary_key_refuses_a_double_spend_and_rolls_back(tmp_path: Path) -> None:
    store = NotaryStore(tmp_path / "notary.sqlite", P.notary.sign)
    store.open()
    decide(store, ask(T1, R1))

    def broken() -> None:
        core = SingleNotary(P.notary.sign)
        core.step(Decide((ask(T2, R1, R2),), BrokenView()))
        (spent,) = core.ready().decided
        store.record(spent)

    with pytest.raises(sqlite3.IntegrityError):
        store.run(broken)
    rows = store.run(lambda: store._conn.execute("SELECT ref, tx_id FROM spent").fetchall())  # type: ignore[union-attr]
    store.close()
    assert rows == [(R1.key, T1)]


def test_a_later_step_sees_what_an_earlier_step_spent(tmp_path: Path) -> None:
    """Each step loads only what the seen-filters say may be stored: a state spent in an
    earlier step (of this open store) must still be found, and a signed tx_id answered again."""
    store = NotaryStore(tmp_path / "notary.sqlite", P.notary.sign)
    store.open()
    (signed,) = (d for _, d in decide(store, ask(T1, R1)).replies)
    late = decide(store, ask(T2, R2, R1), ask(T1, R1))
    store.close()
    refused, again = (d for _, d in late.replies)
    assert refused.reason == errors_pb2.ERROR_REASON_INPUT_CONSUMED
    assert [c.ref for c in refused.conflicts] == [R1]
    assert again == signed and late.decided == ()


@settings(max_examples=30, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=40), max_size=200))
def test_the_seen_filter_never_hides_a_key_it_was_given(keys: list[bytes]) -> None:
    seen = SeenFilter(bits_log2=12)  # small: many collisions, which may only add positives
    for k in keys:
        seen.add(k)
    assert all(seen.may_hold(k) for k in keys)
