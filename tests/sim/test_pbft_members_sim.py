"""PBFT-lite replica-set changes under faults, on the production nodes (tier 3).

`cfg-pbft-members` (`dltmw/sim/scenarios/pbft_members.py`): orderer.e is added (4 -> 5
replicas), then orderer.b removed (5 -> 4), then orderer.c re-keyed (orderer.c2 added, orderer.c
removed), while replicas and peers crash mid-store, one replica is cut off from the others and
Deliver loses, duplicates and reorders blocks. Every run must be safe (one chain, every node
applying each config at the same block, every block signed by a quorum of the replica set in
force at its height and by nobody else) and live after the heal (the four updates applied,
deposits ordered after the last one, every node — the added and the removed ones too — at one
height). Negative controls, caught by the signer checker: replicas that keep the classic 2f+1
quorum after the set grew to 5 (it is 4 of 5: two quorums of 3 would share a single replica);
replicas that do not end the epoch at orderer.c's removal, so its old key goes on signing;
replicas that name the signers of their blocks in full although the channel takes identity
references (the scenario's channel does, as `dltmw init` makes it).

`cfg-pbft-members-dissemination`: the same on a channel with dissemination (`dltmw init`'s
default). Checked besides: every envelope an orderer accepted is in exactly one block
(`ledger_checks.check_ordered`). Seeds 1 and 4 stalled for good at a boundary before the new
group's assembly stopped depending on the old group's window (`DisseminatingReplica.carry`):
replicas that ran through the boundary skipped envelopes of the old group a new batch carried
again, those that had joined or restarted did not, and no block after it got a quorum — while
the orderers had accepted transactions of the slots after it, which no block ever held.
Seeds 39 and 40 failed later, on a node that missed a boundary block and waited out its
block-fetch backoff (`pbft_orderer`, "Two things cut the wait short").
"""

from __future__ import annotations

import pytest

from dltmw.core.channel import ChannelView
from dltmw.core.handlers import pbft_orderer
from dltmw.core.pbft import PbftConfig

from .flow_runs import exercised, report, run_seeds, seeds

pytestmark = pytest.mark.soak
QUICK_SEEDS = 5
DISSEMINATION_SEEDS = 10  # seeds 1 and 4 found the stall at a boundary

MARKS = {
    "the four updates applied": lambda r: r.counts.get("config-applied", 0) == 4,
    "a node killed mid-store": lambda r: any(k.startswith("killed:") for k in r.counts),
    "Deliver message lost": lambda r: r.counts.get("Deliver.dropped", 0) > 0,
}


def test_replica_set_changes_under_faults_keep_one_chain_signed_by_the_set_in_force() -> None:
    results = run_seeds("cfg-pbft-members", seeds(QUICK_SEEDS))
    assert all(r.ok for r in results), f"failing runs:\n{report(results)}"
    assert sum(r.summary["acked"] for r in results) > 3 * len(results)
    shares = exercised(results, MARKS)
    assert all(share >= 0.8 for share in shares.values()), f"faults exercised: {shares}"
    isolated = sum(r.counts.get("replica-isolated", 0) > 0 for r in results)
    assert isolated >= 1, "a replica cut off in at least one run"


def test_replica_set_changes_with_dissemination_keep_one_chain_and_every_accepted_envelope() -> (
    None
):
    results = run_seeds("cfg-pbft-members-dissemination", seeds(DISSEMINATION_SEEDS))
    assert all(r.ok for r in results), f"failing runs:\n{report(results)}"
    assert sum(r.summary["acked"] for r in results) > 3 * len(results)
    shares = exercised(results, MARKS)
    assert all(share >= 0.8 for share in shares.values()), f"faults exercised: {shares}"


def test_a_replica_that_missed_a_boundary_block_catches_up_by_the_deadline() -> None:
    """Seeds 39 and 40: the boundary block of the third update lands late (its retry waited
    out a commit-status timeout after CONFIG_SEQUENCE_STALE from an orderer behind), and a
    node misses it — seed 40: orderer.d, in view 0 while the others decided in view 1; seed
    39: orderer.a, .c and .d, without the last signatures of block 12, then orderer.b, removed
    and following, one config block per fetch. Their block-fetch backoff had grown to its
    maximum (32 s) over the idle stretch before: not caught up by the deadline. Now a message
    of a later epoch refused at the boundary makes the next tick fetch (`LaterEpoch`; without
    it seed 40 fails) and a fetch that ended at a config block is followed by the next at once
    (without either, seed 39 fails)."""
    results = run_seeds("cfg-pbft-members-dissemination", range(39, 41))
    assert all(r.ok for r in results), f"failing runs:\n{report(results)}"


def test_a_removed_replica_that_missed_its_own_removal_catches_up_by_the_deadline() -> None:
    """`cfg-pbft-members` seed 40: orderer.c never built block 12, which removes it, and nobody
    of the new group sends to it — but the new group refuses its messages for their signer,
    which its links pass on (`LaterEpoch(None)`): it fetches then, rather than after a backoff
    of 16 x CATCHUP_CHECK_TICKS (red with that hint ignored: orderer.c stays at 12)."""
    results = run_seeds("cfg-pbft-members", range(40, 41))
    assert all(r.ok for r in results), f"failing runs:\n{report(results)}"


def test_negative_control_the_classic_quorum_after_growing_to_five_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Break the quorum rule in the nodes (2f+1 whatever n); the checker keeps the real one."""
    monkeypatch.setattr(PbftConfig, "quorum", property(lambda self: 2 * self.f + 1))
    results = run_seeds("cfg-pbft-members", range(3), stop_after=3)
    caught = [r for r in results if any(v.startswith("signers:") for v in r.violations)]
    assert len(caught) == len(results), report(list(results))


def test_negative_control_the_old_key_signing_after_the_rekey_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Break the epoch boundary of the re-key only: orderer.c's removal does not end the
    group, so orderer.c (its old key) goes on signing the blocks after it."""
    real = pbft_orderer.replica_set_changed

    def keeps_old_key(before: ChannelView, after: ChannelView) -> bool:
        gone = {o.node_id for o in before.config.orderers}
        gone -= {o.node_id for o in after.config.orderers}
        return False if gone == {"orderer.c"} else real(before, after)

    monkeypatch.setattr(pbft_orderer, "replica_set_changed", keeps_old_key)
    results = run_seeds("cfg-pbft-members", range(2), stop_after=2)
    caught = [r for r in results if any(v.startswith("signers:") for v in r.violations)]
    assert len(caught) == len(results), report(list(results))


def test_negative_control_blocks_naming_their_signers_in_full_under_references_are_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Break the replicas' block names (`_block_names`: always in full); the scenario's channel
    takes identity references, so the signer checker reports every block after block 0."""
    monkeypatch.setattr(pbft_orderer.PbftOrdererCore, "_block_names", lambda self: ())
    results = run_seeds("cfg-pbft-members", range(2), stop_after=2)
    caught = [r for r in results if any("in full where" in v for v in r.violations)]
    assert len(caught) == len(results), report(list(results))
