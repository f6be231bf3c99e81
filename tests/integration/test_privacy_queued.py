"""Private delivery that survives a down recipient (docs/privacy.md "Agreement policy expression"
and "Queued delivery"), on real node processes.

Three organisations, one peer each. Channel `deals` requires the sender and one of the two others
(`OutOf(2, Org1.peer, Org2.peer, Org3.peer)`); channel `strict` requires every recipient
(ALL_RECIPIENTS: queued too, but nothing is agreed without Org3; the full flow is
test_privacy_queued_default.py); channel `plain` requires no agreement (`none`: the negative
control, a Send to a down recipient still fails). Org3's node is killed; Org1 sends to Org2 and Org3
on `deals` twice (the same key, two values: out of order would leave the first), each send answers
with peer0.org3 pending, each transaction commits VALID with Org1's and Org2's agreements, and the
sender's ValidatePrivateState says delivery to peer0.org3 is pending. The sender restarts (the duty
to deliver is read back from its table), Org3's node restarts, receives both payloads from the
queue, executes them in block order, and its private state hashes equal the others'.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from dltmw.client import GatewayClient
from dltmw.client.files import ClientFiles
from dltmw.client.governance import current_config, submit_update
from dltmw.client.privacy import PrivacyClient
from dltmw.core import config_edit
from dltmw.core.channel import ChannelView
from dltmw.core.config_update import add_signature, update_content
from dltmw.ops.supervisor import Supervisor
from dltmw.pki.network import agreement_settings, init_network
from dltmw.rpc.status import reason_of
from dltmw.v1 import config_update_pb2, private_payload_pb2, transaction_pb2
from dltmw.v1 import privacy_manager_service_pb2 as P

from .operations_http import scrape  # (relative: benchmarks import this module's TOPOLOGY)

pytestmark = pytest.mark.integration
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
ORGS = ("org1", "org2", "org3")
EXECUTED_ATTEMPTS = 40  # x 0.25 s: until a recipient has executed a committed transaction
POLICY = "OutOf(2, Org1.peer, Org2.peer, Org3.peer)"
TOPOLOGY = """
name = "queued"
[[orgs]]
id = "Org1"
[[orgs]]
id = "Org2"
[[orgs]]
id = "Org3"
[[orgs]]
id = "OrdererOrg"
[[nodes]]
id = "orderer0"
org = "OrdererOrg"
roles = ["orderer"]
[[nodes]]
id = "peer0.org1"
org = "Org1"
roles = ["peer", "gateway"]
[[nodes]]
id = "peer0.org2"
org = "Org2"
roles = ["peer", "gateway"]
[[nodes]]
id = "peer0.org3"
org = "Org3"
roles = ["peer", "gateway"]
[[clients]]
id = "user1.org1"
org = "Org1"
[[clients]]
id = "user1.org2"
org = "Org2"
[[clients]]
id = "user1.org3"
org = "Org3"
[[channels]]
id = "deals"
members = ["Org1", "Org2", "Org3"]
orderers = ["orderer0"]
private_agreement = "OutOf(2, Org1.peer, Org2.peer, Org3.peer)"
contracts = [{ name = "kv" }]
endorsement_policy = "Org1.peer"
batch = { max_tx_count = 100, max_bytes = 1048576, timeout_ms = 50 }
[[channels]]
id = "strict"
members = ["Org1", "Org2", "Org3"]
orderers = ["orderer0"]
contracts = [{ name = "kv" }]
endorsement_policy = "Org1.peer"
batch = { max_tx_count = 100, max_bytes = 1048576, timeout_ms = 50 }
[[channels]]
id = "plain"
members = ["Org1", "Org2", "Org3"]
orderers = ["orderer0"]
private_agreement = "none"
contracts = [{ name = "kv" }]
endorsement_policy = "Org1.peer"
batch = { max_tx_count = 100, max_bytes = 1048576, timeout_ms = 50 }
"""


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Supervisor]]:
    tmp = tmp_path_factory.mktemp("queued")
    (tmp / "topology.toml").write_text(TOPOLOGY)
    init_network(tmp / "topology.toml", tmp / "net")
    sup = Supervisor(tmp / "net")
    try:
        sup.up(timeout_s=90)
        yield tmp / "net", sup
    finally:
        codes = {n: sup.stop(n) for n in list(sup.nodes) if sup.running(n)}
        assert all(c == 0 for c in codes.values()), f"unclean stop: {codes}"


def invocation(key: str, value: str) -> bytes:
    return private_payload_pb2.PrivateInvocation(
        contract="kv", function="put", args=[key.encode(), value.encode()]
    ).SerializeToString()


def pstate(net: Path, org: str, channel: str) -> dict[str, bytes]:
    db = net / "nodes" / f"peer0.{org}" / "data" / f"{channel}.private.sqlite"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT key, value FROM pstate WHERE namespace='kv'").fetchall()
    finally:
        conn.close()
    return {str(k): bytes(v) for k, v in rows}


async def until_async(check: object, what: str, timeout_s: float = 90) -> None:
    """Await `check()` (bounded, with a deadline) until it is true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await check():  # type: ignore[operator]
        assert loop.time() < deadline, f"not reached in {timeout_s}s: {what}"
        await asyncio.sleep(0.25)


