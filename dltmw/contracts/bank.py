"""The paper's bank contract (Figure 8): accounts with integer balances, no overdrafts.

Written with the contract SDK like any user contract (it passes the install-time static check
and loads from its package: `dltmw.contracts.builtin_package`); until the lifecycle deploys it,
nodes still register it as a built-in by name.

Balances are stored as decimal ASCII under the account name. `payment` reads both accounts, so it
conflicts (MVCC) with any transaction of the same block that changed either of them earlier —
the behaviour Figure 8 of the JPX paper shows for Fabric v1.0 (read-modify-write on purpose).
Amounts arrive as text and are checked here, not by an `int` annotation, to keep the refusal
messages the bank has always given.
"""

from __future__ import annotations

from typing import Annotated

from dltmw.contract_sdk import Context, Contract, ContractError, Label, Text, query, transaction

AMOUNT_MAX = 10**15

Account = Annotated[str, Text(1, 128)]
Amount = Annotated[str, Text(1, 128)]


def _amount(raw: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) <= AMOUNT_MAX:
        raise ContractError(f"amount must be an integer in 1..{AMOUNT_MAX}, got {raw!r}")
    return int(raw)


def _balance(ctx: Context, account: str) -> int:
    value = ctx.get(account)
    if value is None:
        raise ContractError(f"account {account!r} does not exist", 404)
    return int(value)


class BankContract(Contract):
    """open / deposit / withdraw / payment / balance."""

    name = "bank"

    @transaction
    def open(self, ctx: Context, account: Account, initial_balance: Amount) -> bytes:
        """open(account, initial_balance): create an account."""
        if not initial_balance.isdigit() or int(initial_balance) > AMOUNT_MAX:
            raise ContractError(f"initial balance must be an integer in 0..{AMOUNT_MAX}")
        if ctx.get(account) is not None:
            raise ContractError(f"account {account!r} already exists", 409)
        ctx.put(account, str(int(initial_balance)).encode())
        ctx.emit("opened", account.encode())
        return str(int(initial_balance)).encode()

    @transaction
    def deposit(self, ctx: Context, account: Account, amount: Amount) -> bytes:
        """deposit(account, amount)."""
        new = _balance(ctx, account) + _amount(amount)
        ctx.put(account, str(new).encode())
        return str(new).encode()

    @transaction
    def withdraw(self, ctx: Context, account: Account, amount: Amount) -> bytes:
        """withdraw(account, amount); refuses an overdraft."""
        value = _amount(amount)
        balance = _balance(ctx, account)
        if value > balance:
            raise ContractError(f"insufficient funds in {account!r}: {balance} < {value}")
        ctx.put(account, str(balance - value).encode())
        return str(balance - value).encode()

    @transaction
    def payment(
        self,
        ctx: Context,
        src: Annotated[str, Text(1, 128), Label("from")],
        dst: Annotated[str, Text(1, 128), Label("to")],
        amount: Amount,
    ) -> bytes:
        """payment(from, to, amount); refuses an overdraft and self-payment."""
        value = _amount(amount)
        if src == dst:
            raise ContractError("payment to the same account")
        src_balance, dst_balance = _balance(ctx, src), _balance(ctx, dst)
        if value > src_balance:
            raise ContractError(f"insufficient funds in {src!r}: {src_balance} < {value}")
        ctx.put(src, str(src_balance - value).encode())
        ctx.put(dst, str(dst_balance + value).encode())
        ctx.emit("payment", f"{src}->{dst}:{value}".encode())
        return str(src_balance - value).encode()

    @query
    def balance(self, ctx: Context, account: Account) -> bytes:
        """balance(account)."""
        return str(_balance(ctx, account)).encode()
