"""The endorsement-policy handler: decide when gathered endorsements are enough.

The gateway asks endorsers in parallel and feeds each answer in. Answers are grouped by the hash
of the response payload they sign, because only byte-identical results can form one transaction.
Evaluation is tri-state, as in raft's VoteResult: SATISFIED as soon as one group satisfies the
policy, UNSATISFIABLE as soon as no group can (even if every endorser still outstanding agreed
with it), PENDING otherwise — so the client knows exactly when to stop waiting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from dltmw.core.policy import Policy, PolicyResult, Signer, evaluate


@dataclass(frozen=True)
class Candidate:
    """An endorser that may be asked: its node id and signing identity."""

    node_id: str
    signer: Signer


@dataclass(frozen=True)
class Endorsed:
    """An endorser answered with a verified endorsement over `payload_hash`."""

    node_id: str
    payload_hash: bytes


@dataclass(frozen=True)
class Failed:
    """An endorser refused, failed or could not be reached."""

    node_id: str
    reason: str


@dataclass(frozen=True)
class Decision:
    """Outcome: `result`, the winning payload hash and its endorsers when SATISFIED."""

    result: PolicyResult
    payload_hash: bytes = b""
    node_ids: tuple[str, ...] = ()
    mismatch: bool = False
    failures: tuple[str, ...] = ()


@dataclass
class EndorsementCollector:
    """Tri-state gathering of endorsements for one proposal."""

    policy: Policy
    candidates: Sequence[Candidate]
    _by_id: dict[str, Candidate] = field(init=False)
    _answered: set[str] = field(default_factory=set)
    _groups: dict[bytes, list[str]] = field(default_factory=dict)
    _failures: dict[str, str] = field(default_factory=dict)  # node id -> reason, in order

    def __post_init__(self) -> None:
        self._by_id = {c.node_id: c for c in self.candidates}

    def to_ask(self) -> list[str]:
        """Node ids to ask: every candidate (answers decide; extra ones are ignored)."""
        return [c.node_id for c in self.candidates]

    def step(self, message: Endorsed | Failed) -> None:
        """Record one answer (duplicates and unknown nodes are ignored)."""
        if message.node_id not in self._by_id or message.node_id in self._answered:
            return
        self._answered.add(message.node_id)
        if isinstance(message, Endorsed):
            self._groups.setdefault(message.payload_hash, []).append(message.node_id)
        else:
            self._failures[message.node_id] = message.reason

    def forget(self, node_id: str) -> None:
        """Take back `node_id`'s answer: it is asked again (its next answer counts instead)."""
        if node_id not in self._answered:
            return
        self._answered.discard(node_id)
        for payload_hash, node_ids in list(self._groups.items()):
            if node_id in node_ids:
                node_ids.remove(node_id)
                if not node_ids:
                    del self._groups[payload_hash]
        self._failures.pop(node_id, None)

    def decision(self) -> Decision:
        """Current tri-state decision."""
        outstanding = [c.signer for c in self.candidates if c.node_id not in self._answered]
        pending = False
        for payload_hash, node_ids in self._groups.items():
            signers = [self._by_id[n].signer for n in node_ids]
            result = evaluate(self.policy, signers, outstanding)
            if result is PolicyResult.SATISFIED:
                return Decision(result, payload_hash, tuple(node_ids))
            pending = pending or result is PolicyResult.PENDING
        if not self._groups and evaluate(self.policy, [], outstanding) is PolicyResult.PENDING:
            pending = True
        failures = tuple(f"{node}: {reason}" for node, reason in self._failures.items())
        if pending:
            return Decision(PolicyResult.PENDING, failures=failures)
        return Decision(
            PolicyResult.UNSATISFIABLE, mismatch=len(self._groups) > 1, failures=failures
        )
