"""Contracts as classes: `@transaction` and `@query` methods with typed arguments.

    class Counter(Contract):
        name = "counter"

        @transaction
        def add(self, ctx: Context, key: str, by: int) -> int: ...

        @query
        def get(self, ctx: Context, key: str) -> int: ...

Only decorated methods are invocable (by their Python name). Each call converts the invocation's
`args` by the parameters' annotations (`types.py`: a mismatch is a 400 naming the argument; more
arguments than parameters is a 400 too, unless the function takes `*rest`), runs the method with
a `Context`, and encodes its return value. A `@query` runs with a read-only context: a write or
event is a 500 (the contract's bug), so a query can never change state even if submitted.

Every invocation runs in a fresh default `decimal` context, so a contract that changes the
precision cannot change what the next invocation on the same thread computes.
"""

from __future__ import annotations

import decimal
import inspect
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from dltmw.contract_sdk.types import (
    ConversionError,
    check_annotation,
    decoder_for,
    encode_result,
    label_of,
)
from dltmw.core.contract import Context as CoreContext
from dltmw.core.contract import Contract as CoreContract
from dltmw.core.contract import ContractError, ContractFunction, TxInfo

F = TypeVar("F", bound=Callable[..., Any])
KIND = "_dltmw_kind"
SPECS = "_dltmw_specs"


def transaction(fn: F) -> F:
    """Mark a method as a transaction function (may read and write state, emit events)."""
    setattr(fn, KIND, "transaction")
    return fn


def query(fn: F) -> F:
    """Mark a method as a query function (reads only; a write is refused)."""
    setattr(fn, KIND, "query")
    return fn


class Context:
    """What a contract function sees: deterministic access only.

    get(key) -> bytes | None; range(start, end="") -> [(key, value)] in key order; put(key,
    value: bytes); delete(key); add(key, amount, *, min=0, max=None): a commutative bounded
    delta on an integer key, no read version (`core/contract.py`); emit(name, payload) (payload
    encoded like a result); `tx`: the transaction's TxInfo from its signed header (tx_id,
    creator_org, creator_identity, creator_name, creator_roles, channel_id, timestamp_s) or None
    where there is none.
    Reads see committed state only.
    """

    __slots__ = ("add", "delete", "emit", "get", "put", "range", "tx")

    def __init__(self, core: CoreContext) -> None:
        self.get: Callable[[str], bytes | None] = core.get
        self.range: Callable[..., list[tuple[str, bytes]]] = core.range
        self.put: Callable[[str, bytes], None] = core.put
        self.delete: Callable[[str], None] = core.delete

        def add(key: str, amount: int, *, min: int | None = 0, max: int | None = None) -> None:
            core.add(key, amount, min, max)

        self.add: Callable[..., None] = add

        def emit(name: str, payload: object = b"") -> None:
            core.emit(name, encode_result(payload))

        self.emit: Callable[..., None] = emit
        self.tx: TxInfo | None = core.tx


@dataclass(frozen=True)
class Param:
    """One parameter of a contract function."""

    name: str
    label: str
    annotation: object
    decode: Callable[[bytes], object]
    default: object = inspect.Parameter.empty


@dataclass(frozen=True)
class FunctionSpec:
    """A contract function: its kind and parameters (after `ctx`)."""

    name: str
    kind: str
    params: tuple[Param, ...]
    rest: Param | None = None


def _spec(name: str, method: Callable[..., Any]) -> FunctionSpec:
    hints = typing.get_type_hints(method, include_extras=True)
    params = list(inspect.signature(method).parameters.values())[2:]  # after self, ctx
    out: list[Param] = []
    rest: Param | None = None
    for p in params:
        annotation = hints.get(p.name, bytes)
        try:
            check_annotation(annotation)
        except ConversionError as exc:
            raise TypeError(f"{name}({p.name}): {exc}") from None
        label = label_of(annotation, p.name)
        param = Param(p.name, label, annotation, decoder_for(annotation), p.default)
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            rest = param
        elif p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.POSITIONAL_ONLY):
            out.append(param)
        else:
            raise TypeError(f"{name}({p.name}): only positional parameters and *rest")
    return FunctionSpec(name, getattr(method, KIND), tuple(out), rest)


class Contract(CoreContract):
    """Base class of SDK contracts (see the module docstring)."""

    name = ""

    @classmethod
    def functions(cls) -> dict[str, FunctionSpec]:
        """Every invocable function by name (computed once per class; TypeError if an
        annotation is not supported, so a bad package fails at load, not at first call)."""
        return dict(cls._specs())

    @classmethod
    def _specs(cls) -> dict[str, FunctionSpec]:
        cached: dict[str, FunctionSpec] | None = cls.__dict__.get(SPECS)
        if cached is None:
            cached = {
                name: _spec(name, member)
                for name, member in inspect.getmembers(cls, inspect.isfunction)
                if getattr(member, KIND, None) and not name.startswith("_")
            }
            setattr(cls, SPECS, cached)
        return cached

    def function(self, name: str) -> ContractFunction | None:
        """The invocable function `name` (decorated), converting arguments and result."""
        spec = self._specs().get(name)
        if spec is None:
            return None
        method = getattr(self, name)
        return lambda ctx, args: invoke(spec, method, ctx, args)


def decode_args(spec: FunctionSpec, args: Sequence[bytes]) -> list[object]:
    """The converted arguments of one call (ContractError 400 naming the argument)."""
    if len(args) > len(spec.params) and spec.rest is None:
        raise ContractError(
            f"{spec.name} takes at most {len(spec.params)} arguments, got {len(args)}"
        )
    values: list[object] = []
    for i, raw in enumerate(args):
        param = spec.params[i] if i < len(spec.params) else spec.rest
        if param is None:  # unreachable: checked above
            raise ContractError(f"{spec.name}: too many arguments")
        try:
            values.append(param.decode(raw))
        except ConversionError as exc:
            raise ContractError(f"argument {i + 1} ({param.label}) {exc}") from None
    for i in range(len(args), len(spec.params)):
        param = spec.params[i]
        if param.default is inspect.Parameter.empty:
            raise ContractError(f"missing argument {i + 1}: {param.label}")
        values.append(param.default)
    return values


def invoke(
    spec: FunctionSpec, method: Callable[..., object], ctx: CoreContext, args: Sequence[bytes]
) -> bytes:
    """Run one contract function on converted arguments; its result as bytes."""
    values = decode_args(spec, args)
    ctx.read_only = spec.kind == "query"
    with decimal.localcontext(decimal.Context()):
        result = method(Context(ctx), *values)
    try:
        return encode_result(result)
    except ConversionError as exc:
        raise ContractError(f"{spec.name}: {exc}", 500) from None
