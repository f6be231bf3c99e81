"""The deterministic contract API and its simulation.

A contract is a plain Python object whose public functions take a `Context` and the invocation's
arguments. A function may read committed state (`get`, `range`), stage writes (`put`, `delete`),
emit events and return bytes, or refuse with `ContractError`. It must not do I/O, read a clock or
draw randomness: every endorser has to reach byte-identical results, or the gateway sees an
ENDORSEMENT_MISMATCH. As in Fabric, reads see committed state only (not the invocation's own
staged writes), and every read records the version it saw, so validation at commit can refuse the
transaction if that state changed in between (MVCC).

Limits. Every outcome an endorser signs must be the same on every endorser, so the limits that
decide one are deterministic protocol constants: a step budget for metered (packaged) contracts
(`core/metering.py`), the size of the result (`RESULT_BYTES_MAX`) and of the write set
(`WRITES_MAX` keys, `WRITES_BYTES_MAX` bytes of keys and values) — exceeding one is a refusal
(status 500, the contract's fault) with a message naming the limit. The one machine-dependent
limit, the wall-clock backstop (`expired`, injected by the node), yields `WALL_CLOCK_STATUS`,
which a gateway turns into RESOURCE_EXHAUSTED for its caller and never into an endorsement.

What a contract learns about the transaction (`TxInfo`: tx_id, the creator's org, identity and
common name, the header timestamp) comes from the signed header, the same on every endorser; a
contract never reads the clock.

Deltas (`add`, `core/deltas.py`). `add(key, amount, min, max)` stages a commutative bounded
update: no read version is recorded, so concurrent deltas on one key do not conflict. At
simulation the endorser checks it against its committed snapshot (without recording a version)
and refuses at once a delta on an absent key (404) or one that would already break its bound
(400): an early, advisory answer, because the authoritative check is the committing peer's, on
the value the block's earlier transactions left. So that the signed result is the same on
endorsers at different heights, `add` returns nothing. Within one invocation a key is used
either by deltas or by get/put/delete, never both (a 500, the contract's bug): a read after a
delta would record a version that every concurrent delta makes stale (the conflict deltas
exist to avoid), and a write plus a delta on one key has no single meaning at commit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from dltmw.core import deltas as delta_rules
from dltmw.core.errors import ClientError
from dltmw.core.metering import STEP_BUDGET, StepBudgetExceeded, WallClockExceeded
from dltmw.core.rwset import StateEntry, Version
from dltmw.v1 import errors_pb2, proposal_pb2, rwset_pb2

RANGE_LIMIT_MAX = 10_000
# Keys of the platform's own in a contract's namespace (core/lifecycle_init.py): contracts may
# read them but never write them; validation refuses a write to one that is not the rule's own.
RESERVED_PREFIX = "\x00"
RESULT_BYTES_MAX = 1024 * 1024
WRITES_MAX = 10_000
WRITES_BYTES_MAX = 4 * 1024 * 1024
WALL_CLOCK_STATUS = 503  # not deterministic: never endorsed, RESOURCE_EXHAUSTED to the caller


def _never() -> bool:
    return False


@dataclass(frozen=True)
class TxInfo:
    """The transaction as its signed header describes it (identical on every endorser)."""

    tx_id: str
    creator_org: str
    creator_identity: bytes
    creator_name: str
    timestamp_s: int
    timestamp_nanos: int = 0
    channel_id: str = ""  # the channel the transaction is for (cross-channel contracts)
    creator_roles: frozenset[str] = frozenset()  # e.g. {"admin"}, from the certificate
    # (channel id, block 0 hash) of each channel this channel's config trusts for cross-channel
    # proofs (ChannelConfig.trusted_channels): filled by the endorser from the config in force,
    # so a contract starts a light client only from a block 0 its channel's admins agreed on
    trusted_genesis: tuple[tuple[str, bytes], ...] = ()
    # block 0 hash of the transaction's own channel, and the notaries its config trusts
    # (ChannelConfig.trusted_notaries): a cross-flow DvP's escrow must name this channel's real
    # trust root and be notarised by a trusted notary (contracts/transfer.py `deliver`)
    channel_genesis: bytes = b""
    trusted_notaries: tuple[bytes, ...] = ()


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
    deltas: dict[str, rwset_pb2.KVDelta] = field(default_factory=dict)
    tx: TxInfo | None = None
    read_only: bool = False
    step_budget: int = STEP_BUDGET
    expired: Callable[[], bool] = _never

    def get(self, key: str) -> bytes | None:
        """Committed value of `key` (None if absent); records the version read."""
        self._not_delta(key, "get")
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
        self._writable("put")
        if not key:
            raise ContractError("empty key")
        self._not_reserved(key, "put")
        self._not_delta(key, "put")
        self.writes[key] = value

    def delete(self, key: str) -> None:
        """Stage a delete."""
        self._writable("delete")
        self._not_reserved(key, "delete")
        self._not_delta(key, "delete")
        self.writes[key] = None

    def add(self, key: str, amount: int, low: int | None = 0, high: int | None = None) -> None:
        """Stage `key += amount` with the bound low <= value <= high (None: int64's).

        Several adds on one key are summed into one delta (their bounds must agree). Refused
        (ContractError) if the key is absent (404) or the result on this endorser's committed
        snapshot plus this invocation's earlier adds leaves the bounds (400): see the module
        docstring for why this check is advisory and records no version.
        """
        self._writable("add")
        self._not_reserved(key, "add")
        if not key or key in self.reads or key in self.writes:
            raise ContractError(f"add on {key!r}: empty, or already read or written here", 500)
        if amount == 0 or (low is not None and high is not None and low > high):
            raise ContractError(f"add on {key!r}: zero amount or min > max", 500)
        staged = self.deltas.get(key)
        bounds = rwset_pb2.KVDelta(key=key, min=low, max=high)
        if staged is not None and delta_rules.bounds(staged) != delta_rules.bounds(bounds):
            raise ContractError(f"add on {key!r}: bounds differ from an earlier add", 500)
        found = self.state.get(self.namespace, key)
        current = delta_rules.decode(found[0] if found else None)
        if current is None:
            raise ContractError(f"key {key!r} does not exist or holds no integer", 404)
        total = amount + (staged.amount if staged is not None else 0)
        if not delta_rules.INT64_MIN <= total <= delta_rules.INT64_MAX:
            raise ContractError(f"add on {key!r}: the amount is outside the signed 64-bit range")
        low_eff, high_eff = delta_rules.bounds(bounds)
        if not low_eff <= current + total <= high_eff:
            raise DeltaRefused(key, current, total, (low_eff, high_eff))
        bounds.amount = total
        self.deltas[key] = bounds

    def emit(self, name: str, payload: bytes = b"") -> None:
        """Emit an event, delivered if the transaction commits as VALID."""
        self._writable("emit")
        self.events.append(
            proposal_pb2.ContractEvent(contract=self.namespace, name=name, payload=payload)
        )

    @staticmethod
    def _not_reserved(key: str, what: str) -> None:
        if key.startswith(RESERVED_PREFIX):
            raise ContractError(f"{what} of {key!r}: keys starting with \\x00 are reserved", 500)

    def _not_delta(self, key: str, what: str) -> None:
        if key in self.deltas:
            raise ContractError(f"{what} of {key!r} after an add on it in one invocation", 500)

    def _writable(self, what: str) -> None:
        if self.read_only:
            raise ContractError(f"a query must not write ({what})", 500)


class DeltaRefused(ContractError):
    """`add` would take `key` from `current` outside `bounds` on this endorser's snapshot
    (status 400; a contract may catch it to word the refusal its own way)."""

    def __init__(self, key: str, current: int, amount: int, bounds: tuple[int, int]) -> None:
        low, high = bounds
        super().__init__(
            f"adding {amount} to {key!r} would take it from {current} outside [{low}, {high}]"
        )
        self.key, self.current, self.amount, self.bounds = key, current, amount, bounds


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
    contract: Contract,
    invocation: proposal_pb2.ContractInvocation,
    state: StateReader,
    tx: TxInfo | None = None,
    expired: Callable[[], bool] = _never,
) -> proposal_pb2.ProposalResponsePayload:
    """Run one invocation against `state`; returns the response payload (without proposal_hash).

    A refusal yields status 400..503 and an empty read/write set: it can never commit.
    `expired` is the node's wall-clock backstop, polled by metered contracts.
    """
    ctx = Context(namespace=contract.name, state=state, tx=tx, expired=expired)
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
    except StepBudgetExceeded as exc:
        return _refused(contract.name, 500, f"{exc} (a step is a call or a loop iteration)")
    except WallClockExceeded:
        message = "contract ran past this node's wall-clock limit per invocation"
        return _refused(contract.name, WALL_CLOCK_STATUS, message)
    except Exception as exc:  # a contract bug is the contract's refusal, never the node's crash
        return _refused(contract.name, 500, f"contract raised {type(exc).__name__}: {exc}")
    over = _over_limits(ctx, result)
    if over:
        return _refused(contract.name, 500, over)
    rwset = rwset_pb2.ReadWriteSet(
        namespace=contract.name,
        reads=[_read(k, v) for k, v in ctx.reads.items()],
        range_queries=ctx.range_reads,
        writes=[
            rwset_pb2.KVWrite(key=k, is_delete=v is None, value=v or b"")
            for k, v in sorted(ctx.writes.items())
        ],
        deltas=[ctx.deltas[k] for k in sorted(ctx.deltas)],
    )
    return proposal_pb2.ProposalResponsePayload(
        rwset=rwset,
        response=proposal_pb2.ContractResponse(status=200, payload=result),
        events=ctx.events,
    )


def _over_limits(ctx: Context, result: bytes) -> str:
    """Which deterministic output limit the invocation exceeded ("" if none)."""
    if not isinstance(result, bytes):
        return f"contract returned {type(result).__name__}, not bytes"
    if len(result) > RESULT_BYTES_MAX:
        return f"result of {len(result)} bytes exceeds the limit of {RESULT_BYTES_MAX}"
    if len(ctx.writes) + len(ctx.deltas) > WRITES_MAX:
        return f"{len(ctx.writes) + len(ctx.deltas)} writes exceed the limit of {WRITES_MAX}"
    size = sum(len(k.encode()) + len(v or b"") for k, v in ctx.writes.items())
    size += sum(len(k.encode()) + delta_rules.VALUE_CHARS_MAX for k in ctx.deltas)
    if size > WRITES_BYTES_MAX:
        return f"write set of {size} bytes exceeds the limit of {WRITES_BYTES_MAX}"
    return ""


def _read(key: str, version: Version | None) -> rwset_pb2.KVRead:
    if version is None:
        return rwset_pb2.KVRead(key=key)
    return rwset_pb2.KVRead(key=key, version=version.to_proto())


def _refused(namespace: str, status: int, message: str) -> proposal_pb2.ProposalResponsePayload:
    return proposal_pb2.ProposalResponsePayload(
        rwset=rwset_pb2.ReadWriteSet(namespace=namespace),
        response=proposal_pb2.ContractResponse(status=status, message=message),
    )


# A contract's refusal status that names what is wrong as precisely as a node's own check
# would: the caller gets that reason (and its status code), not the catch-all CONTRACT_FAILED.
REASON_OF_STATUS = {
    404: errors_pb2.ERROR_REASON_NOT_FOUND,  # the item named does not exist (an unknown topic)
    413: errors_pb2.ERROR_REASON_MESSAGE_TOO_LARGE,  # an argument beyond the contract's limit
}


def refusal_error(response: proposal_pb2.ContractResponse) -> ClientError:
    """The error a gateway gives its caller for a contract's refusal: NOT_FOUND
    (FAILED_PRECONDITION) for a 404 and MESSAGE_TOO_LARGE (RESOURCE_EXHAUSTED) for a 413, so a
    client branches on the reason and not on the message (`REASON_OF_STATUS`); LIMIT_EXCEEDED
    (RESOURCE_EXHAUSTED) when the node's wall-clock backstop stopped it; else CONTRACT_FAILED."""
    if response.status == WALL_CLOCK_STATUS:
        return ClientError(
            errors_pb2.ERROR_REASON_LIMIT_EXCEEDED, response.message, {"limit": "contract_wall_s"}
        )
    reason = REASON_OF_STATUS.get(response.status, errors_pb2.ERROR_REASON_CONTRACT_FAILED)
    return ClientError(reason, response.message)
