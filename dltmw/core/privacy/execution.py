"""Private execution: run a decrypted invocation against the private state, and hash the result.

Private transactions are executed AFTER ordering, by each recipient alone, in block order, so
there is no endorsement and no MVCC: the contract reads the private state as left by the previous
private transaction and its writes apply at once (Quorum's model). Non-recipients execute nothing.

Private state validation needs one value that two parties can compare without revealing the data:
`state_hash` = SHA-256 over the outcome (status, contract response) and the resulting value of
every key the transaction read or wrote (written value if written, else the value read). Parties
that started from different private states, or ran different code, get different hashes.
A delta (`ctx.add`) is applied at once to the private state like a write: the simulation
already checked its bound on exactly this state, so `deltas.apply` cannot refuse it here (if it
did, the transaction is a CONTRACT_FAILED like any refusal).
Agreement before commit (`core/privacy/agreement.py`) needs a second value: `pre_state_hash` =
SHA-256 over the namespace and every key the transaction read or wrote with its value BEFORE it
ran; a recipient whose pre-state hash at execution differs from the agreed one executed on
other data than the parties agreed on.
Encoding: every field is length-prefixed (u32 big-endian) so no two inputs share a byte string.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from dltmw.core import deltas
from dltmw.core.contract import Contract, StateReader, simulate
from dltmw.core.privacy.read_once import ReadOnce
from dltmw.core.rwset import StateWrite, Version
from dltmw.v1 import privacy_manager_service_pb2, private_payload_pb2, proposal_pb2

S = privacy_manager_service_pb2
EXECUTED = S.PRIVATE_TX_STATUS_EXECUTED
CONTRACT_FAILED = S.PRIVATE_TX_STATUS_CONTRACT_FAILED
NOT_HELD = S.PRIVATE_TX_STATUS_NOT_HELD
TAMPERED = S.PRIVATE_TX_STATUS_TAMPERED
STALE = S.PRIVATE_TX_STATUS_STALE
STATE_HASH_DOMAIN = b"dltmw/pp/state/v1"
PRE_STATE_DOMAIN = b"dltmw/pp/pre-state/v1"


@dataclass(frozen=True)
class PrivateOutcome:
    """Result of executing one private transaction at one recipient."""

    status: int
    response: proposal_pb2.ContractResponse
    writes: tuple[StateWrite, ...]
    state_hash: bytes
    pre_state_hash: bytes = b""
    # every key read or written with the version it had (None: no value), and the keys
    # written: what an agreement names as hashes (core/privacy/conflict.py)
    touched: tuple[tuple[str, Version | None], ...] = ()
    written: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()  # of `written`, the keys it deletes
    # privacy groups (core/privacy/groups.py): the stored namespace of `touched` ("" = the
    # contract's), the group ("" = none), and keys read besides (the membership record)
    namespace: str = ""
    group: str = ""
    extra_touched: tuple[tuple[str, str, Version | None], ...] = ()
    # the contract did a range read: its result is not a function of `touched` alone (a key
    # inserted in the range since is in no touched set), so it is never reused (`reuse.py`)
    ranged: bool = False


def _field(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def state_hash(
    status: int,
    response: proposal_pb2.ContractResponse,
    namespace: str,
    resulting: dict[str, bytes | None],
) -> bytes:
    """The comparable digest of one private transaction's outcome (see module docstring)."""
    h = hashlib.sha256(STATE_HASH_DOMAIN)
    h.update(status.to_bytes(4, "big") + response.status.to_bytes(4, "big"))
    h.update(_field(response.payload) + _field(response.message.encode()))
    h.update(_field(namespace.encode()))
    for key in sorted(resulting):
        value = resulting[key]
        h.update(_field(key.encode()))
        h.update(b"\x00" if value is None else b"\x01" + _field(value))
    return h.digest()


def pre_state_hash(namespace: str, before: dict[str, bytes | None]) -> bytes:
    """The comparable digest of the state a private transaction ran on (module docstring)."""
    h = hashlib.sha256(PRE_STATE_DOMAIN)
    h.update(_field(namespace.encode()))
    for key in sorted(before):
        value = before[key]
        h.update(_field(key.encode()))
        h.update(b"\x00" if value is None else b"\x01" + _field(value))
    return h.digest()


def execute(
    contract_of: Callable[[str], Contract | None],
    invocation: private_payload_pb2.PrivateInvocation,
    state: StateReader,
    version: Version,
) -> PrivateOutcome:
    """Execute `invocation` on `state` (the private state before this transaction); each key
    is read from `state` once (`read_once.py`: the hashes below read it again)."""
    state = ReadOnce(state)
    contract = contract_of(invocation.contract)
    if contract is None:
        response = proposal_pb2.ContractResponse(
            status=404, message=f"contract {invocation.contract!r} is not deployed"
        )
        return PrivateOutcome(
            CONTRACT_FAILED, response, (), state_hash(CONTRACT_FAILED, response, "", {})
        )
    call = proposal_pb2.ContractInvocation(
        contract=invocation.contract, function=invocation.function, args=invocation.args
    )
    result = simulate(contract, call, state)
    ns = contract.name
    rw = result.rwset
    touched = [r.key for r in rw.reads] + [w.key for w in rw.writes] + [d.key for d in rw.deltas]
    touched += [r.key for q in rw.range_queries for r in q.reads]
    pre = pre_state_hash(ns, {key: _value(state, ns, key) for key in touched})
    versions = tuple((key, _version(state, ns, key)) for key in dict.fromkeys(touched))
    if result.response.status != 200:
        digest = state_hash(CONTRACT_FAILED, result.response, ns, {})
        return PrivateOutcome(CONTRACT_FAILED, result.response, (), digest, pre, versions)
    resulting: dict[str, bytes | None] = {}
    for read in result.rwset.reads:
        found = state.get(ns, read.key)
        resulting[read.key] = found[0] if found else None
    for query in result.rwset.range_queries:
        for read in query.reads:
            found = state.get(ns, read.key)
            resulting[read.key] = found[0] if found else None
    writes = []
    for w in result.rwset.writes:
        value = None if w.is_delete else w.value
        resulting[w.key] = value
        writes.append(StateWrite(ns, w.key, value, version))
    current = {d.key: _value(state, ns, d.key) for d in result.rwset.deltas}
    code, applied = deltas.apply(result.rwset, current)
    if code != deltas.VALID:
        response = proposal_pb2.ContractResponse(status=409, message="delta not applicable")
        return PrivateOutcome(
            CONTRACT_FAILED,
            response,
            (),
            state_hash(CONTRACT_FAILED, response, ns, {}),
            pre,
            versions,
        )
    for key, new in applied.items():
        resulting[key] = new
        writes.append(StateWrite(ns, key, new, version))
    digest = state_hash(EXECUTED, result.response, ns, resulting)
    written = tuple(sorted({w.key for w in writes}))
    deleted = tuple(sorted({k for k in written if resulting.get(k) is None}))
    return PrivateOutcome(
        EXECUTED,
        result.response,
        tuple(writes),
        digest,
        pre,
        versions,
        written,
        deleted,
        ranged=bool(rw.range_queries),
    )


def _version(state: StateReader, namespace: str, key: str) -> Version | None:
    found = state.get(namespace, key)
    return found[1] if found else None


def _value(state: StateReader, namespace: str, key: str) -> bytes | None:
    found = state.get(namespace, key)
    return found[0] if found else None