async def clients(path: Path, orgs: tuple[str, ...]) -> dict[str, PrivacyClient]:
    return {o: PrivacyClient(await GatewayClient.connect(path, f"user1.{o}")) for o in orgs}


async def close(pcs: dict[str, PrivacyClient]) -> None:
    for pc in pcs.values():
        await pc.close()


async def test_a_down_recipient_is_pending_then_catches_up_in_order(
    net: tuple[Path, Supervisor],
) -> None:
    path, sup = net
    sup.kill("peer0.org3")
    pcs = await clients(path, ("org1", "org2"))
    digests = []
    try:
        for value in ("first", "second"):
            sent = await pcs["org1"].send("deals", invocation("deal", value), ["Org2", "Org3"])
            assert list(sent.pending_nodes) == ["peer0.org3"]
            nonce, tx_id = pcs["org1"].new_nonce()
            collected = await pcs["org1"].collect_agreements("deals", sent.payload_hash, tx_id)
            assert collected.agreed and list(collected.unanswered) == ["peer0.org3"]
            assert len(collected.agreements) == 2
            envelope, _ = pcs["org1"].private_envelope(
                "deals", sent.payload_hash, collected.agreements, nonce
            )
            await pcs["org1"].client.submit(envelope)
            status = await pcs["org1"].client.commit_status("deals", tx_id)
            assert status.result == VALID, value
            digests.append(sent.payload_hash)
        # org1's commit status says nothing of the executors (org1's own runs after its commit,
        # org2's after org2's): ask until org1 and org2 have run it (bounded), while org3, down,
        # stays pending.
        parties: dict[str, Any] = {}
        for _ in range(EXECUTED_ATTEMPTS):
            try:
                view = await pcs["org1"].validate("deals", digests[-1], wait=False)
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.25)  # not executed at peer0.org1 yet
                continue
            parties = {p.node_id: p for p in view.parties}
            if parties["peer0.org2"].matches:
                break
            await asyncio.sleep(0.25)
        assert parties, "peer0.org1 never executed the committed private transaction"
        assert parties["peer0.org3"].delivery_pending and parties["peer0.org3"].error
        assert not parties["peer0.org2"].delivery_pending and parties["peer0.org2"].matches
        digests.append(await _sent_and_collected_in_one_call(path, sup, pcs["org1"]))
    finally:
        await close(pcs)
    assert pstate(path, "org2", "deals")["deal"] == b"second"
    # The sender restarts while the recipient is still down: its duty comes from its table.
    assert sup.stop("peer0.org1") == 0
    sup.start("peer0.org1")
    sup.wait_ready("peer0.org1", 60)
    sup.start("peer0.org3")
    sup.wait_ready("peer0.org3", 60)
    pcs = await clients(path, ORGS)
    try:
        for digest in digests:

            async def settled(d: bytes = digest) -> bool:
                try:
                    view = await pcs["org3"].validate("deals", d, wait=False)
                except grpc.aio.AioRpcError:
                    return False  # not executed at peer0.org3 yet
                return all(p.matches for p in view.parties)

            await until_async(settled, f"peer0.org3 executed {digest.hex()[:12]} like the others")
            view = await pcs["org1"].validate("deals", digest)
            assert view.status == P.PRIVATE_TX_STATUS_EXECUTED and not view.mismatch
            assert all(p.matches and not p.delivery_pending for p in view.parties)
        assert pstate(path, "org3", "deals") == pstate(path, "org1", "deals")
        assert pstate(path, "org3", "deals")["deal"] == b"second"  # in block order
    finally:
        await close(pcs)


def _agree_batches(sup: Supervisor, node: str) -> float:
    samples = scrape(sup.operations_address(node) or "")
    service = "dltmw.v1.PrivacyManagerService"
    return sum(
        v
        for (name, labels), v in samples.items()
        if name == "dltmw_rpc_requests_total"
        and {("service", service), ("method", "AgreeBatch")} <= labels
    )


async def _sent_and_collected_in_one_call(path: Path, sup: Supervisor, pc: PrivacyClient) -> bytes:
    """With Org3's node down, a payload sent and collected in one SendBatch (its agreements
    asked on the Push, runtime/roles/privacy/agreement.py): Org2 answers on the push (no
    AgreeBatch to it), Org3's delivery is queued and Org3 is asked by AgreeBatch as before
    (it does not answer), and the transaction commits VALID with Org1's and Org2's."""
    before = await asyncio.to_thread(_agree_batches, sup, "peer0.org2")
    nonce, tx_id = pc.new_nonce()
    digest, collected = await pc.send_and_collect(
        "deals", invocation("pushed", "v"), ["Org2", "Org3"], tx_id
    )
    assert collected.agreed and list(collected.unanswered) == ["peer0.org3"]
    assert len(collected.agreements) == 2
    assert await asyncio.to_thread(_agree_batches, sup, "peer0.org2") == before
    envelope, _ = pc.private_envelope("deals", digest, collected.agreements, nonce)
    await pc.client.submit(envelope)
    assert (await pc.client.commit_status("deals", tx_id)).result == VALID
    return digest


