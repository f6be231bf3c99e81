"""Flow plans: coin selection, and that issue / move / DvP plans build transactions the
contracts accept (so a flow never proposes something its own contracts refuse)."""

from __future__ import annotations

import pytest
from utxo_parties import NOTARY, make_parties, nonce

from dltmw.core.errors import ClientError
from dltmw.core.utxo.build import build_transaction
from dltmw.core.utxo.contracts import StateAndRef
from dltmw.core.utxo.model import Ref, read_transaction
from dltmw.core.utxo.plans import Holding, dvp_plan, holding, issue_plan, move_plan, select
from dltmw.core.utxo.verify import resolve, verify_ledger_tx
from dltmw.v1 import utxo_pb2

P = make_parties()
BANK, DEP = P.bank.identity_bytes, P.depository.identity_bytes
A, B = P.alice.identity_bytes, P.bob.identity_bytes


def h(i: int, amount: int, asset: str = "JPY", issuer: bytes = BANK, owner: bytes = A) -> Holding:
    return Holding(Ref(f"{i:064x}", 0), issuer, owner, asset, amount)


@pytest.mark.parametrize(
    ("holdings", "asset", "amount", "picked"),
    [
        ([h(1, 50), h(2, 50), h(3, 50)], "JPY", 100, [1, 2]),
        ([h(1, 500)], "JPY", 100, [1]),
        ([h(1, 50, "USD"), h(2, 100)], "JPY", 100, [2]),
        ([h(1, 60, issuer=DEP), h(2, 60)], "JPY", 100, None),
        ([h(1, 60, issuer=DEP), h(2, 60), h(3, 40, issuer=DEP)], "JPY", 100, [1, 3]),
        ([], "JPY", 1, None),
    ],
    ids=[
        "oldest-first",
        "one-covers",
        "other-asset-ignored",
        "issuers-never-mixed",
        "first-sufficient-issuer",
        "nothing-held",
    ],
)
def test_select(holdings: list[Holding], asset: str, amount: int, picked: list[int] | None) -> None:
    if picked is None:
        with pytest.raises(ClientError) as err:
            select(holdings, asset, amount)
        assert err.value.reason_name == "NOT_FOUND"
    else:
        assert [int(x.ref.tx_id, 16) for x in select(holdings, asset, amount)] == picked


def test_plans_build_transactions_the_contracts_accept() -> None:
    issue_sec = read_transaction(
        build_transaction(issue_plan(NOTARY, nonce(), "security", DEP, A, "X", 10))
    )
    issue_cash = read_transaction(
        build_transaction(issue_plan(NOTARY, nonce(), "cash", BANK, B, "JPY", 900))
    )
    known = {t.tx_id: t for t in (issue_sec, issue_cash)}

    def lookup(ref: Ref) -> object:
        return known[ref.tx_id].outputs[ref.index]

    def holdings_of(tx: object, i: int = 0) -> Holding:
        got = holding(StateAndRef(tx.out_ref(i), tx.outputs[i]))  # type: ignore[attr-defined]
        assert got is not None
        return got

    for wire in (issue_sec, issue_cash):
        verify_ledger_tx(resolve(wire, lookup))  # type: ignore[arg-type]
    move = read_transaction(
        build_transaction(move_plan(NOTARY, nonce(), "security", [holdings_of(issue_sec)], B, 4))
    )
    verify_ledger_tx(resolve(move, lookup))  # type: ignore[arg-type]
    assert len(move.outputs) == 2  # 4 to B, 6 change to A
    terms = utxo_pb2.DvpTerms(buyer=B, seller=A, isin="X", quantity=10, currency="JPY", amount=300)
    dvp = read_transaction(
        build_transaction(
            dvp_plan(NOTARY, nonce(), terms, [holdings_of(issue_sec)], [holdings_of(issue_cash)])
        )
    )
    verify_ledger_tx(resolve(dvp, lookup))  # type: ignore[arg-type]
    assert dvp.required_signers() == {A, B}


def test_plans_refuse_bad_input() -> None:
    for make in (
        lambda: issue_plan(NOTARY, nonce(), "cash", BANK, A, "JPY", 0),
        lambda: issue_plan(NOTARY, nonce(), "gold", BANK, A, "XAU", 1),
        lambda: move_plan(NOTARY, nonce(), "dvp", [h(1, 5)], B, 1),
    ):
        with pytest.raises(ClientError) as err:
            make()
        assert err.value.reason_name == "INVALID_FIELD"
