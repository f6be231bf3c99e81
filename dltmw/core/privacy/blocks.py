"""The private executor's core: each committed block's private transactions, in block order.

A core like every other (`core/effects.py`). Input: a committed block's VALID private
transactions (tx index, tx_id, payload hash) and a read-only view of the private store (held
payloads, private state as committed by earlier steps). For each transaction, in order, the
decision (`core/privacy/execution.py`):

* EXECUTED / CONTRACT_FAILED — this node holds the payload: verified against the ledger's hash,
  decrypted, the invocation run against the private state, writes applied;
* NOT_HELD — no payload, or not one of its recipients: the hash is recorded only;
* TAMPERED — the stored copy does not match the ledger's hash or does not authenticate, or
  (agreement before commit) this node's result differs from the agreed delta on the agreed
  pre-state;
* STALE — the transaction carries agreements and this node's pre-state differs from the agreed
  one (another private transaction changed those keys since): nothing written, like an MVCC
  conflict (docs/privacy.md "Agreement before commit").

Private transactions run after ordering, each seeing the state the previous one left (Quorum's
model): later transactions of the block — and of later blocks stepped before `ready()` — read
through this core's own pending writes over the view. Effects: decided = one `Executed` per
block with private transactions (its outcomes, writes and the new cursor: one store
transaction) and, every `CURSOR_EVERY` blocks without any, an empty one (the cursor alone);
replies = per block number, the height every block below which has been looked at.
A block below the core's cursor is skipped (a restarted feed repeats blocks).

Purges (`core/privacy/purge.py`): a VALID purge that names this node's privacy key runs in block
order with the private transactions: its key deletions are writes like any other (later
transactions read through them), its payloads count as not held for the rest of the batch, and
its effects (`Executed.purges`) go into the same store transaction as the block's outcomes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from google.protobuf.message import DecodeError

from dltmw.core.contract import Contract, StateReader
from dltmw.core.effects import Effects, Token
from dltmw.core.privacy.envelope import PayloadError, PrivacyKey, open_payload, recipients_of
from dltmw.core.privacy.execution import (
    CONTRACT_FAILED,
    NOT_HELD,
    STALE,
    TAMPERED,
    execute,
    state_hash,
)
from dltmw.core.privacy.groups import NO_PARTIES, Parties, execute_group, group_may_purge
from dltmw.core.privacy.purge import Purged, purge_decision
from dltmw.core.privacy.reuse import PriorRun, reuse
from dltmw.core.rwset import StateEntry, StateWrite, Version
from dltmw.v1 import private_payload_pb2, private_purge_pb2, proposal_pb2

PrivateTxRef = tuple[int, str, bytes]  # (tx_index, tx_id, payload_hash)


class PrivateView(StateReader, Protocol):
    """What the private store holds: payloads by hash and the committed private state."""

    def payload(self, payload_hash: bytes) -> bytes | None:
        """Stored payload bytes, or None."""


@dataclass(frozen=True)
class PrivateBlock:
    """Input: block `number`'s VALID private transactions and a view of the private store;
    `agreed` = tx index -> (pre-state hash, delta hash) of those that carry agreements."""

    number: int
    items: tuple[PrivateTxRef, ...]
    view: PrivateView
    agreed: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    purges: tuple[tuple[int, private_purge_pb2.PrivatePurgeBody], ...] = ()  # VALID, by index
    parties: Parties | None = None  # the channel's peers and auditors (privacy groups)
    # payload hash -> this node's agreement run of it, if kept (`reuse.py`: applied at commit
    # when nothing it depends on changed, else the payload is executed as without)
    prior: dict[bytes, PriorRun] = field(default_factory=dict)


@dataclass(frozen=True)
class TxOutcome:
    """The verdict on one private transaction (`detail` names why a copy was TAMPERED)."""

    index: int
    tx_id: str
    payload_hash: bytes
    status: int
    writes: tuple[StateWrite, ...]
    state_hash: bytes
    detail: str = ""
    pre_state_hash: bytes = b""
    reused: bool = False  # the agreement run's outcome, not a second execution (`reuse.py`)


@dataclass(frozen=True)
class Executed:
    """Decided: block `number`'s private outcomes; the cursor moves to number + 1."""

    number: int
    outcomes: tuple[TxOutcome, ...]
    purges: tuple[Purged, ...] = ()