async def test_the_policy_is_not_met_without_the_only_other_party(
    net: tuple[Path, Supervisor],
) -> None:
    """Two parties: the projection of the 2-of-3 policy needs both, so with Org3 down the
    collection fails (a reason naming it) and nothing is ordered."""
    path, sup = net
    sup.kill("peer0.org3")
    pcs = await clients(path, ("org1",))
    try:
        sent = await pcs["org1"].send("deals", invocation("two", "x"), ["Org3"])
        assert list(sent.pending_nodes) == ["peer0.org3"]
        _, tx_id = pcs["org1"].new_nonce()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await pcs["org1"].collect_agreements("deals", sent.payload_hash, tx_id)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert reason_of(refused.value) == "PRIVATE_AGREEMENT_TIMEOUT"
        assert "peer0.org3" in (refused.value.details() or "")
    finally:
        await close(pcs)


async def test_all_recipients_queues_the_send_and_a_channel_without_agreements_refuses_it(
    net: tuple[Path, Supervisor],
) -> None:
    """Under ALL_RECIPIENTS the send is queued too, but one collection fails at once naming the
    pending recipient (nothing can be ordered without its agreement; the client's wait and the
    commit once it returns: test_privacy_queued_default.py). The negative control: on a channel
    without agreements nothing is queued, the send fails at once."""
    path, sup = net
    if sup.running("peer0.org3"):
        sup.kill("peer0.org3")
    pcs = await clients(path, ("org1",))
    try:
        sent = await pcs["org1"].send("strict", invocation("k", "v"), ["Org2", "Org3"])
        assert list(sent.pending_nodes) == ["peer0.org3"]
        _, tx_id = pcs["org1"].new_nonce()
        with pytest.raises(grpc.aio.AioRpcError) as pending:
            await pcs["org1"].collect_agreements("strict", sent.payload_hash, tx_id)
        assert pending.value.code() == grpc.StatusCode.UNAVAILABLE
        assert reason_of(pending.value) == "PRIVATE_AGREEMENT_TIMEOUT"
        assert "peer0.org3" in (pending.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await pcs["org1"].send("plain", invocation("k", "v"), ["Org2", "Org3"])
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert reason_of(refused.value) == "PEER_UNAVAILABLE"
        assert "peer0.org3" in (refused.value.details() or "")
    finally:
        await close(pcs)
    sup.start("peer0.org3")
    sup.wait_ready("peer0.org3", 60)


async def test_a_config_update_turns_the_strict_channel_into_a_queued_one(
    net: tuple[Path, Supervisor],
) -> None:
    """`strict` (ALL_RECIPIENTS) gets the 2-of-3 expression by a config update signed by two
    admins (a malformed expression is refused and changes nothing); then a send with Org3's
    node down is queued and commits, and Org3 catches up when it returns."""
    path, sup = net
    view = await current_config(path, "admin.org1", "strict")

    def update(text: str, before: ChannelView) -> config_update_pb2.ConfigUpdate:
        settings = (agreement_settings(text)["private_agreement"], text)
        new = config_edit.with_settings(before.config, private_agreement=settings)
        out = config_update_pb2.ConfigUpdate(content=update_content(before, new))
        for admin in ("admin.org1", "admin.org2"):
            add_signature(out, ClientFiles.load(path, admin).signer)
        return out

    with pytest.raises(grpc.aio.AioRpcError) as bad:  # refused at admission: nothing ordered
        await submit_update(path, "admin.org1", "strict", update("OutOf(1, Org1.admin)", view))
    assert reason_of(bad.value) == "CONFIG_INVALID"
    assert "never sign" in (bad.value.details() or "")
    _, code, _ = await submit_update(path, "admin.org1", "strict", update(POLICY, view))
    assert code == VALID
    sup.kill("peer0.org3")
    pcs = await clients(path, ("org1",))
    try:

        async def updated() -> bool:
            now = await current_config(path, "admin.org1", "strict")
            return now.config.private_agreement_policy == POLICY

        await until_async(updated, "the update applied")
        sent = await pcs["org1"].send("strict", invocation("after", "update"), ["Org2", "Org3"])
        assert list(sent.pending_nodes) == ["peer0.org3"]
        nonce, tx_id = pcs["org1"].new_nonce()
        collected = await pcs["org1"].collect_agreements("strict", sent.payload_hash, tx_id)
        envelope, _ = pcs["org1"].private_envelope(
            "strict", sent.payload_hash, collected.agreements, nonce
        )
        await pcs["org1"].client.submit(envelope)
        assert (await pcs["org1"].client.commit_status("strict", tx_id)).result == VALID
    finally:
        await close(pcs)
    sup.start("peer0.org3")
    sup.wait_ready("peer0.org3", 60)

    async def caught_up() -> bool:
        return pstate(path, "org3", "strict").get("after") == b"update"

    await until_async(caught_up, "peer0.org3 executed the queued transaction")
