"""A consortium across hosts, on one machine: each organisation's node runs in its own network
namespace (`netlab.py`: veth pairs on a bridge in a namespace of the test's own, a private /24),
advertises its static endpoint there, and is found from the channel config alone (every node
and client has its own, empty address book directory). Clients run as processes inside their
organisation's namespace.

Figure 8 comes out exactly across the hosts. Then Org2's host is partitioned: a transaction
that needs Org2's endorsement fails with a clear error naming its peer, while transactions Org1
alone may endorse commit and are acknowledged; after healing, Org2's peer catches up and both
peers hold the same chain with every acknowledged transaction VALID — nothing lost.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dltmw.ops.supervisor import Supervisor
from dltmw.pki.network import init_network
from dltmw.v1 import transaction_pb2

from .figure8 import CODES
from .ledgers import blocks, ledger_path, tx_codes
from .netlab import NetLab, namespaces_possible
from .test_endpoints import own_address_book
from .test_org_custody import private_keys

pytestmark = pytest.mark.integration
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
HOST_OF = {"orderer0": "ord", "peer0.org1": "org1", "peer0.org2": "org2"}
CLIENT_HOST = {"user1.org1": "org1", "user1.org2": "org2"}
DLTMW = str(Path(sys.executable).parent / "dltmw")
HERE = Path(__file__).parent
ROOT = HERE.parents[1]
ISIN = "JP3000000001"

# A partition outlasting TCP_USER_TIMEOUT kills the orderer's end of a follower's Deliver stream
# without the follower hearing it; the follower's keepalive finds out. Across hosts, keep it short.
KEEPALIVE = "[keepalive]\ntime_ms = 2000\ntimeout_ms = 2000\nmin_recv_ping_interval_ms = 1000\n"
why_not = namespaces_possible()
needs_namespaces = pytest.mark.skipif(bool(why_not), reason=why_not or "namespaces available")


def topology(lab: NetLab, behind_relays: bool = False) -> str:
    """Two orgs and an orderer, one host each; `behind_relays`: each node listens on its host's
    loopback and `lab.delay` relays its advertised endpoint to it."""

    def node(nid: str, org: str, roles: str, port: int) -> str:
        endpoint = f"{lab.address(HOST_OF[nid])}:{port}"
        listen = f'listen = "127.0.0.1:{port}"\n' if behind_relays else ""
        return (
            f'[[nodes]]\nid = "{nid}"\norg = "{org}"\nroles = {roles}\n'
            f'endpoint = "{endpoint}"\n{listen}'
        )

    return (
        'name = "hosts"\n[[orgs]]\nid = "Org1"\n[[orgs]]\nid = "Org2"\n'
        + '[[orgs]]\nid = "OrdererOrg"\n'
        + node("orderer0", "OrdererOrg", '["orderer"]', 7050)
        + node("peer0.org1", "Org1", '["peer", "gateway"]', 7051)
        + node("peer0.org2", "Org2", '["peer", "gateway"]', 7051)
        + '[[clients]]\nid = "user1.org1"\norg = "Org1"\n'
        + '[[clients]]\nid = "user1.org2"\norg = "Org2"\n'
        + '[[channels]]\nid = "trades"\nmembers = ["Org1", "Org2"]\norderers = ["orderer0"]\n'
        + 'endorsement_policy = "AND(Org1.peer, Org2.peer)"\n'
        + 'contracts = [{ name = "bank" }, '
        + '{ name = "kv", endorsement_policy = "OR(Org1.peer, Org2.peer)" }]\n'
        # Figure 8 needs its three transactions in one block: cut by the limits only
        + "batch = { max_tx_count = 100, max_bytes = 1048576, timeout_ms = 1000, "
        + "cut_by_limits_only = true }\n"
    )


def client(lab: NetLab, net: Path, who: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a `dltmw` client command inside `who`'s organisation's namespace."""
    cmd = [*lab.exec_prefix(CLIENT_HOST[who]), DLTMW, *args[:1], str(net), *args[1:], "-c", who]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)


