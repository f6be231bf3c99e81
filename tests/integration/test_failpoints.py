"""Storage faults through named failpoints (`dltmw/ledger/failpoints.py`), on real processes.

One network per fault kind (database locked, disk I/O error, disk full) runs every flow: endorse-
order-validate, private payloads, notarised UTXO. Phase 1 arms each node's failpoints for two
faults each: every node must retry (a warning naming the write in its log), carry on, and lose or
duplicate nothing. Phase 2 makes the orderer's and the notary's faults persistent with a 1 s retry
budget: both must stop loudly (exit 71, traceback naming the failpoint) and, restarted without
the fault, take the unacknowledged work again with nothing lost or duplicated (the same code path
for every transient kind: one kind in `make test`, all in `make soak`); a non-transient fault (a
corrupt file) at a peer's block commit stops that peer at once, and after its restart it holds
the block exactly once. The PBFT-lite record log and a notary cluster's spent-set use the same
write helper (`ledger/retry.py`); they are covered by a notary-cluster network below.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from tiers import count, record

from dltmw.client import GatewayClient
from dltmw.client.privacy import PrivacyClient
from dltmw.client.utxo import PartyFiles, VaultClient, holdings_of
from dltmw.ops.supervisor import Supervisor
from dltmw.pki.network import init_network
from dltmw.runtime.process import EXIT_FATAL
from dltmw.v1 import transaction_pb2

from .test_supervision import committed_count, log_of, until

pytestmark = pytest.mark.integration
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
CH = "trades"
ENV = "DLTMW_FAILPOINTS"

NET = """
name = "failpoints"
[[orgs]]
id = "Org1"
[[orgs]]
id = "Org2"
[[orgs]]
id = "OrdererOrg"
[[orgs]]
id = "NotaryOrg"
[[nodes]]
id = "orderer0"
org = "OrdererOrg"
roles = ["orderer"]
[[nodes]]
id = "notary0"
org = "NotaryOrg"
roles = ["notary"]
[[nodes]]
id = "peer0.org1"
org = "Org1"
roles = ["peer", "gateway", "vault"]
[[nodes]]
id = "peer0.org2"
org = "Org2"
roles = ["peer", "gateway", "vault"]
[[clients]]
id = "user1.org1"
org = "Org1"
[[clients]]
id = "user1.org2"
org = "Org2"
[[channels]]
id = "trades"
members = ["Org1", "Org2"]
orderers = ["orderer0"]
endorsement_policy = "OR(Org1.peer, Org2.peer)"
contracts = [{ name = "bank" }, { name = "kv" }]
batch = { max_tx_count = 100, max_bytes = 1048576, timeout_ms = 50, cut_by_limits_only = true }
"""
# `cut_by_limits_only`: every envelope waits in the orderer's durable queue for the timeout, so
# `ledger.enqueue` is on every submission's path. (With adaptive cutting, the default, a lone
# envelope goes straight into a block, whose commit makes it durable: no queue write to fail.)
# Each node's failpoints in phase 1 (`@1`: the genesis block commits first).
PHASE1 = {
    "orderer0": ["ledger.enqueue", "ledger.commit_block@1"],
    "notary0": ["notary.record"],
    "peer0.org1": [
        "ledger.commit_block@1",
        "privacy.store",
        "privacy.execute",
        "vault.record",
        "outbox.write",
    ],
    "peer0.org2": ["ledger.commit_block@1", "privacy.store", "privacy.execute", "vault.record"],
}


def spec(points: list[str], kind: str, times: str = "*2") -> str:
    out = []
    for point in points:
        name, _, skip = point.partition("@")
        out.append(f"{name}={kind}{times}" + (f"@{skip}" if skip else ""))
    return ";".join(out)


@dataclass
class Net:
    path: Path
    sup: Supervisor


@pytest.fixture
def fault_net(tmp_path: Path) -> Iterator[Net]:
    topo = tmp_path / "topology.toml"
    topo.write_text(NET)
    init_network(topo, tmp_path / "net")
    net = Net(tmp_path / "net", Supervisor(tmp_path / "net"))
    try:
        yield net
    finally:
        codes = net.sup.stop_all()
        assert all(c == 0 for c in codes.values()), f"unclean stop: {codes}"


def start_all(net: Net, env_of: dict[str, str]) -> None:
    for node in net.sup.node_ids():
        net.sup.start(node, env={ENV: env_of[node]} if env_of.get(node) else None)
    for node in net.sup.node_ids():
        net.sup.wait_ready(node, 60)


def restart(net: Net, node: str, env: str = "", retry_s: float | None = None) -> None:
    """Crash `node` (kill -9, if it runs) and start it with failpoints `env`."""
    if node in net.sup.nodes and net.sup.nodes[node].process.poll() is None:
        net.sup.kill(node)
    if retry_s is not None:
        with (net.path / "nodes" / node / "node.toml").open("a") as f:
            f.write(f"\n[storage]\nretry_s = {retry_s}\n")
    net.sup.start(node, env={ENV: env} if env else None)
    net.sup.wait_ready(node, 60)


def fired(net: Net, node: str, name: str) -> bool:
    """The failpoint fired and its write was retried: the write alone, or a private store's
    group commit of several (`PrivateStore.transaction`), whose name joins its items' by "+"."""
    text = log_of(net.path, node)
    retried = re.search(rf"storage write (\S*\+)?{re.escape(name)}(\+\S*)? failed", text)
    return f"failpoint {name} fires" in text and retried is not None


