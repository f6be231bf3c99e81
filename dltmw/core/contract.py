"""The deterministic contract API and its simulation.

A contract is a plain Python object whose public functions take a `Context` and the invocation's
arguments. A function may read committed state (`get`, `range`), stage writes (`put`, `delete`),
emit events and return bytes, or refuse with `ContractError`. It must not do I/O, read a clock or
draw randomness: every endorser has to reach byte-identical results, or the gateway sees an
ENDORSEMENT_MISMATCH. As in Fabric, reads see committed state only (not the invocation's own
staged writes), and every read records the version it saw, so validation at commit can refuse the
transaction if that state changed in between (MVCC).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from dltmw.core.rwset import StateEntry, Version
from dltmw.v1 import proposal_pb2, rwset_pb2

RANGE_LIMIT_MAX = 10_000


class ContractError(Exception):
    """A contract's refusal: status 400..499 (the caller's fault) or 500."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class StateReader(Protocol):
    """Read access to the committed world state (a snapshot for one simulation)."""

    def get(self, namespace: str, key: str) -> tuple[bytes, Version] | None:
        """Value and version of a key, or None."""

    def range(self, namespace: str, start: str, end: str, limit: int) -> list[StateEntry]:
        """Keys in [start, end) in key order (end "" = unbounded), at most `limit`."""


@dataclass
class Context:
    """What a contract function sees: reads record versions, writes are staged."""

    namespace: str
    state: StateReader
    reads: dict[str, Version | None] = field(default_factory=dict)
    range_reads: list[rwset_pb2.RangeQueryInfo] = field(default_factory=list)
    writes: dict[str, bytes | None] = field(default_factory=dict)
    events: list[proposal_pb2.ContractEvent] = field(default_factory=list)

    def get(self, key: str) -> bytes | None:
        """Committed value of `key` (None if absent); records the version read."""
        found = self.state.get(self.namespace, key)
        if key not in self.reads:
            self.reads[key] = found[1] if found else None
        return found[0] if found else None

    def range(self, start: str, end: str = "") -> list[tuple[str, bytes]]:
        """Committed keys in [start, end), recorded for phantom detection."""
        entries = self.state.range(self.namespace, start, end, RANGE_LIMIT_MAX + 1)
        if len(entries) > RANGE_LIMIT_MAX:
            raise ContractError(f"range returns more than {RANGE_LIMIT_MAX} keys", 400)
        self.range_reads.append(
            rwset_pb2.RangeQueryInfo(
                start_key=start,
                end_key=end,
                reads=[rwset_pb2.KVRead(key=e.key, version=e.version.to_proto()) for e in entries],
            )
        )
        return [(e.key, e.value) for e in entries]

    def put(self, key: str, value: bytes) -> None:
        """Stage a write."""
        if not key:
            raise ContractError("empty key")
        self.writes[key] = value

    def delete(self, key: str) -> None:
        """Stage a delete."""
        self.writes[key] = None

    def emit(self, name: str, payload: bytes = b"") -> None:
        """Emit an event, delivered if the transaction commits as VALID."""
        self.events.append(
            proposal_pb2.ContractEvent(contract=self.namespace, name=name, payload=payload)
        )


ContractFunction = Callable[[Context, Sequence[bytes]], bytes]


class Contract:
    """Base class: every public method `fn(ctx, args) -> bytes` is an invocable function."""

    name = ""

    def function(self, name: str) -> ContractFunction | None:
        """The function called `name`, if it is a public contract function."""
        if not name or name.startswith("_") or name in {"function", "name"}:
            return None
        fn = getattr(self, name, None)
        return fn if callable(fn) else None


def simulate(
    contract: Contract, invocation: proposal_pb2.ContractInvocation, state: StateReader
) -> proposal_pb2.ProposalResponsePayload:
    """Run one invocation against `state`; returns the response payload (without proposal_hash).

    A refusal yields status 400..500 and an empty read/write set: it can never commit.
    """
    ctx = Context(namespace=contract.name, state=state)
    fn = contract.function(invocation.function)
    if fn is None:
        message = f"contract {contract.name!r} has no function {invocation.function!r}"
        return _refused(contract.name, 400, message)
    try:
        result = fn(ctx, list(invocation.args))
    except ContractError as exc:
        # A refusal can never look like success: anything outside 400..599 becomes 500.
        status = exc.status if 400 <= exc.status <= 599 else 500
        return _refused(contract.name, status, exc.message)
    except Exception as exc:  # a contract bug is the contract's refusal, never the node's crash
        return _refused(contract.name, 500, f"contract raised {type(exc).__name__}: {exc}")
    rwset = rwset_pb2.ReadWriteSet(
        namespace=contract.name,
        reads=[_read(k, v) for k, v in ctx.reads.items()],
        range_queries=ctx.range_reads,
        writes=[
            rwset_pb2.KVWrite(key=k, is_delete=v is None, value=v or b"")
            for k, v in sorted(ctx.writes.items())
        ],
    )
    return proposal_pb2.ProposalResponsePayload(
        rwset=rwset,
        response=proposal_pb2.ContractResponse(status=200, payload=result),
        events=ctx.events,
    )


def _read(key: str, version: Version | None) -> rwset_pb2.KVRead:
    if version is None:
        return rwset_pb2.KVRead(key=key)
    return rwset_pb2.KVRead(key=key, version=version.to_proto())


def _refused(namespace: str, status: int, message: str) -> proposal_pb2.ProposalResponsePayload:
    return proposal_pb2.ProposalResponsePayload(
        rwset=rwset_pb2.ReadWriteSet(namespace=namespace),
        response=proposal_pb2.ContractResponse(status=status, message=message),
    )