def run_dltmw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DLTMW, *args], check=False, capture_output=True, text=True, timeout=120)


def invoke(lab: NetLab, net: Path, who: str, *call: str) -> subprocess.CompletedProcess[str]:
    return client(lab, net, who, "invoke", "trades", *call)


@needs_namespaces
def test_three_hosts_figure8_partition_and_heal(tmp_path: Path) -> None:
    with NetLab(["ord", "org1", "org2"]) as lab:
        (tmp_path / "topology.toml").write_text(topology(lab))
        net = tmp_path / "net"
        init_network(tmp_path / "topology.toml", net)
        for path in [*net.glob("nodes/*/node.toml"), *net.glob("clients/*/client.toml")]:
            own_address_book(path)
        for path in net.glob("nodes/*/node.toml"):  # links across hosts: notice a dead one fast
            path.write_text(path.read_text() + KEEPALIVE)
        launch = {nid: lab.exec_prefix(host) for nid, host in HOST_OF.items()}
        sup = Supervisor(net, launch=launch)
        try:
            sup.up(timeout_s=60)
            run = [*lab.exec_prefix("org1"), sys.executable, str(HERE / "ns_figure8.py")]
            fig8 = subprocess.run(
                [*run, str(net), "user1.org1"],
                check=False,
                capture_output=True,
                text=True,
                timeout=180,
            )
            assert fig8.returncode == 0, fig8.stderr
            assert [int(c) for c in fig8.stdout.split()] == CODES

            lab.partition("org2")
            refused = invoke(lab, net, "user1.org1", "bank", "open", "P", "1")
            assert refused.returncode != 0 and "peer0.org2" in refused.stderr, refused.stderr
            acknowledged = []
            for i in range(5):  # Org1 alone may endorse kv: these commit during the partition
                done = invoke(lab, net, "user1.org1", "kv", "put", f"k{i}", "v")
                assert done.returncode == 0 and "VALID" in done.stdout, done.stderr
                acknowledged.append(done.stdout.split()[0])
            lab.heal("org2")
            p1, p2 = ledger_path(net, "peer0.org1"), ledger_path(net, "peer0.org2")
            deadline = time.monotonic() + 60
            while len(blocks(p2)) < len(blocks(p1)):  # Org2's peer catches up after healing
                assert time.monotonic() < deadline, "peer0.org2 did not catch up"
                time.sleep(0.2)
            done = invoke(lab, net, "user1.org2", "bank", "open", "Q", "1")
            assert done.returncode == 0 and "VALID" in done.stdout, done.stderr
        finally:
            codes = sup.stop_all()
        assert all(c == 0 for c in codes.values()), codes
        chain1, chain2 = blocks(p1), blocks(p2)
        assert [b.header.SerializeToString() for b in chain1] == [
            b.header.SerializeToString() for b in chain2
        ]
        for codes_of in (tx_codes(chain1), tx_codes(chain2)):
            assert all(codes_of[tx] == [VALID] for tx in acknowledged)


