"""The bank contracts: accounts with integer balances, no overdrafts; `bank` takes hot accounts.

`bank_rmw` (`BankRmwContract`) is the JPX paper's bank for Fabric v1.0: every function reads
the balance it changes, so Figure 8 comes out exactly for it and a hot account collapses under
it (of N concurrent deposits endorsed on one state only the first commits). `bank`
(`BankContract`) is the same contract except for these two functions:

`deposit` and `withdraw` change the balance by a bounded delta (`ctx.add(account, amount,
min=0)`, issue 13): they record no read version, so any number of them on one account commit in
one block (an omnibus or fee account no longer collapses under MVCC), and a withdraw that would
take the balance below 0 on the value the earlier transactions left is invalidated at commit
(DELTA_BOUND_VIOLATED) — the balance is never negative on any peer, and always equals the
opening balance plus the valid deltas. The endorser still refuses at once an unknown account
(404) or an overdraft on its own snapshot (400, "insufficient funds"); their results carry no
balance, since endorsers at different heights would sign different ones: ask `balance`.

`payment` keeps the paper's read-modify-write on purpose: it checks the payer's balance exactly
at endorsement and returns the payer's new balance, and so Figure 8 (deposit A, withdraw B,
payment A -> C endorsed on one state: VALID, VALID, MVCC_READ_CONFLICT — the deposit's delta
gives A a new version before the payment's read of it) comes out exactly for this contract as
for `bank_rmw`. The price: a payment from or to a hot account conflicts with that block's
earlier deltas on it.

Written with the contract SDK like any user contract (both pass the install-time static check
and load from their package, this one file: `dltmw.contracts.builtin_package`); until the
lifecycle deploys them, nodes still register them as built-ins by name.

Balances are stored as canonical decimal ASCII under the account name (what deltas apply to).
Amounts arrive as text and are checked here, not by an `int` annotation, to keep the refusal
messages the bank has always given.
"""

from __future__ import annotations

from typing import Annotated

from dltmw.contract_sdk import (
    Context,
    Contract,
    ContractError,
    DeltaRefused,
    Label,
    Text,
    query,
    transaction,
)

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


class BankRmwContract(Contract):
    """The paper's bank: open / deposit / withdraw / payment / balance, each a read-modify-write
    (deposit and withdraw return the new balance)."""

    name = "bank_rmw"

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


def _add(ctx: Context, account: str, amount: int) -> None:
    try:
        ctx.add(account, amount, min=0)
    except DeltaRefused as exc:
        raise ContractError(
            f"insufficient funds in {account!r}: {exc.current} < {-amount}"
        ) from None
    except ContractError as exc:
        if exc.status == 404:
            raise ContractError(f"account {account!r} does not exist", 404) from None
        raise


class BankContract(BankRmwContract):
    """`bank`: the paper's bank with deposit and withdraw as bounded deltas."""

    name = "bank"

    @transaction
    def deposit(self, ctx: Context, account: Account, amount: Amount) -> bytes:
        """deposit(account, amount): a delta, returns b"" (the balance is known at commit)."""
        _add(ctx, account, _amount(amount))
        return b""

    @transaction
    def withdraw(self, ctx: Context, account: Account, amount: Amount) -> bytes:
        """withdraw(account, amount): a delta bounded by 0; refuses a visible overdraft."""
        _add(ctx, account, -_amount(amount))
        return b""
