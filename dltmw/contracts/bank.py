"""The paper's bank contract (Figure 8): accounts with integer balances, no overdrafts.

Balances are stored as decimal ASCII under the account name. `payment` reads both accounts, so it
conflicts (MVCC) with any transaction of the same block that changed either of them earlier —
the behaviour Figure 8 of the JPX paper shows for Fabric v1.0.
"""

from __future__ import annotations

from collections.abc import Sequence

from dltmw.core.contract import Context, Contract, ContractError

AMOUNT_MAX = 10**15


def _text(args: Sequence[bytes], i: int, what: str) -> str:
    if len(args) <= i:
        raise ContractError(f"missing argument {i + 1}: {what}")
    try:
        value = args[i].decode()
    except UnicodeDecodeError as exc:
        raise ContractError(f"argument {i + 1} ({what}) is not UTF-8") from exc
    if not value or len(value) > 128:
        raise ContractError(f"argument {i + 1} ({what}) must be 1..128 characters")
    return value


def _amount(args: Sequence[bytes], i: int) -> int:
    raw = _text(args, i, "amount")
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

    def open(self, ctx: Context, args: Sequence[bytes]) -> bytes:
        """open(account, initial_balance): create an account."""
        account = _text(args, 0, "account")
        initial = _text(args, 1, "initial balance")
        if not initial.isdigit() or int(initial) > AMOUNT_MAX:
            raise ContractError(f"initial balance must be an integer in 0..{AMOUNT_MAX}")
        if ctx.get(account) is not None:
            raise ContractError(f"account {account!r} already exists", 409)
        ctx.put(account, str(int(initial)).encode())
        ctx.emit("opened", account.encode())
        return str(int(initial)).encode()

    def deposit(self, ctx: Context, args: Sequence[bytes]) -> bytes:
        """deposit(account, amount)."""
        account, amount = _text(args, 0, "account"), _amount(args, 1)
        new = _balance(ctx, account) + amount
        ctx.put(account, str(new).encode())
        return str(new).encode()

    def withdraw(self, ctx: Context, args: Sequence[bytes]) -> bytes:
        """withdraw(account, amount); refuses an overdraft."""
        account, amount = _text(args, 0, "account"), _amount(args, 1)
        balance = _balance(ctx, account)
        if amount > balance:
            raise ContractError(f"insufficient funds in {account!r}: {balance} < {amount}")
        ctx.put(account, str(balance - amount).encode())
        return str(balance - amount).encode()

    def payment(self, ctx: Context, args: Sequence[bytes]) -> bytes:
        """payment(from, to, amount); refuses an overdraft and self-payment."""
        src, dst, amount = _text(args, 0, "from"), _text(args, 1, "to"), _amount(args, 2)
        if src == dst:
            raise ContractError("payment to the same account")
        src_balance, dst_balance = _balance(ctx, src), _balance(ctx, dst)
        if amount > src_balance:
            raise ContractError(f"insufficient funds in {src!r}: {src_balance} < {amount}")
        ctx.put(src, str(src_balance - amount).encode())
        ctx.put(dst, str(dst_balance + amount).encode())
        ctx.emit("payment", f"{src}->{dst}:{amount}".encode())
        return str(src_balance - amount).encode()

    def balance(self, ctx: Context, args: Sequence[bytes]) -> bytes:
        """balance(account)."""
        return str(_balance(ctx, _text(args, 0, "account"))).encode()
