"""What the built-in flows put into a transaction (pure; the nonce and states are passed in).

Coin selection takes the party's unconsumed states of one asset and issuer, oldest first, until
the amount is covered; the change goes back to the party. A shortfall is NOT_FOUND (nothing is
built, so nothing moves).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dltmw.core.errors import ClientError
from dltmw.core.utxo.build import TxSpec, cash_output, dvp_command, security_output
from dltmw.core.utxo.contracts import ContractRejected, StateAndRef, cash_state, security_state
from dltmw.core.utxo.model import Command, Output, Ref, Window
from dltmw.v1 import errors_pb2, utxo_pb2

R = errors_pb2
NO_WINDOW = Window()


@dataclass(frozen=True)
class Holding:
    """A selectable state: its ref, issuer, owner, asset and amount."""

    ref: Ref
    issuer: bytes
    owner: bytes
    asset: str
    amount: int


def holding(state: StateAndRef) -> Holding | None:
    """Holding view of a cash or security state; None for others or malformed ones."""
    try:
        if state.output.contract == "cash":
            c = cash_state(state.output)
            return Holding(state.ref, c.issuer, c.owner, c.currency, c.amount)
        if state.output.contract == "security":
            s = security_state(state.output)
            return Holding(state.ref, s.issuer, s.owner, s.isin, s.quantity)
    except ContractRejected:
        return None
    return None


def select(holdings: Sequence[Holding], asset: str, amount: int) -> list[Holding]:
    """States of one issuer covering `amount` of `asset`; NOT_FOUND if no issuer suffices."""
    if amount <= 0:
        raise ClientError(R.ERROR_REASON_INVALID_FIELD, "amount must be positive")
    by_issuer: dict[bytes, list[Holding]] = {}
    for h in holdings:
        if h.asset == asset:
            by_issuer.setdefault(h.issuer, []).append(h)
    for group in by_issuer.values():
        chosen, total = [], 0
        for h in group:
            chosen.append(h)
            total += h.amount
            if total >= amount:
                return chosen
    raise ClientError(R.ERROR_REASON_NOT_FOUND, f"not enough unconsumed {asset} to cover {amount}")


def _output(contract: str, issuer: bytes, owner: bytes, asset: str, amount: int) -> Output:
    if contract == "cash":
        return cash_output(issuer, owner, asset, amount)
    if contract == "security":
        return security_output(issuer, owner, asset, amount)
    raise ClientError(R.ERROR_REASON_INVALID_FIELD, f"unknown contract {contract!r}")


def issue_plan(
    notary: str,
    nonce: bytes,
    contract: str,
    issuer: bytes,
    owner: bytes,
    asset: str,
    amount: int,
    memo: bytes = b"",
    window: Window = NO_WINDOW,
) -> TxSpec:
    """Issue `amount` of `asset` to `owner`; the issuer signs."""
    if amount <= 0 or not asset or not owner:
        raise ClientError(R.ERROR_REASON_INVALID_FIELD, "issue needs an owner, asset and amount")
    return TxSpec(
        notary=notary,
        nonce=nonce,
        outputs=[_output(contract, issuer, owner, asset, amount)],
        commands=[Command(contract, "issue", (issuer,), memo)],
        window=window,
    )


def _leg(contract: str, chosen: Sequence[Holding], to: bytes, amount: int) -> list[Output]:
    """Outputs moving `amount` of the chosen states to `to`, change back to their owner."""
    first = chosen[0]
    outs = [_output(contract, first.issuer, to, first.asset, amount)]
    change = sum(h.amount for h in chosen) - amount
    if change:
        outs.append(_output(contract, first.issuer, first.owner, first.asset, change))
    return outs


def move_plan(
    notary: str,
    nonce: bytes,
    contract: str,
    chosen: Sequence[Holding],
    new_owner: bytes,
    amount: int,
    memo: bytes = b"",
    window: Window = NO_WINDOW,
) -> TxSpec:
    """Move `amount` of the chosen states (one owner) to `new_owner`; the owner signs."""
    name = {"cash": "move", "security": "transfer"}.get(contract)
    if name is None or not chosen or not new_owner:
        raise ClientError(R.ERROR_REASON_INVALID_FIELD, "move needs a contract, states, an owner")
    return TxSpec(
        notary=notary,
        nonce=nonce,
        inputs=[h.ref for h in chosen],
        outputs=_leg(contract, chosen, new_owner, amount),
        commands=[Command(contract, name, (chosen[0].owner,), memo)],
        window=window,
    )


def dvp_plan(
    notary: str,
    nonce: bytes,
    terms: utxo_pb2.DvpTerms,
    securities: Sequence[Holding],
    cash: Sequence[Holding],
    memo: bytes = b"",
    window: Window = NO_WINDOW,
) -> TxSpec:
    """Delivery versus payment: the seller's securities to the buyer and the buyer's cash to the
    seller, in one transaction that both must sign."""
    if not securities or not cash:
        raise ClientError(R.ERROR_REASON_NOT_FOUND, "dvp needs both legs' input states")
    return TxSpec(
        notary=notary,
        nonce=nonce,
        inputs=[h.ref for h in (*securities, *cash)],
        outputs=[
            *_leg("security", securities, terms.buyer, terms.quantity),
            *_leg("cash", cash, terms.seller, terms.amount),
        ],
        commands=[
            Command("security", "transfer", (terms.seller,), memo),
            Command("cash", "move", (terms.buyer,)),
            dvp_command(
                terms.buyer,
                terms.seller,
                terms.isin,
                terms.quantity,
                terms.currency,
                terms.amount,
            ),
        ],
        window=window,
    )
