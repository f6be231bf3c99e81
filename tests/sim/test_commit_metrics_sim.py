"""A block that commits after its Deliver stream broke is still counted (tier 3,
deterministic; `runtime/roles/peer/committer.Committer._durable`).

The production node code on simulated hosts: eov-solo, two organisations. peer0.org2's sqlite
commit of one block is slowed (a stand-in for a slow disk) and, while that block commits, the
link between peer0.org2 and the orderer is cut and mended. The broken stream lets go of the
block it queued (`pipeline.settle` waits for it, then discards it); the block commits anyway.

Before, a block's metrics were recorded by whoever waited for it, so that block was durable on
the peer but missing from `dltmw_blocks_committed_total` and from the validation counts: the
peer's metrics then disagreed with its ledger for ever after. Now they are recorded when the
block is durable. Negative control: with the old recording (by the waiter) the count is one
short.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from dltmw.ledger.sqlite import ChannelLedger
from dltmw.runtime.roles.peer import committer
from dltmw.sim.deployment import Deployment
from dltmw.sim.scenarios.eov import CHANNEL
from dltmw.sim.vloop import OWNER

from .flow_runs import outcome_on_eov_solo

SLOW = "peer0.org2"
ORDERER = "orderer0"
STALL_S = 3.0  # virtual seconds the slowed commit takes (well under pipeline.SETTLE_S)


def _slow_commits_on(node_id: str, stalls: list[int]) -> Callable[..., Awaitable[None]]:
    """ChannelLedger.commit_block, slowed by STALL_S on `node_id` for the blocks numbered in
    `stalls` (each once)."""
    original = ChannelLedger.commit_block

    async def commit_block(self: ChannelLedger, block: Any, *args: Any, **kwargs: Any) -> None:
        owner = OWNER.get(None)
        mine = owner is not None and owner.name.startswith(f"{node_id}#")
        if mine and block.header.number in stalls:
            stalls.remove(block.header.number)
            await asyncio.sleep(STALL_S)
        await original(self, block, *args, **kwargs)

    return commit_block


async def _story(dep: Deployment) -> str:
    client = dep.gateway_client("user1.org1", "peer0.org1")
    await client.submit_transaction(CHANNEL, "bank", "open", "A", "100")
    peer = dep.hosts[SLOW].node
    assert peer is not None
    ledger = peer.peers[CHANNEL].ledger
    stalls = [ledger.height]  # the next block on peer0.org2
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ChannelLedger, "commit_block", _slow_commits_on(SLOW, stalls))
        done = await client.submit_transaction(CHANNEL, "bank", "open", "B", "5")
        assert not stalls, "peer0.org2 is committing the slowed block"
        dep.net.partition(SLOW, ORDERER)  # its Deliver stream breaks mid-commit
        await asyncio.sleep(0.5)
        dep.net.heal(SLOW, ORDERER)
        await asyncio.sleep(STALL_S + 2.0)  # the slowed commit ends; the peer dials again
    height = ledger.height
    counted = peer.ctx.metrics.registry.get_sample_value(
        "dltmw_blocks_committed_total", {"channel": CHANNEL}
    )
    valid = peer.ctx.metrics.registry.get_sample_value(
        "dltmw_tx_validation_total", {"channel": CHANNEL, "code": "VALID"}
    )
    broken = dep.net.counts["partition-broken"]
    return f"{done.status.result} height={height} counted={counted} valid={valid} broke={broken}"


def test_a_block_committed_after_its_stream_broke_is_counted() -> None:
    outcome = outcome_on_eov_solo(_story)
    # genesis + config blocks are not counted: every block after genesis went through the
    # committer, so the count is height - 1; two VALID transactions (open A, open B).
    assert outcome.startswith("1 "), outcome
    fields = dict(part.split("=") for part in outcome.split()[1:])
    assert int(fields["broke"]) >= 1, outcome  # the stream did break
    assert float(fields["counted"]) == int(fields["height"]) - 1, outcome
    assert float(fields["valid"]) == 2.0, outcome


def test_negative_control_counting_by_the_waiter_misses_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Record a block's metrics only when a caller's `wait()` returns (the old place): the
    block the broken stream let go of is durable but not counted."""
    durable = committer.Committer._durable
    wait = committer.PendingCommit.wait
    held: dict[int, tuple[committer.Committer, int]] = {}

    def hold(self: committer.Committer, number: int) -> None:
        pending = self._queued.get(number)
        if pending is not None:
            held[id(pending)] = (self, number)

    async def wait_then_record(self: committer.PendingCommit) -> None:
        await wait(self)
        owner = held.pop(id(self), None)
        if owner is not None:
            durable(*owner)

    monkeypatch.setattr(committer.Committer, "_durable", hold)
    monkeypatch.setattr(committer.PendingCommit, "wait", wait_then_record)
    outcome = outcome_on_eov_solo(_story)
    fields = dict(part.split("=") for part in outcome.split()[1:])
    assert int(fields["broke"]) >= 1, outcome
    assert float(fields["counted"]) == int(fields["height"]) - 2, outcome
