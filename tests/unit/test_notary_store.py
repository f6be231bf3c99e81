"""The notary's sqlite spent-set: a batch is decided and committed at once, signatures survive
a reopen (same bytes), and the primary key refuses a double spend even if the core were wrong."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from utxo_parties import make_parties

from dltmw.core.handlers.notary import Ask, SingleNotary
from dltmw.core.notary import NotarisationAsk
from dltmw.core.utxo.model import Ref, Window
from dltmw.ledger.notary_store import NotaryStore
from dltmw.v1 import errors_pb2

P = make_parties()
R1, R2 = Ref("01" * 32, 0), Ref("02" * 32, 1)
T1, T2 = "a1" * 32, "b2" * 32
NO_WINDOW = Window()


def ask(tx_id: str, *inputs: Ref) -> Ask:
    return Ask(NotarisationAsk(tx_id, inputs, (), NO_WINDOW, b""), 0, tx_id)


def test_decisions_are_durable_and_idempotent_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "notary.sqlite"
    store = NotaryStore(path, P.notary.sign)
    store.open()
    first = store.run(lambda: store.decide([ask(T1, R1, R2), ask(T2, R2)]))
    store.close()
    signed, refused = (d for _, d in first.replies)
    assert signed.signature and refused.reason == errors_pb2.ERROR_REASON_INPUT_CONSUMED
    reopened = NotaryStore(path, P.notary.sign)
    reopened.open()
    again = reopened.run(lambda: reopened.decide([ask(T1, R1, R2), ask(T2, R2)]))
    reopened.close()
    assert [d for _, d in again.replies] == [d for _, d in first.replies]
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
    store.run(lambda: store.decide([ask(T1, R1)]))

    def broken() -> None:
        conn = store._conn
        assert conn is not None
        core = SingleNotary(BrokenView(), P.notary.sign)
        core.step(ask(T2, R1, R2))
        ready = core.ready()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT INTO spent(ref, tx_id) VALUES (?,?)",
                [(r.key, t) for r, t in ready.consumed],
            )
        finally:
            conn.execute("ROLLBACK")

    with pytest.raises(sqlite3.IntegrityError):
        store.run(broken)
    rows = store.run(lambda: store._conn.execute("SELECT ref, tx_id FROM spent").fetchall())  # type: ignore[union-attr]
    store.close()
    assert rows == [(R1.key, T1)]
