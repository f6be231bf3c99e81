"""Run a contract against an in-memory world state: the SDK's test helper.

    bench = ContractTester(Counter())            # or load_package(data).contract
    assert bench.submit("add", "apples", "3").payload == b"3"
    assert bench.evaluate("get", "apples").payload == b"3"

`submit` simulates like an endorser and, if the contract accepted, commits the writes as the
next block (versions advance, so a later read sees them; deltas are applied by the committing
peer's rule, `core/deltas.py`, which cannot refuse here: one transaction per block, simulated
on exactly this state); `evaluate` only simulates. Both go
through `core.contract.simulate`, the function every peer runs, with the same argument
conversion, limits and (for a loaded package) metering, so what passes here behaves the same on
a network. Arguments may be given as str (UTF-8) or bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dltmw.core import deltas
from dltmw.core.contract import Contract, TxInfo, simulate
from dltmw.core.rwset import StateEntry, Version
from dltmw.v1 import proposal_pb2

DEFAULT_TX = TxInfo(
    tx_id="0" * 64,
    creator_org="Org1",
    creator_identity=b"",
    creator_name="user1",
    timestamp_s=1_700_000_000,
)


@dataclass
class MemoryState:
    """A StateReader over a dict of (namespace, key) -> (value, Version)."""

    data: dict[tuple[str, str], tuple[bytes, Version]] = field(default_factory=dict)

    def get(self, namespace: str, key: str) -> tuple[bytes, Version] | None:
        """Value and version of a key, or None."""
        return self.data.get((namespace, key))

    def range(self, namespace: str, start: str, end: str, limit: int) -> list[StateEntry]:
        """Keys in [start, end) in key order, at most `limit`."""
        keys = sorted(
            k for ns, k in self.data if ns == namespace and k >= start and (not end or k < end)
        )
        return [StateEntry(k, *self.data[(namespace, k)]) for k in keys[:limit]]


@dataclass
class Outcome:
    """What one call returned."""

    status: int
    payload: bytes
    message: str
    events: list[tuple[str, bytes]]
    result: proposal_pb2.ProposalResponsePayload

    @property
    def ok(self) -> bool:
        """Whether the contract accepted."""
        return self.status == 200


@dataclass
class ContractTester:
    """A contract with its own in-memory state and block counter."""

    contract: Contract
    state: MemoryState = field(default_factory=MemoryState)
    block_number: int = 1
    tx: TxInfo = DEFAULT_TX

    def evaluate(self, function: str, *args: str | bytes) -> Outcome:
        """Simulate one call (nothing is committed)."""
        invocation = proposal_pb2.ContractInvocation(
            contract=self.contract.name,
            function=function,
            args=[a.encode() if isinstance(a, str) else a for a in args],
        )
        result = simulate(self.contract, invocation, self.state, self.tx)
        events = [(e.name, e.payload) for e in result.events]
        response = result.response
        return Outcome(response.status, response.payload, response.message, events, result)

    def submit(self, function: str, *args: str | bytes) -> Outcome:
        """Simulate one call and, if accepted, commit its writes as the next block."""
        outcome = self.evaluate(function, *args)
        if outcome.ok:
            version = Version(self.block_number, 0)
            rwset = outcome.result.rwset
            for write in rwset.writes:
                key = (self.contract.name, write.key)
                if write.is_delete:
                    self.state.data.pop(key, None)
                else:
                    self.state.data[key] = (write.value, version)
            current = {d.key: self.state.get(rwset.namespace, d.key) for d in rwset.deltas}
            _, applied = deltas.apply(rwset, {k: v[0] if v else None for k, v in current.items()})
            for key_name, value in applied.items():
                self.state.data[(self.contract.name, key_name)] = (value, version)
            self.block_number += 1
        return outcome
