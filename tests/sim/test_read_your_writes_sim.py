"""Read your own writes when the other organisation's peer is behind (tier 3, deterministic).

The production node code on simulated hosts, two organisations, `AND(Org1.peer, Org2.peer)`.
peer0.org2 is cut from the orderer, so it stops committing blocks but still answers the gateway
of Org1: the lag that makes a `deposit` right after a VALID `open` meet an endorser on which the
account does not exist yet — here every time, not in 1 of 100 runs. The partition heals after
`HEAL_AFTER_S`; peer0.org2 then catches up.

- The SDK sends the highest block it saw committed (`min_block_number`): the endorser waits for
  it and the deposit commits VALID.
- A client that sends no block: the gateway sees the refusal came from a state older than its
  own peer's, asks peer0.org2 again at that block, and the deposit commits VALID.
- An Evaluate through the other gateway, carrying the client's mark over: it waits too.
- A contract the admins commit while peer0.org2 lags: a call naming the commit's block waits
  for it before the endorser resolves the contract (no CONTRACT_NOT_COMMITTED from behind).
- A lag that does not end: a retryable UNAVAILABLE / HEIGHT_NOT_REACHED after the node's
  `height_wait_s`, never a final CONTRACT_FAILED.

The stories use `bank_rmw` (see BANK below).
- Negative control: with the endorser's wait removed (`PeerChannel.reach` returns at once), the
  first story fails — so it tests the mechanism, not luck.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from dltmw.client.gateway import GatewayClient
from dltmw.core.builtin_packages import BUILTIN_PACKAGE_IDS
from dltmw.core.lifecycle import NAMESPACE, Definition, canonical_policy
from dltmw.runtime.roles.peer.channel import PeerChannel
from dltmw.sim.deployment import Deployment
from dltmw.sim.scenarios.eov import CHANNEL
from dltmw.v1 import gateway_service_pb2, transaction_pb2

from .flow_runs import outcome_on_eov_solo

# The paper's read-modify-write bank: its deposit returns the balance it read, so each story's
# answer also shows which state the endorsers simulated on (`bank`'s deposit is a delta and
# returns nothing state-dependent).
BANK = "bank_rmw"

G = gateway_service_pb2
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
LAGGING, ORDERER = "peer0.org2", "orderer0"
HEAL_AFTER_S = 3.0  # longer than the SDK's ENDORSEMENT_MISMATCH retries (~1.6 s)
Story = Callable[[Deployment, GatewayClient], Awaitable[str]]


def _run(story: Story, heal: bool = True, seed: int = 1) -> str:
    """Open B while peer0.org2 is cut from the orderer, then run `story`; its outcome."""

    async def body(dep: Deployment) -> str:
        client = dep.gateway_client("user1.org1", "peer0.org1")
        await client.submit_transaction(CHANNEL, BANK, "open", "A", "100")
        dep.net.partition(ORDERER, LAGGING)
        opened = await client.submit_transaction(CHANNEL, BANK, "open", "B", "100")
        assert opened.status.result == VALID
        if heal:
            dep.at(dep.now + HEAL_AFTER_S, lambda: dep.net.heal(ORDERER, LAGGING))
        return await story(dep, client)

    return outcome_on_eov_solo(body, seed)


async def _deposit_through_the_sdk(_dep: Deployment, client: GatewayClient) -> str:
    done = await client.submit_transaction(CHANNEL, BANK, "deposit", "B", "5")
    return f"{transaction_pb2.TxValidationCode.Name(done.status.result)} {done.result.payload!r}"


async def _deposit_without_a_block(_dep: Deployment, client: GatewayClient) -> str:
    """Endorse once, naming no block (a client that knows nothing of sessions), no retries."""
    signed, _ = client.proposal(CHANNEL, BANK, "deposit", ["B", "5"])
    endorsed = await client.stub.Endorse(G.EndorseRequest(signed_proposal=signed), timeout=30)
    return f"endorsed {endorsed.result.payload!r}"


async def _balance_through_the_other_gateway(dep: Deployment, client: GatewayClient) -> str:
    other = dep.gateway_client("user1.org2", LAGGING)
    other.observe_block(CHANNEL, client.seen_block(CHANNEL))  # the session, carried over
    answer = await other.evaluate(CHANNEL, BANK, "balance", "B")
    return f"balance {answer.payload!r}"


def test_the_sdk_deposit_waits_for_the_lagging_endorser() -> None:
    assert _run(_deposit_through_the_sdk) == "TX_VALIDATION_CODE_VALID b'105'"


def test_the_gateway_asks_an_endorser_that_refused_from_behind_again() -> None:
    assert _run(_deposit_without_a_block) == "endorsed b'105'"


def test_an_evaluate_through_the_lagging_gateway_waits_for_the_clients_block() -> None:
    assert _run(_balance_through_the_other_gateway) == "balance b'100'"


def test_a_lag_that_does_not_end_is_a_retryable_error_not_a_final_refusal() -> None:
    assert _run(_deposit_through_the_sdk, heal=False) == "UNAVAILABLE/HEIGHT_NOT_REACHED"
    assert _run(_deposit_without_a_block, heal=False) == "UNAVAILABLE/HEIGHT_NOT_REACHED"


def test_negative_control_an_endorser_that_does_not_wait_fails_the_deposit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def at_once(self: PeerChannel, block_number: int, timeout_s: float) -> None:
        await asyncio.sleep(0)

    monkeypatch.setattr(PeerChannel, "reach", at_once)
    outcome = _run(_deposit_through_the_sdk)
    assert outcome.startswith("ABORTED/"), outcome


async def _call_a_contract_deployed_while_the_endorser_lags(dep: Deployment) -> str:
    """The admins approve and commit `kv` (installed on every peer by init, deployed on no
    channel); the commit is ordered while peer0.org2 is cut from the orderer, and a client that
    saw it committed calls `kv` at once. peer0.org2 must wait for the commit's block before it
    resolves the contract, not refuse CONTRACT_NOT_COMMITTED from its older definitions."""
    kv = Definition(
        "kv", "1.0", 1, BUILTIN_PACKAGE_IDS["kv"], canonical_policy("AND(Org1.peer, Org2.peer)")
    )
    seen = 0
    for admin in ("admin.org1", "admin.org2"):
        approver = dep.gateway_client(admin, "peer0.org1")
        approver.observe_block(CHANNEL, seen)
        approved = await approver.submit_transaction(CHANNEL, NAMESPACE, "approve", kv.to_bytes())
        assert approved.status.result == VALID, admin
        seen = approved.status.block_number
    admin = dep.gateway_client("admin.org1", "peer0.org1")
    admin.observe_block(CHANNEL, seen)
    signed, tx_id = admin.proposal(CHANNEL, NAMESPACE, "commit", [kv.to_bytes()])
    endorsed = await admin.endorse(signed)  # both peers endorse; then peer0.org2 falls behind
    dep.net.partition(ORDERER, LAGGING)
    dep.at(dep.now + HEAL_AFTER_S, lambda: dep.net.heal(ORDERER, LAGGING))
    await admin.submit(admin.envelope(endorsed.prepared_payload))
    committed = await admin.commit_status(CHANNEL, tx_id)
    assert committed.result == VALID
    client = dep.gateway_client("user1.org1", "peer0.org1")
    client.observe_block(CHANNEL, committed.block_number)
    done = await client.submit_transaction(CHANNEL, "kv", "put", "k", "v")
    return transaction_pb2.TxValidationCode.Name(done.status.result)


def test_a_contract_committed_while_an_endorser_lags_is_resolved_after_its_block() -> None:
    assert (
        outcome_on_eov_solo(_call_a_contract_deployed_while_the_endorser_lags)
        == "TX_VALIDATION_CODE_VALID"
    )