def exactly_once_everywhere(net: Net, tx_ids: list[str]) -> bool:
    return all(
        committed_count(net.path, n, t) == 1 for n in ("peer0.org1", "peer0.org2") for t in tx_ids
    )


async def submit(net: Net, client_id: str, *args: str, attempts: int = 5) -> str:
    """One bank transaction (bounded retries of UNAVAILABLE while nodes restart)."""
    for attempt in range(attempts):
        try:
            async with await GatewayClient.connect(net.path, client_id) as client:
                done = await client.submit_transaction(CH, "bank", *args)
            assert done.status.result == VALID
            return done.tx_id
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt + 1 == attempts:
                raise
            await asyncio.sleep(0.5)
    raise AssertionError("unreachable")


async def phase1(net: Net, kind: str) -> list[str]:
    """Every flow while each node's failpoints inject two `kind` faults each."""
    tx_ids = list(
        await asyncio.gather(
            *(submit(net, "user1.org1", "open", f"A{i}", "10") for i in range(4)),
            *(submit(net, "user1.org2", "open", f"B{i}", "10") for i in range(2)),
        )
    )
    pc = PrivacyClient(await GatewayClient.connect(net.path, "user1.org1"))
    try:
        for i in range(2):
            done = await pc.submit_private(CH, ["Org2"], "kv", "put", f"p{i}", f"v{i}")
            assert done.status.result == VALID
            tx_ids.append(done.tx_id)
            report = await pc.validate(CH, done.payload_hash)
            assert report.parties and all(p.matches and not p.error for p in report.parties)
    finally:
        await pc.close()
    v1 = await VaultClient.connect(PartyFiles.load(net.path, "user1.org1"), "peer0.org1")
    v2 = await VaultClient.connect(PartyFiles.load(net.path, "user1.org2"), "peer0.org2")
    try:
        await v1.issue("cash", v1.identity_of("peer0.org2"), "JPY", 100)
        await v2.move("cash", v2.identity_of("peer0.org1"), "JPY", 40)
        assert holdings_of(await v2.query()) == {("cash", "JPY"): 60}
        assert holdings_of(await v1.query()) == {("cash", "JPY"): 40}
    finally:
        await v1.close()
        await v2.close()
    await until(lambda: exactly_once_everywhere(net, tx_ids), 30, "every tx once on each peer")
    for node, points in PHASE1.items():
        for point in points:
            name = point.partition("@")[0]
            await until(lambda n=node, p=name: fired(net, n, p), 30, f"{node}: {name} retried")
        assert net.sup.nodes[node].process.poll() is None, f"{node} stopped"
    return tx_ids