PrivateEffects = Effects[None, Executed, None, int]
# A block without private effects is still recorded (an empty `Executed`: the cursor alone)
# once this many blocks went by since the cursor was last recorded. Without it a peer whose
# recent blocks carry no private transactions kept an old cursor and re-read every block since
# at each start (from block 0 on a ledger that never had one: 2.46 GB at 1M transactions).
CURSOR_EVERY = 64


class PendingWrites:
    """This core's writes not yet committed, over the store's view (a StateReader)."""

    def __init__(self, view: StateReader, writes: dict[tuple[str, str], StateWrite]) -> None:
        self._view = view
        self._writes = writes

    def get(self, namespace: str, key: str) -> tuple[bytes, Version] | None:
        write = self._writes.get((namespace, key))
        if write is None:
            return self._view.get(namespace, key)
        return None if write.value is None else (write.value, write.version)

    def range(self, namespace: str, start: str, end: str, limit: int) -> list[StateEntry]:
        mine = [
            w
            for (ns, key), w in self._writes.items()
            if ns == namespace and key >= start and (not end or key < end)
        ]
        found = {e.key: e for e in self._view.range(namespace, start, end, limit + len(mine))}
        for w in mine:
            if w.value is None:
                found.pop(w.key, None)
            else:
                found[w.key] = StateEntry(w.key, w.value, w.version)
        return [found[key] for key in sorted(found)[:limit]]


