"""A consortium across hosts, on one machine: each organisation's nodes run in its own network
namespace (`netlab.py`: veth pairs on a bridge in a namespace of the test's own, a private /24),
advertise their static endpoints there, and are found from the channel config alone. Clients
run as processes inside their organisation's namespace.

`Consortium` deploys three organisations as docs/deploy.md does, each with its own directory
(its own keys; only definitions and block 0 cross): Figure 8 and a partition of one host with
nothing acknowledged lost; the notarised DvP and a private trade across the hosts. The slow-links
test adds 30 ms each way to every connection (a relay per node: no `tc netem` here) to a network
made by one `dltmw init` whose nodes each have their own, empty address book.
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
from typing import ClassVar

import pytest

from dltmw.ops.supervisor import Supervisor
from dltmw.pki.network import init_network
from dltmw.v1 import block_pb2, transaction_pb2

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


class Consortium:
    """Three organisations deployed as docs/deploy.md's walkthrough does it, each step run on
    the organisation's own host: `dltmw org init` per organisation (its keys only), `dltmw
    channel create` from the definitions, block 0 handed over, `dltmw network-map create`,
    `dltmw up`, `dltmw channel join`. Only definitions and block 0 cross between directories."""

    HOSTS: ClassVar[dict[str, str]] = {"OrdererOrg": "ord", "Org1": "org1", "Org2": "org2"}

    def __init__(self, lab: NetLab, root: Path) -> None:
        self.lab = lab
        self.dirs = {org: root / org for org in self.HOSTS}
        self.root = root
        self.started: list[Path] = []

    def run(self, org: str, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        """Run `args` on `org`'s host."""
        cmd = [*self.lab.exec_prefix(self.HOSTS[org]), *args]
        return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout_s)

    def on(self, org: str, *args: str, timeout_s: float = 120) -> str:
        """Run `args` on `org`'s host; its output (it must succeed)."""
        done = self.run(org, *args, timeout_s=timeout_s)
        assert done.returncode == 0, (args, done.stderr)
        return done.stdout

    def deploy(self, *create_options: str) -> None:
        for org, out in self.dirs.items():
            (self.root / f"{org}.toml").write_text(_org_topology(self.lab, org))
            self.on(org, DLTMW, "org", "init", str(self.root / f"{org}.toml"), "--out", str(out))
        defs = [a for org, out in self.dirs.items() for a in ("-d", str(out / f"{org}.org.json"))]
        create = ["channel", "create", str(self.dirs["OrdererOrg"]), "trades", "--orderer"]
        create += ["orderer0", "--member", "Org1", "--member", "Org2", "--endorsement-policy"]
        create += ["AND(Org1.peer, Org2.peer)", *create_options, *defs]
        self.on("OrdererOrg", DLTMW, *create)
        block = self.dirs["OrdererOrg"] / "channels" / "trades.block"
        for org, out in self.dirs.items():
            if org != "OrdererOrg":  # handed over: the only file that crosses, with defs
                (out / "channels").mkdir()
                shutil.copy(block, out / "channels" / block.name)
            self.on(org, DLTMW, "network-map", "create", str(out), *defs)
            for path in out.glob("nodes/*/node.toml"):  # links across hosts: notice a dead one
                path.write_text(path.read_text() + KEEPALIVE)
            self.on(org, DLTMW, "up", str(out))
            self.started.append(out)
        for org, node in (
            ("OrdererOrg", "orderer0"),
            ("Org1", "peer0.org1"),
            ("Org2", "peer0.org2"),
        ):
            self.on(org, DLTMW, "channel", "join", str(self.dirs[org]), "trades", node)

    def invoke(self, org: str, *call: str) -> subprocess.CompletedProcess[str]:
        """`dltmw invoke` as the organisation's client, on its host."""
        client = f"user1.{org.lower()}"
        return self.run(org, DLTMW, "invoke", str(self.dirs[org]), "trades", *call, "-c", client)

    def chain(self, org: str) -> list[block_pb2.Block]:
        return blocks(ledger_path(self.dirs[org], f"peer0.{org.lower()}"))

    def down(self) -> None:
        for out in self.started:
            assert run_dltmw("down", str(out)).returncode == 0, out
        self.started.clear()


@needs_namespaces
def test_three_hosts_figure8_partition_and_heal(tmp_path: Path) -> None:
    """Figure 8 comes out exactly across the hosts. Then Org2's host is partitioned: a
    transaction that needs Org2's endorsement fails with a clear error naming its peer, while
    transactions Org1 alone may endorse commit and are acknowledged; after healing, Org2's peer
    catches up and both peers hold the same chain with every acknowledged transaction VALID."""
    with NetLab(list(Consortium.HOSTS.values())) as lab:
        net = Consortium(lab, tmp_path)
        try:
            # Figure 8 needs its three transactions in one block: cut by the limits only
            net.deploy("--contract", "bank", "--contract", "kv=OR(Org1.peer, Org2.peer)",
                       "--timeout-ms", "1000", "--cut-by-limits-only")  # fmt: skip
            fig8 = net.on("Org1", sys.executable, str(HERE / "ns_figure8.py"),
                          str(net.dirs["Org1"]), "user1.org1", timeout_s=180)  # fmt: skip
            assert [int(c) for c in fig8.split()] == CODES

            lab.partition("org2")
            refused = net.invoke("Org1", "bank", "open", "P", "1")
            assert refused.returncode != 0 and "peer0.org2" in refused.stderr, refused.stderr
            acknowledged = []
            for i in range(5):  # Org1 alone may endorse kv: these commit during the partition
                done = net.invoke("Org1", "kv", "put", f"k{i}", "v")
                assert done.returncode == 0 and "VALID" in done.stdout, done.stderr
                acknowledged.append(done.stdout.split()[0])
            lab.heal("org2")
            deadline = time.monotonic() + 60
            while len(net.chain("Org2")) < len(net.chain("Org1")):  # Org2's peer catches up
                assert time.monotonic() < deadline, "peer0.org2 did not catch up"
                time.sleep(0.2)
            done = net.invoke("Org2", "bank", "open", "Q", "1")
            assert done.returncode == 0 and "VALID" in done.stdout, done.stderr
        finally:
            net.down()
        chain1, chain2 = net.chain("Org1"), net.chain("Org2")
        assert [b.header.SerializeToString() for b in chain1] == [
            b.header.SerializeToString() for b in chain2
        ]
        for codes_of in (tx_codes(chain1), tx_codes(chain2)):
            assert all(codes_of[tx] == [VALID] for tx in acknowledged)


@needs_namespaces
def test_three_organisations_each_with_its_own_directory_on_its_own_host(
    tmp_path: Path,
) -> None:
    """The consortium as docs/deploy.md deploys it, with its commands (`Consortium`). The three
    flows cross the hosts: an AND-endorsed transaction; a notarised DvP (Org1 sells a security
    to Org2 for cash, OrdererOrg's notary on a third host); a private trade note from Org1 to
    Org2 whose payload never reaches OrdererOrg's host (examples/consortium/trade.py, each side
    on its own host with its own directory). No organisation's directory holds another's
    private key."""
    note = "NOTE-" + secrets.token_hex(12)
    with NetLab(list(Consortium.HOSTS.values())) as lab:
        net = Consortium(lab, tmp_path)
        try:
            net.deploy("--timeout-ms", "50")
            done = net.invoke("Org1", "bank", "open", "A", "100")
            assert done.returncode == 0 and "VALID" in done.stdout, done.stderr
            trade = str(ROOT / "examples" / "consortium" / "trade.py")
            org1, org2 = str(net.dirs["Org1"]), str(net.dirs["Org2"])
            sold = json.loads(
                net.on("Org1", sys.executable, trade, "seller", org1, note, timeout_s=180)
            )
            bought = json.loads(
                net.on("Org2", sys.executable, trade, "buyer", org2, sold["payload_hash"])
            )
        finally:
            net.down()
        # both legs of the DvP moved, in one transaction
        assert sold["holdings"] == [["cash", "JPY", 400], ["security", ISIN, 60]]
        assert bought["holdings"] == [["cash", "JPY", 100], ["security", ISIN, 40]]
        assert sold["private_code"] == VALID
        assert bought["received"] == ["kv", "put", "trade-note", note]
        # the private payload stayed between Org1 and Org2: OrdererOrg ordered its hash only
        for org, out in net.dirs.items():
            holds = any(note.encode() in p.read_bytes() for p in out.rglob("*") if p.is_file())
            assert holds == (org != "OrdererOrg"), org
        chain1, chain2 = net.chain("Org1"), net.chain("Org2")
        assert [b.header.SerializeToString() for b in chain1] == [
            b.header.SerializeToString() for b in chain2
        ]
        assert tx_codes(chain1)[sold["private_tx_id"]] == [VALID]
    keys = {org: private_keys(out) for org, out in net.dirs.items()}
    for org, found in keys.items():  # each organisation holds its own private keys only
        others = {k for other, ks in keys.items() if other != org for k in ks.values()}
        assert found and not set(found.values()) & others, org