async def refused_until_stopped(
    net: Net, node: str, attempt: Callable[[], Awaitable[object]]
) -> None:
    """Try `attempt` (bounded) until `node` has stopped; every try must be refused (the first
    ones may not even reach a node that just restarted on a new port)."""
    process = net.sup.nodes[node].process
    for _ in range(10):
        with pytest.raises(grpc.aio.AioRpcError):
            await attempt()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(3)  # a node that failed is on its way out
            return


async def phase2(net: Net, kind: str) -> None:
    """Persistent faults at the orderer and the notary: loud stops, then nothing lost."""
    restart(net, "orderer0", f"ledger.enqueue={kind}", retry_s=1.0)
    restart(net, "notary0", f"notary.record={kind}", retry_s=1.0)
    v1 = await VaultClient.connect(PartyFiles.load(net.path, "user1.org1"), "peer0.org1")
    try:
        async with await GatewayClient.connect(net.path, "user1.org1") as client:
            signed, tx_id = client.proposal(CH, "bank", "open", ("Z", "3"))
            endorsed = await client.endorse(signed)
            envelope = client.envelope(endorsed.prepared_payload)
            await refused_until_stopped(net, "orderer0", lambda: client.submit(envelope))
        peer2 = v1.identity_of("peer0.org2")
        await refused_until_stopped(net, "notary0", lambda: v1.move("cash", peer2, "JPY", 5))
    finally:
        await v1.close()
    for node, name in (("orderer0", "ledger.enqueue"), ("notary0", "notary.record")):
        assert net.sup.nodes[node].process.wait(30) == EXIT_FATAL
        text = log_of(net.path, node)
        assert "the node stops" in text and "Traceback" in text and "StorageUnavailable" in text
        assert f"injected by failpoint {name}" in text
        restart(net, node)
    async with await GatewayClient.connect(net.path, "user1.org1") as client:
        for attempt in range(5):  # the same signed envelope, now that the orderer is back
            try:
                await client.submit(envelope)
                break
            except grpc.aio.AioRpcError:
                if attempt == 4:
                    raise
                await asyncio.sleep(0.5)
        assert (await client.commit_status(CH, tx_id)).result == VALID
    await until(lambda: exactly_once_everywhere(net, [tx_id]), 30, "resubmitted tx once")
    v1 = await VaultClient.connect(PartyFiles.load(net.path, "user1.org1"), "peer0.org1")
    v2 = await VaultClient.connect(PartyFiles.load(net.path, "user1.org2"), "peer0.org2")
    try:
        await v1.move("cash", v1.identity_of("peer0.org2"), "JPY", 5)
        assert holdings_of(await v1.query()) == {("cash", "JPY"): 35}
        assert holdings_of(await v2.query()) == {("cash", "JPY"): 65}
    finally:
        await v1.close()
        await v2.close()


async def corrupt_peer(net: Net) -> None:
    """A non-transient fault at a peer's block commit: it stops at once; restarted, it commits
    the block exactly once."""
    restart(net, "peer0.org2", "ledger.commit_block=corrupt")
    tx_id = await submit(net, "user1.org1", "open", "Q", "1")
    assert net.sup.nodes["peer0.org2"].process.wait(30) == EXIT_FATAL
    text = log_of(net.path, "peer0.org2")
    # The commit loop's failure stops the node; the deliver loop waiting for that commit fails
    # with the same error, before or while the node stops (a race of one loop turn).
    assert "task commit-trades failed; the node stops" in text
    assert "task deliver-trades failed" in text
    assert "database disk image is malformed" in text
    assert "injected by failpoint ledger.commit_block" in text
    assert committed_count(net.path, "peer0.org2", tx_id) == 0
    restart(net, "peer0.org2")
    await until(lambda: exactly_once_everywhere(net, [tx_id]), 30, "block committed once")


KINDS = ["ioerror", "locked", "full"]


