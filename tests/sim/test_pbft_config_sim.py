"""Config updates of a PBFT-lite channel under faults, on the production nodes (tier 3).

`cfg-pbft` (`dltmw/sim/scenarios/pbft_config.py`): a revocation, then a policy and block-size
change, while replicas and peers crash mid-store, one replica is cut off from the others, and
Deliver loses, duplicates and reorders blocks. Every run must be safe (one chain, every node
recording the config its chain applies at the block that applies it, no VALID transaction of
the revoked client after its revocation, state == replay) and live after the heal (both updates
applied, every node at one height). Negative control: one replica that applies each config one
block late is caught by the config checker.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from dltmw.core.channel import ChannelView
from dltmw.core.effects import Effects
from dltmw.core.handlers.pbft_orderer import CommittedBlock, OrdererEffects, PbftOrdererCore
from dltmw.sim.config_checks import check_revoked
from dltmw.sim.ledger_checks import VALID, Chain, TxOnChain
from dltmw.sim.scenarios.result import ScenarioResult
from dltmw.v1 import transaction_pb2

from .flow_runs import exercised, report, run_seeds, seeds

pytestmark = pytest.mark.soak
QUICK_SEEDS = 20

MARKS = {
    "both updates applied": lambda r: r.counts.get("config-applied", 0) == 2,
    "a replica cut off from the others": lambda r: r.counts.get("replica-isolated", 0) > 0,
    "a node killed mid-store": lambda r: any(k.startswith("killed:") for k in r.counts),
    "Deliver message lost": lambda r: r.counts.get("Deliver.dropped", 0) > 0,
}


def test_config_updates_under_faults_are_applied_alike_everywhere_and_stay_live() -> None:
    results = run_seeds("cfg-pbft", seeds(QUICK_SEEDS))
    assert all(r.ok for r in results), f"failing runs:\n{report(results)}"
    assert sum(r.summary["acked"] for r in results) > 5 * len(results)
    shares = exercised(results, MARKS)
    assert all(share >= 0.9 for share in shares.values()), f"faults exercised: {shares}"


def _one_block_late_on_replica_1(monkeypatch: pytest.MonkeyPatch) -> None:
    """Break the mechanism on orderer.b (replica 1): it records and switches to each config
    one block after the block that applies it."""
    held: dict[int, ChannelView] = {}
    original = PbftOrdererCore.ready

    def ready(self: PbftOrdererCore) -> OrdererEffects:
        out = original(self)
        if self.replica.me != 1 or not out.decided:
            return out
        decided: list[CommittedBlock] = []
        for item in out.decided:
            late = held.pop(id(self), None)
            decided.append(CommittedBlock(item.block, late))
            if item.config is not None:
                held[id(self)] = item.config
        return Effects(out.persist, tuple(decided), out.send, out.replies)

    monkeypatch.setattr(PbftOrdererCore, "ready", ready)


def test_negative_control_a_replica_applying_the_config_one_block_late_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _one_block_late_on_replica_1(monkeypatch)
    results: Sequence[ScenarioResult] = run_seeds("cfg-pbft", range(6), stop_after=6)
    caught = [r for r in results if any(v.startswith("config: orderer.b") for v in r.violations)]
    assert len(caught) == len(results), report(list(results))


def test_the_revocation_checker_sees_a_revoked_creators_valid_tx_after_its_revocation() -> None:
    def tx(block: int, tx_id: str, code: int) -> TxOnChain:
        return TxOnChain(block, 0, tx_id, code, None)

    revoked = transaction_pb2.TX_VALIDATION_CODE_CERTIFICATE_REVOKED
    txs = (tx(3, "early", VALID), tx(5, "late-refused", revoked), tx(6, "late", VALID))
    chain = Chain("peer0.org1", (b"",) * 7, txs, {}, b"")
    found = check_revoked(chain, 4, ["early", "late-refused", "late"])
    assert len(found) == 1 and "late" in found[0] and "block 6" in found[0]
