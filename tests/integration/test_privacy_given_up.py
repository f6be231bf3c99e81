"""Queued deliveries given up, on real node processes (docs/privacy.md "Queued delivery", branch
priv58). test_privacy_queued.py's network: Org1, Org2, Org3 with one peer each; `strict` requires
every recipient's agreement, `deals` the sender's and one other's.

1. Resuming a transaction whose delivery was abandoned is refused at once: Org3's node down, the
   SDK's private send ends in `AgreementPending`, the client abandons it, and its resume raises
   `DeliveryGivenUp` (PRIVATE_DELIVERY_GIVEN_UP, FAILED_PRECONDITION, `state` ABANDONED) instead
   of waiting out its deadline for `AgreementPending` again; nothing changed at the node.
2. A recipient whose organisation left the privacy group: group `g` of the three organisations,
   Org3's node down, a group payload sent (not ordered) and then Org3 removed from `g` (the
   REMOVE commits with Org1's and Org2's agreements): the sender gives up the payload's
   delivery to peer0.org3 (RECIPIENT_REMOVED) but keeps pushing the REMOVE, which Org3's node
   receives and executes when it returns, while the payload never reaches it; its collection is
   refused with RECIPIENT_REMOVED.
3. A recipient removed by a config update: Org2's and Org3's nodes down, a payload on `strict`
   queued for both; a config update signed by two admins removes Org3 from `strict`; the
   sender gives up peer0.org3 (the metric counts it), pushes to it stop (its log shows none
   after the WARNING while peer0.org2 is still tried), and Org2's node, back, gets the payload.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

import dltmw
from dltmw.client.files import ClientFiles
from dltmw.client.governance import current_config, submit_update
from dltmw.client.groups import create_group, remove_from_group
from dltmw.core import config_edit
from dltmw.core.config_update import add_signature, update_content
from dltmw.ledger import private_outbox as outbox
from dltmw.ops.supervisor import Supervisor
from dltmw.pki.network import init_network
from dltmw.rpc.status import reason_of
from dltmw.v1 import config_update_pb2, private_payload_pb2, transaction_pb2
from integration import test_privacy_queued as queued
from integration.operations_http import scrape, value
from integration.test_privacy_queued import clients, close
from integration.test_privacy_queued import until_async as until

pytestmark = pytest.mark.integration
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Supervisor]]:
    """A network of its own, from test_privacy_queued.py's topology."""
    tmp = tmp_path_factory.mktemp("givenup")
    (tmp / "topology.toml").write_text(queued.TOPOLOGY)
    init_network(tmp / "topology.toml", tmp / "net")
    sup = Supervisor(tmp / "net")
    try:
        sup.up(timeout_s=90)
        yield tmp / "net", sup
    finally:
        codes = {n: sup.stop(n) for n in list(sup.nodes) if sup.running(n)}
        assert all(c == 0 for c in codes.values()), f"unclean stop: {codes}"


def _rows(net: Path, org: str, channel: str, sql: str) -> list[tuple[object, ...]]:
    db = net / "nodes" / f"peer0.{org}" / "data" / f"{channel}.private.sqlite"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def states(net: Path, channel: str, digest: bytes) -> dict[str, int]:
    """node -> outbox state of `digest` at the sender, peer0.org1."""
    sql = f"SELECT node, state FROM outbox WHERE hash = x'{digest.hex()}'"
    return {str(n): int(s) for n, s in _rows(net, "org1", channel, sql)}  # type: ignore[call-overload]


def holds(net: Path, org: str, channel: str, digest: bytes) -> bool:
    sql = f"SELECT 1 FROM payloads WHERE hash = x'{digest.hex()}'"
    return bool(_rows(net, org, channel, sql))


def pushes_after_warning(net: Path, node: str) -> tuple[bool, dict[str, int]]:
    """(the sender's log has the WARNING giving up `node` on `strict`, failed pushes to each
    node logged after it)."""
    seen, after = False, {}
    log = net / "run" / "logs" / "peer0.org1.log"
    for line in log.read_text(errors="replace").splitlines():
        try:
            message = str(json.loads(line).get("message", ""))
        except ValueError:
            continue
        if "channel strict:" in message and f"for {node} given up" in message:
            seen = True
        elif seen and message.startswith("delivery of ") and " failed" in message:
            to = message.split(" to ", 1)[1].split(" ", 1)[0]
            after[to] = after.get(to, 0) + 1
    return seen, after


def restart(sup: Supervisor, node: str) -> None:
    if not sup.running(node):
        sup.start(node)
        sup.wait_ready(node, 60)


async def test_resuming_an_abandoned_transaction_is_refused_at_once(
    net: tuple[Path, Supervisor],
) -> None:
    """Red without the node's check (`agreement._refuse_given_up`): the resume collects,
    peer0.org3 is still down, and it ends in `AgreementPending` after its deadline."""
    path, sup = net
    sup.kill("peer0.org3")
    profile = dltmw.Profile.from_network(path, "user1.org1")
    async with dltmw.Client(profile, deadline_s=3.0) as client:
        with pytest.raises(dltmw.AgreementPending) as raised:
            await client.submit_private("strict", ["Org2", "Org3"], "kv", "put", "gone", "x")
        pending = raised.value
        assert await client.abandon_private(pending) == 1
        before = states(path, "strict", pending.payload_hash)
        assert before == {"peer0.org3": outbox.ABANDONED}
        with pytest.raises(dltmw.DeliveryGivenUp) as refused:
            await client.resume_private(pending)
        error = refused.value
        assert error.reason == "PRIVATE_DELIVERY_GIVEN_UP" and error.code == "FAILED_PRECONDITION"
        assert error.nodes == ("peer0.org3",) and error.states == {"peer0.org3": "ABANDONED"}
        assert not error.retryable
        assert states(path, "strict", pending.payload_hash) == before  # nothing changed
    restart(sup, "peer0.org3")
    assert not holds(path, "org3", "strict", pending.payload_hash)