@pytest.mark.soak
@pytest.mark.parametrize("kind", KINDS)
async def test_every_storage_write_retries_or_stops_loudly_and_loses_nothing(
    fault_net: Net, kind: str
) -> None:
    """Phase 1 for every kind; the loud stops (phase 2, the same code path for every transient
    kind) for the first kind in `make test` and for every kind in `make soak`."""
    start_all(fault_net, {n: spec(p, kind) for n, p in PHASE1.items()})
    tx_ids = await phase1(fault_net, kind)
    loud = kind in KINDS[: count(1, len(KINDS))]
    if loud:
        await phase2(fault_net, kind)
    if kind == KINDS[0]:
        await corrupt_peer(fault_net)
    ledger_rows = fault_net.path / "nodes" / "orderer0" / "data" / f"{CH}.orderer.sqlite"
    with contextlib.closing(sqlite3.connect(ledger_rows)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM pending").fetchone()[0] == 0
    record(
        "failpoints",
        fault=kind,
        failpoints=sum(len(p) for p in PHASE1.values()),
        loud_stops=(2 if loud else 0) + (kind == KINDS[0]),
        acknowledged=len(tx_ids),
        lost=0,
        duplicated=0,
    )


MEMBERS = [f"notary{i}" for i in range(4)]
CLUSTER_NET = (
    'name = "failpoints-cluster"\n'
    + "".join(f'[[orgs]]\nid = "{o}"\n' for o in ["Bank", "BrokerA", "N0", "N1", "N2", "N3"])
    + "".join(
        f'[[nodes]]\nid = "{m}"\norg = "N{i}"\nroles = ["notary"]\n' for i, m in enumerate(MEMBERS)
    )
    + '[[nodes]]\nid = "bank"\norg = "Bank"\nroles = ["vault"]\n'
    + '[[nodes]]\nid = "brokera"\norg = "BrokerA"\nroles = ["vault"]\n'
    + '[[clients]]\nid = "ops.bank"\norg = "Bank"\n'
    + '[[clients]]\nid = "trader.brokera"\norg = "BrokerA"\n'
    + f'[[notary_clusters]]\nid = "notaries"\nmembers = {MEMBERS!r}\n'.replace("'", '"')
)
# Three members retry a fault of each transient kind in their record log and spent-set; the
# fourth finds its spent-set corrupt at its first decided batch and stops (f = 1: the cluster
# goes on), and after a restart without the fault it catches up.
CLUSTER_FAULTS = {
    "notary0": "pbft.append=ioerror*2@2;notary_cluster.record=locked*2",
    "notary1": "pbft.append=full*2@2;notary_cluster.record=ioerror*2",
    "notary2": "pbft.append=locked*2@2;notary_cluster.record=full*2",
    "notary3": "notary_cluster.record=corrupt*1",
}


async def test_a_notary_cluster_retries_its_record_log_and_spent_set_or_stops_loudly(
    tmp_path: Path,
) -> None:
    topo = tmp_path / "topology.toml"
    topo.write_text(CLUSTER_NET)
    init_network(topo, tmp_path / "net")
    net = Net(tmp_path / "net", Supervisor(tmp_path / "net"))
    try:
        start_all(net, CLUSTER_FAULTS)
        bank = await VaultClient.connect(PartyFiles.load(net.path, "ops.bank"), "bank")
        broker = await VaultClient.connect(PartyFiles.load(net.path, "trader.brokera"), "brokera")
        try:
            for _ in range(2):
                await bank.issue("cash", bank.identity_of("brokera"), "JPY", 50, notary="notaries")
            await broker.move("cash", broker.identity_of("bank"), "JPY", 30, notary="notaries")
            assert net.sup.nodes["notary3"].process.wait(30) == EXIT_FATAL
            text = log_of(net.path, "notary3")
            assert "injected by failpoint notary_cluster.record" in text and "Traceback" in text
            for member in MEMBERS[:3]:
                for name in ("pbft.append", "notary_cluster.record"):
                    await until(lambda m=member, n=name: fired(net, m, n), 30, f"{member}: {name}")
                assert net.sup.nodes[member].process.poll() is None
            restart(net, "notary3")
            await broker.move("cash", broker.identity_of("bank"), "JPY", 20, notary="notaries")
            assert holdings_of(await broker.query()) == {("cash", "JPY"): 50}
            assert holdings_of(await bank.query(owner=bank.identity_of("bank"))) == {
                ("cash", "JPY"): 50
            }
        finally:
            await bank.close()
            await broker.close()
    finally:
        codes = net.sup.stop_all()
        assert all(c == 0 for c in codes.values()), f"unclean stop: {codes}"
