"""A plain key-value contract: the simplest workload, and a tool for tests."""

from __future__ import annotations

from collections.abc import Sequence

from dltmw.core.contract import Context, Contract, ContractError


def _key(args: Sequence[bytes], i: int = 0) -> str:
    if len(args) <= i:
        raise ContractError(f"missing argument {i + 1}: key")
    try:
        key = args[i].decode()
    except UnicodeDecodeError as exc:
        raise ContractError("key is not UTF-8") from exc
    if not key or len(key) > 256:
        raise ContractError("key must be 1..256 characters")
    return key


class KvContract(Contract):
    """put / get / delete / range / incr."""

    name = "kv"

    def put(self, ctx: Context, args: Sequence[bytes]) -> bytes:
        """put(key, value): blind write (reads nothing, so it never conflicts)."""
        if len(args) < 2:
            raise ContractError("put needs key and value")
        ctx.put(_key(args), args[1])
        return b""

    def get(self, ctx: Context, args: Sequence[bytes]) -> bytes:
        """get(key): the value, or 404."""
        value = ctx.get(_key(args))
        if value is None:
            raise ContractError("key not found", 404)
        return value

    def delete(self, ctx: Context, args: Sequence[bytes]) -> bytes:
        """delete(key)."""
        key = _key(args)
        if ctx.get(key) is None:
            raise ContractError("key not found", 404)
        ctx.delete(key)
        return b""

    def incr(self, ctx: Context, args: Sequence[bytes]) -> bytes:
        """incr(key): read-modify-write of a counter (a hot key conflicts)."""
        key = _key(args)
        current = ctx.get(key)
        new = (int(current) if current is not None else 0) + 1
        ctx.put(key, str(new).encode())
        return str(new).encode()

    def range(self, ctx: Context, args: Sequence[bytes]) -> bytes:
        """range(start, end): newline-separated `key=value` lines."""
        start = _key(args)
        end = args[1].decode() if len(args) > 1 else ""
        return b"\n".join(k.encode() + b"=" + v for k, v in ctx.range(start, end))