async def test_a_recipient_removed_from_the_group_is_given_up_but_gets_its_removal(
    net: tuple[Path, Supervisor],
) -> None:
    """Red without the group check in the redelivery (`_deliver`: `left_group`): the payload
    stays owed to peer0.org3 and reaches it when it returns."""
    path, sup = net
    restart(sup, "peer0.org3")
    pcs = await clients(path, ("org1",))
    pc = pcs["org1"]
    try:
        made = await create_group(pc, "deals", "g", ["Org1", "Org2", "Org3"])
        assert made.status.result == VALID
        sup.kill("peer0.org3")
        call = private_payload_pb2.PrivateInvocation(
            contract="kv", function="put", args=[b"late", b"call"], group="g"
        )
        sent = await pc.send("deals", call.SerializeToString(), [])
        assert list(sent.pending_nodes) == ["peer0.org3"]
        removed = await remove_from_group(pc, "deals", "g", ["Org3"])
        assert removed.status.result == VALID  # Org1 and Org2 agreed (2 of 3)

        async def given_up() -> bool:
            rows = await asyncio.to_thread(states, path, "deals", sent.payload_hash)
            return rows == {"peer0.org3": outbox.REMOVED}

        await until(given_up, "the group payload's delivery to peer0.org3 given up")
        # the REMOVE, executed by the sender, is still owed to the removed member
        assert states(path, "deals", removed.payload_hash) == {"peer0.org3": outbox.OWED}
        _, tx_id = pc.new_nonce()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await pc.collect_agreements("deals", sent.payload_hash, tx_id)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert reason_of(refused.value) == "PRIVATE_DELIVERY_GIVEN_UP"
        restart(sup, "peer0.org3")

        async def removal_delivered() -> bool:
            return not await asyncio.to_thread(states, path, "deals", removed.payload_hash)

        await until(removal_delivered, "the REMOVE delivered to peer0.org3")
        assert holds(path, "org3", "deals", removed.payload_hash)
        assert not holds(path, "org3", "deals", sent.payload_hash)
    finally:
        await close(pcs)


async def test_a_recipient_removed_by_a_config_update_is_given_up_and_the_rest_delivered(
    net: tuple[Path, Supervisor],
) -> None:
    """Red without the pass's config check (`redelivery._settle`): peer0.org3's row stays
    owed and its pushes go on after the update."""
    path, sup = net
    restart(sup, "peer0.org3")
    sup.kill("peer0.org2")
    sup.kill("peer0.org3")
    pcs = await clients(path, ("org1",))
    try:
        plain = private_payload_pb2.PrivateInvocation(
            contract="kv", function="put", args=[b"both", b"down"]
        )
        sent = await pcs["org1"].send("strict", plain.SerializeToString(), ["Org2", "Org3"])
        assert sorted(sent.pending_nodes) == ["peer0.org2", "peer0.org3"]
        view = await current_config(path, "admin.org1", "strict")
        update = config_update_pb2.ConfigUpdate(
            content=update_content(view, config_edit.without_org(view.config, "Org3"))
        )
        for admin in ("admin.org1", "admin.org2"):
            add_signature(update, ClientFiles.load(path, admin).signer)
        _, code, _ = await submit_update(path, "admin.org1", "strict", update)
        assert code == VALID

        async def given_up() -> bool:
            rows = await asyncio.to_thread(states, path, "strict", sent.payload_hash)
            return rows.get("peer0.org3") == outbox.REMOVED

        await until(given_up, "peer0.org3's delivery given up")
        samples = scrape(sup.operations_address("peer0.org1") or "")
        removed = value(
            samples,
            "dltmw_private_deliveries_given_up_total",
            channel="strict",
            reason="recipient_removed",
        )
        assert removed == 1

        async def org2_tried_twice_more() -> bool:
            seen, after = await asyncio.to_thread(pushes_after_warning, path, "peer0.org3")
            return seen and after.get("peer0.org2", 0) >= 2

        await until(org2_tried_twice_more, "peer0.org2 pushed twice after the give-up")
        _, after = pushes_after_warning(path, "peer0.org3")
        assert after.get("peer0.org3", 0) == 0, after  # pushes to the removed node stopped
        assert states(path, "strict", sent.payload_hash)["peer0.org2"] == outbox.OWED
        restart(sup, "peer0.org2")

        async def delivered() -> bool:
            rows = await asyncio.to_thread(states, path, "strict", sent.payload_hash)
            return rows == {"peer0.org3": outbox.REMOVED}

        await until(delivered, "peer0.org2 got the payload, peer0.org3's row kept")
        assert holds(path, "org2", "strict", sent.payload_hash)
    finally:
        await close(pcs)