def test_the_delay_relay_delays_each_way(tmp_path: Path) -> None:
    """The relay behind `NetLab.delay` holds every byte `ms` in each direction: a round trip to
    an echo server through a 50 ms relay takes at least 100 ms (a lower bound: load can only
    add to it)."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readexactly(4))
        await writer.drain()
        writer.close()

    async def round_trip_s() -> float:
        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        relay = await asyncio.create_subprocess_exec(
            sys.executable, str(HERE / "delay_relay.py"), "127.0.0.1:0", f"127.0.0.1:{port}",
            "50", stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            assert relay.stdout is not None
            relay_port = int((await relay.stdout.readline()).split()[-1])
            reader, writer = await asyncio.open_connection("127.0.0.1", relay_port)
            started = time.monotonic()
            writer.write(b"ping")
            assert await reader.readexactly(4) == b"ping"
            writer.close()
            return time.monotonic() - started
        finally:
            relay.kill()
            await relay.wait()
            server.close()

    assert asyncio.run(asyncio.wait_for(round_trip_s(), 30)) >= 0.1


@needs_namespaces
def test_transactions_commit_across_slow_links(tmp_path: Path) -> None:
    """30 ms added each way on every connection to every host (a round trip of 60 ms, as with
    `tc netem delay 30ms` on each host's link; `NetLab.delay`): the AND-policy flow and
    Figure 8 still come out, every link crossing the relays."""
    with NetLab(["ord", "org1", "org2"]) as lab:
        (tmp_path / "topology.toml").write_text(topology(lab, behind_relays=True))
        net = tmp_path / "net"
        init_network(tmp_path / "topology.toml", net)
        for path in [*net.glob("nodes/*/node.toml"), *net.glob("clients/*/client.toml")]:
            own_address_book(path)
        ports = {"orderer0": 7050, "peer0.org1": 7051, "peer0.org2": 7051}
        for nid, port in ports.items():
            lab.delay(HOST_OF[nid], port, 30)
        launch = {nid: lab.exec_prefix(host) for nid, host in HOST_OF.items()}
        sup = Supervisor(net, launch=launch)
        try:
            sup.up(timeout_s=60)
            done = invoke(lab, net, "user1.org2", "bank", "open", "S", "1")
            assert done.returncode == 0 and "VALID" in done.stdout, done.stderr
            run = [*lab.exec_prefix("org1"), sys.executable, str(HERE / "ns_figure8.py")]
            fig8 = subprocess.run(
                [*run, str(net), "user1.org1"],
                check=False, capture_output=True, text=True, timeout=180,
            )  # fmt: skip
            assert fig8.returncode == 0, fig8.stderr
            assert [int(c) for c in fig8.stdout.split()] == CODES
        finally:
            codes = sup.stop_all()
        assert all(c == 0 for c in codes.values()), codes
        assert all(n >= 1 for n in lab.relayed())  # every node was reached through its relay


def _org_topology(lab: NetLab, org: str) -> str:
    """One organisation's own topology on its host: OrdererOrg an orderer and a notary, Org1
    and Org2 a peer that is also a vault, and a client."""
    host = {"OrdererOrg": "ord", "Org1": "org1", "Org2": "org2"}[org]

    def node(nid: str, roles: str, port: int) -> str:
        endpoint = f"{lab.address(host)}:{port}"
        return f'[[nodes]]\nid = "{nid}"\norg = "{org}"\nroles = {roles}\nendpoint = "{endpoint}"\n'

    head = f'name = "{org.lower()}"\n[[orgs]]\nid = "{org}"\n'
    if org == "OrdererOrg":
        return head + node("orderer0", '["orderer"]', 7050) + node("notary0", '["notary"]', 7052)
    n = org[-1]
    client = f'[[clients]]\nid = "user1.org{n}"\norg = "{org}"\n'
    return head + node(f"peer0.org{n}", '["peer", "gateway", "vault"]', 7051) + client


@needs_namespaces
def test_three_organisations_each_with_its_own_directory_on_its_own_host(
    tmp_path: Path,
) -> None:
    """The consortium as docs/deploy.md deploys it, with its commands: each organisation's
    directory is made by `dltmw org init` (its keys only), only definitions and block 0 travel
    between them, each starts its nodes on its own host (`dltmw up`) and joins them to the
    channel (`dltmw channel join`). The three flows cross the hosts: an AND-endorsed
    transaction; a notarised DvP (Org1 sells a security to Org2 for cash, OrdererOrg's notary
    on a third host); a private trade note from Org1 to Org2 whose payload never reaches
    OrdererOrg's host (examples/consortium/trade.py, each side on its own host with its own
    directory). No organisation's directory holds another's private key."""
    orgs = {"OrdererOrg": "ord", "Org1": "org1", "Org2": "org2"}
    note = "NOTE-" + secrets.token_hex(12)
    with NetLab(list(orgs.values())) as lab:

        def on(org: str, *args: str, timeout_s: float = 120) -> str:
            """Run `args` on `org`'s host; its output (it must succeed)."""
            cmd = [*lab.exec_prefix(orgs[org]), *args]
            done = subprocess.run(
                cmd, check=False, capture_output=True, text=True, timeout=timeout_s
            )
            assert done.returncode == 0, (args, done.stderr)
            return done.stdout

        dirs = {org: tmp_path / org for org in orgs}
        for org, out in dirs.items():
            (tmp_path / f"{org}.toml").write_text(_org_topology(lab, org))
            on(org, DLTMW, "org", "init", str(tmp_path / f"{org}.toml"), "--out", str(out))
        defs = [a for org, out in dirs.items() for a in ("-d", str(out / f"{org}.org.json"))]
        create = ["channel", "create", str(dirs["OrdererOrg"]), "trades", "--orderer"]
        create += ["orderer0", "--member", "Org1", "--member", "Org2", "--endorsement-policy"]
        create += ["AND(Org1.peer, Org2.peer)", "--timeout-ms", "50", *defs]
        on("OrdererOrg", DLTMW, *create)
        block = dirs["OrdererOrg"] / "channels" / "trades.block"
        started = []
        try:
            for org, out in dirs.items():
                if org != "OrdererOrg":  # handed over: the only file that crosses, with defs
                    (out / "channels").mkdir()
                    shutil.copy(block, out / "channels" / block.name)
                on(org, DLTMW, "network-map", "create", str(out), *defs)
                for path in out.glob("nodes/*/node.toml"):
                    path.write_text(path.read_text() + KEEPALIVE)
                on(org, DLTMW, "up", str(out))
                started.append(out)
            for org, node in (
                ("OrdererOrg", "orderer0"),
                ("Org1", "peer0.org1"),
                ("Org2", "peer0.org2"),
            ):
                on(org, DLTMW, "channel", "join", str(dirs[org]), "trades", node)
            invoke = ["invoke", str(dirs["Org1"]), "trades", "bank", "open", "A", "100"]
            assert "VALID" in on("Org1", DLTMW, *invoke, "-c", "user1.org1")
            trade = str(ROOT / "examples" / "consortium" / "trade.py")
            sold = json.loads(
                on("Org1", sys.executable, trade, "seller", str(dirs["Org1"]), note, timeout_s=180)
            )
            bought = json.loads(
                on("Org2", sys.executable, trade, "buyer", str(dirs["Org2"]), sold["payload_hash"])
            )
        finally:
            for out in started:
                run_dltmw("down", str(out))
        # both legs of the DvP moved, in one transaction
        assert sold["holdings"] == [["cash", "JPY", 400], ["security", ISIN, 60]]
        assert bought["holdings"] == [["cash", "JPY", 100], ["security", ISIN, 40]]
        assert sold["private_code"] == VALID
        assert bought["received"] == ["kv", "put", "trade-note", note]
        # the private payload stayed between Org1 and Org2: OrdererOrg ordered its hash only
        for org, out in dirs.items():
            holds = any(note.encode() in p.read_bytes() for p in out.rglob("*") if p.is_file())
            assert holds == (org != "OrdererOrg"), org
        chains = [blocks(ledger_path(dirs[o], f"peer0.{o.lower()}")) for o in ("Org1", "Org2")]
        assert [b.header.SerializeToString() for b in chains[0]] == [
            b.header.SerializeToString() for b in chains[1]
        ]
        assert tx_codes(chains[0])[sold["private_tx_id"]] == [VALID]
    keys = {org: private_keys(out) for org, out in dirs.items()}
    for org, found in keys.items():  # each organisation holds its own private keys only
        others = {k for other, ks in keys.items() if other != org for k in ks.values()}
        assert found and not set(found.values()) & others, org
