"""A peer whose Deliver stream lost a block on an idle channel catches up when it is asked for
it (tier 3, deterministic; `runtime/roles/peer/deliver_watch.py`).

The production node code on simulated hosts: eov-solo, two organisations,
`AND(Org1.peer, Org2.peer)`, the read-modify-write bank (a deposit's result shows the state it
was simulated on). The block of one deposit is dropped on peer0.org2's Deliver stream and only
there; the stream stays open, the channel goes idle, so no later block shows peer0.org2 the gap.
Then another deposit on the same account:

- through the SDK (it names the block it saw committed): peer0.org2 waits for that block, its
  stream has been quiet, it dials Deliver again and the deposit commits VALID;
- through a client that names no block: the two endorsements differ (peer0.org2 simulated on
  the older block), the gateway asks peer0.org2 again at the newer block, and it endorses.

Before, the first ended UNAVAILABLE/HEIGHT_NOT_REACHED after the node's `height_wait_s` and the
second ABORTED/ENDORSEMENT_MISMATCH, and every later transaction on the account likewise: with
every endorsement failing no block was cut to show the gap (seen in the `cfg-pbft` scenario as a
peer following a replica cut off from the others). Negative controls: without the re-dial, and
without the gateway's second ask, the stories fail as they did.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from dltmw.client.gateway import GatewayClient
from dltmw.runtime.roles.gateway.endorsing import _Job
from dltmw.runtime.roles.peer.deliver_watch import DeliverWatch
from dltmw.sim.deployment import Deployment
from dltmw.sim.scenarios.eov import CHANNEL, DELIVER
from dltmw.sim.wire import MessageFaults
from dltmw.v1 import gateway_service_pb2, transaction_pb2

from .flow_runs import outcome_on_eov_solo

BANK = "bank_rmw"
LAGGING = "peer0.org2"
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
Story = Callable[[Deployment, GatewayClient], Awaitable[str]]


def _run(story: Story, seed: int = 1) -> str:
    """Open A, lose the block of a deposit on peer0.org2's Deliver stream, let the channel go
    idle, then run `story`; its outcome (a gRPC error as CODE/REASON)."""

    async def body(dep: Deployment) -> str:
        client = dep.gateway_client("user1.org1", "peer0.org1")
        await client.submit_transaction(CHANNEL, BANK, "open", "A", "100")
        dep.net.faults.stream_faults[DELIVER] = MessageFaults(
            drop=1.0, callers=frozenset({LAGGING})
        )
        lost = await client.submit_transaction(CHANNEL, BANK, "deposit", "A", "1")
        assert lost.status.result == VALID
        dep.net.faults.stream_faults.pop(DELIVER)
        assert dep.net.counts["Deliver.dropped"] == 1
        await asyncio.sleep(2.0)  # idle: nothing tells peer0.org2 of the block it lost
        return await story(dep, client)

    return outcome_on_eov_solo(body, seed)


async def _deposit_through_the_sdk(_dep: Deployment, client: GatewayClient) -> str:
    done = await client.submit_transaction(CHANNEL, BANK, "deposit", "A", "5")
    return f"{transaction_pb2.TxValidationCode.Name(done.status.result)} {done.result.payload!r}"


async def _deposit_naming_no_block(_dep: Deployment, client: GatewayClient) -> str:
    """Endorse once, naming no block (a client that knows nothing of sessions), no retries."""
    signed, _ = client.proposal(CHANNEL, BANK, "deposit", ["A", "5"])
    request = gateway_service_pb2.EndorseRequest(signed_proposal=signed)
    endorsed = await client.stub.Endorse(request, timeout=30)
    return f"endorsed {endorsed.result.payload!r}"


def test_a_peer_asked_for_a_block_its_quiet_stream_lost_dials_again() -> None:
    assert _run(_deposit_through_the_sdk) == "TX_VALIDATION_CODE_VALID b'106'"


def test_the_gateway_asks_an_endorser_whose_result_differs_from_behind_again() -> None:
    assert _run(_deposit_naming_no_block) == "endorsed b'106'"


def test_negative_control_without_the_redial_the_peer_stays_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(DeliverWatch, "wanted", lambda self, height: False)
    assert _run(_deposit_through_the_sdk) == "UNAVAILABLE/HEIGHT_NOT_REACHED"


def test_negative_control_without_the_second_ask_the_results_differ(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_Job, "_behind_again", lambda self: [])
    assert _run(_deposit_naming_no_block) == "ABORTED/ENDORSEMENT_MISMATCH"