class PrivateExecution:
    """The decision of one channel's private executor (a `Core[PrivateBlock,
    PrivateEffects]`); `next_block` is the store's cursor."""

    def __init__(
        self,
        key: PrivacyKey,
        contract_of: Callable[[str], Contract | None],
        next_block: int,
    ) -> None:
        self.next_block = next_block
        self._recorded = next_block  # the cursor as last recorded (the store's, at start)
        self._key = key
        self._contract_of = contract_of
        self._writes: dict[tuple[str, str], StateWrite] = {}
        self._purged: set[bytes] = set()  # payloads purged by a step not yet drained
        self._decided: list[Executed] = []
        self._replies: list[tuple[Token, int]] = []

    def step(self, message: PrivateBlock) -> None:
        """Execute one block's private transactions (a block already looked at is skipped)."""
        number = message.number
        if number < self.next_block:
            return
        state = PendingWrites(message.view, self._writes)
        outcomes: list[TxOutcome] = []
        purges: list[Purged] = []
        bodies = {i: b for i, b in message.purges if self._key.public_key in b.recipient_keys}
        items = {index: (tx_id, digest) for index, tx_id, digest in message.items}
        for index in sorted({*items, *bodies}):
            if index in bodies:
                purged = self._purge(message, state, index, bodies[index])
                self._writes.update(((w.namespace, w.key), w) for w in purged.writes)
                self._purged.update(purged.payload_hashes)
                purges.append(purged)
                continue
            tx_id, digest = items[index]
            outcome = self._one(message, state, index, tx_id, digest)
            outcome = held_to_agreement(outcome, message.agreed.get(index))
            self._writes.update(((w.namespace, w.key), w) for w in outcome.writes)
            outcomes.append(outcome)
        if outcomes or purges or number + 1 - self._recorded >= CURSOR_EVERY:
            self._decided.append(Executed(number, tuple(outcomes), tuple(purges)))
            self._recorded = number + 1
        self.next_block = number + 1
        self._replies.append((number, number + 1))

    def tick(self, now: int) -> None:
        """Nothing is time-driven here."""

    def ready(self) -> PrivateEffects:
        """Drain: each block's outcomes to commit, then the heights reached."""
        out: PrivateEffects = Effects(decided=tuple(self._decided), replies=tuple(self._replies))
        self._writes, self._decided, self._replies = {}, [], []
        self._purged = set()
        return out

    def _purge(
        self,
        message: PrivateBlock,
        state: StateReader,
        index: int,
        body: private_purge_pb2.PrivatePurgeBody,
    ) -> Purged:
        view, number = message.view, message.number

        def held_by(digest: bytes) -> tuple[bytes, ...] | None:
            raw = None if digest in self._purged else view.payload(digest)
            if raw is None:
                return None
            try:
                return tuple(recipients_of(private_payload_pb2.EncryptedPayload.FromString(raw)))
            except DecodeError:
                return None  # an unreadable copy is not this node's data: it goes

        def present(namespace: str, key: str) -> bool:
            return state.get(namespace, key) is not None

        allowed = not body.group or group_may_purge(state, message.parties, body)
        return purge_decision(body, Version(number, index), held_by, present, index, allowed)

    def _one(
        self,
        message: PrivateBlock,
        state: StateReader,
        index: int,
        tx_id: str,
        digest: bytes,
    ) -> TxOutcome:
        view, number = message.view, message.number
        raw = None if digest in self._purged else view.payload(digest)
        if raw is None:
            return TxOutcome(index, tx_id, digest, NOT_HELD, (), b"")
        prior = message.prior.get(digest)
        if prior is not None:
            again = reuse(prior, raw, self._contract_of, state, Version(number, index))
            if again is not None:
                return TxOutcome(
                    index,
                    tx_id,
                    digest,
                    again.status,
                    again.writes,
                    again.state_hash,
                    pre_state_hash=again.pre_state_hash,
                    reused=True,
                )
        try:
            payload = private_payload_pb2.EncryptedPayload.FromString(raw)
            plaintext = open_payload(payload, self._key, digest)
        except (DecodeError, PayloadError) as exc:
            reason = exc.reason_name if isinstance(exc, PayloadError) else "MALFORMED"
            if reason == "NOT_AUTHORIZED":
                return TxOutcome(index, tx_id, digest, NOT_HELD, (), b"")
            return TxOutcome(index, tx_id, digest, TAMPERED, (), b"", reason)
        try:
            invocation = private_payload_pb2.PrivateInvocation.FromString(plaintext)
        except DecodeError:
            response = proposal_pb2.ContractResponse(status=400, message="not a PrivateInvocation")
            digest_of = state_hash(CONTRACT_FAILED, response, "", {})
            return TxOutcome(index, tx_id, digest, CONTRACT_FAILED, (), digest_of)
        version = Version(number, index)
        if invocation.group:
            outcome = execute_group(
                self._contract_of,
                invocation,
                state,
                version,
                message.parties or NO_PARTIES,
                payload.sender_public_key,
                recipients_of(payload),
            )
        else:
            outcome = execute(self._contract_of, invocation, state, version)
        return TxOutcome(
            index,
            tx_id,
            digest,
            outcome.status,
            outcome.writes,
            outcome.state_hash,
            pre_state_hash=outcome.pre_state_hash,
        )


def held_to_agreement(outcome: TxOutcome, agreed: tuple[bytes, bytes] | None) -> TxOutcome:
    """A recipient's outcome checked against the agreement its transaction carries: STALE if it
    ran on another pre-state than agreed, TAMPERED if the same pre-state gave another delta;
    either way nothing is written. Outcomes of non-recipients and refused copies pass as they
    are (they executed nothing)."""
    if agreed is None or outcome.status in (NOT_HELD, TAMPERED):
        return outcome
    pre, delta = agreed
    if outcome.pre_state_hash != pre:
        status, detail = STALE, "pre-state differs from the agreed one"
    elif outcome.state_hash != delta:
        status, detail = TAMPERED, "delta differs from the agreed one"
    else:
        return outcome
    return TxOutcome(outcome.index, outcome.tx_id, outcome.payload_hash, status, (), b"", detail)
