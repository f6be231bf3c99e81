"""A plain key-value contract: the simplest workload, and a tool for tests.

Written with the contract SDK (see `bank.py` for what that means for deployment).
"""

from __future__ import annotations

from typing import Annotated

from dltmw.contract_sdk import Context, Contract, ContractError, Text, query, transaction

Key = Annotated[str, Text(1, 256)]


class KvContract(Contract):
    """put / get / delete / range / incr."""

    name = "kv"

    @transaction
    def put(self, ctx: Context, key: Key, value: bytes) -> bytes:
        """put(key, value): blind write (reads nothing, so it never conflicts)."""
        ctx.put(key, value)
        return b""

    @query
    def get(self, ctx: Context, key: Key) -> bytes:
        """get(key): the value, or 404."""
        value = ctx.get(key)
        if value is None:
            raise ContractError("key not found", 404)
        return value

    @transaction
    def delete(self, ctx: Context, key: Key) -> bytes:
        """delete(key)."""
        if ctx.get(key) is None:
            raise ContractError("key not found", 404)
        ctx.delete(key)
        return b""

    @transaction
    def incr(self, ctx: Context, key: Key) -> bytes:
        """incr(key): read-modify-write of a counter (a hot key conflicts)."""
        current = ctx.get(key)
        new = (int(current) if current is not None else 0) + 1
        ctx.put(key, str(new).encode())
        return str(new).encode()

    @query
    def range(self, ctx: Context, start: Key, end: str = "") -> bytes:
        """range(start, end): newline-separated `key=value` lines."""
        return b"\n".join(k.encode() + b"=" + v for k, v in ctx.range(start, end))
