"""Real endpoints: nodes listen on static advertised `host:port`s (here three loopback
addresses, 127.0.0.2-4), find each other from the channel config alone — every node and client
gets its own, empty address book directory, so nothing is shared between them but the config
blocks — and a link verifies that the certificate names the advertised host and chains to the
node's own organisation's CA.

Two refusals on the same network: a peer whose TLS certificate lacks its advertised name, and a
peer that presents a certificate of another organisation (valid, naming the right host and id),
are both unreachable for the gateway, so a transaction needing their endorsement is refused and
nothing commits.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import grpc
import pytest
import tomli_w

from dltmw.client import GatewayClient
from dltmw.core.genesis import read_genesis
from dltmw.net.ports import plan_port
from dltmw.ops.supervisor import Supervisor
from dltmw.pki.ca import IssuedCert, issue_cert
from dltmw.pki.network import init_network
from dltmw.v1 import config_pb2, transaction_pb2
from dltmw.v1.block_pb2 import Block

pytestmark = pytest.mark.integration
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
HOSTS = {"orderer0": "127.0.0.2", "peer0.org1": "127.0.0.3", "peer0.org2": "127.0.0.4"}


def topology(endpoints: dict[str, str]) -> str:
    return f"""
name = "hosts"
[[orgs]]
id = "Org1"
[[orgs]]
id = "Org2"
[[orgs]]
id = "OrdererOrg"
[[nodes]]
id = "orderer0"
org = "OrdererOrg"
roles = ["orderer"]
endpoint = "{endpoints["orderer0"]}"
[[nodes]]
id = "peer0.org1"
org = "Org1"
roles = ["peer", "gateway"]
endpoint = "{endpoints["peer0.org1"]}"
[[nodes]]
id = "peer0.org2"
org = "Org2"
roles = ["peer", "gateway"]
endpoint = "{endpoints["peer0.org2"]}"
[[clients]]
id = "user1.org1"
org = "Org1"
[[channels]]
id = "trades"
members = ["Org1", "Org2"]
orderers = ["orderer0"]
endorsement_policy = "AND(Org1.peer, Org2.peer)"
contracts = [{{ name = "bank" }}]
batch = {{ max_tx_count = 100, max_bytes = 1048576, timeout_ms = 50 }}
"""


def own_address_book(config: Path) -> None:
    """Point a node's or client's address book at a private, empty directory."""
    doc = tomllib.loads(config.read_text())
    doc["files"]["address_book"] = "own-endpoints"
    config.write_text(tomli_w.dumps(doc))


def reissue_tls(net: Path, node: str, ca_org: str, hosts: list[str]) -> None:
    ca = IssuedCert(
        (net / "orgs" / ca_org / "ca.pem").read_bytes(),
        (net / "orgs" / ca_org / "ca.key").read_bytes(),
    )
    tls = issue_cert(ca, ca_org, node, "peer", tls=True, hosts=hosts)
    (net / "nodes" / node / "tls.pem").write_bytes(tls.cert_pem)
    (net / "nodes" / node / "tls.key").write_bytes(tls.key_pem)


async def test_nodes_find_each_other_from_the_config_and_verify_advertised_names(
    tmp_path: Path,
) -> None:
    endpoints = {n: f"{h}:{plan_port(h)}" for n, h in HOSTS.items()}
    (tmp_path / "topology.toml").write_text(topology(endpoints))
    net = tmp_path / "net"
    init_network(tmp_path / "topology.toml", net)
    config = Block.FromString((net / "channels" / "trades.block").read_bytes())
    assert {n.node_id: n.endpoint for n in _config(config).peers} == {
        "peer0.org1": endpoints["peer0.org1"],
        "peer0.org2": endpoints["peer0.org2"],
    }
    for path in [*net.glob("nodes/*/node.toml"), *net.glob("clients/*/client.toml")]:
        own_address_book(path)
    sup = Supervisor(net)
    try:
        addresses = sup.up(timeout_s=60)
        assert addresses == endpoints  # each serves at its advertised address
        async with await GatewayClient.connect(net, "user1.org1") as client:
            done = await client.submit_transaction("trades", "bank", "open", "A", "100")
            assert done.status.result == VALID
        assert not (net / "run" / "endpoints").exists()  # no shared address book was used
        books = [p for p in net.rglob("own-endpoints/*") if p.is_file()]
        assert all(p.parent.parent.name == p.name for p in books)  # each only knows itself

        bad_certs = {
            "a certificate without its advertised name": ("Org2", ["peer0.org2", "localhost"]),
            "another organisation's certificate": ("Org1", ["peer0.org2", HOSTS["peer0.org2"]]),
        }
        for n, (ca_org, hosts) in enumerate(bad_certs.values()):
            assert sup.stop("peer0.org2") == 0
            reissue_tls(net, "peer0.org2", ca_org, hosts)
            sup.nodes.pop("peer0.org2", None)
            sup.start("peer0.org2")
            sup.wait_ready("peer0.org2")
            async with await GatewayClient.connect(net, "user1.org1") as client:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await client.submit_transaction("trades", "bank", "open", f"B{n}", "1")
                assert refused.value.code() != grpc.StatusCode.UNKNOWN
                assert "peer0.org2" in (refused.value.details() or "")
                with pytest.raises(grpc.aio.AioRpcError, match="does not exist"):
                    await client.evaluate("trades", "bank", "balance", f"B{n}")  # not opened
    finally:
        codes = sup.stop_all()
    assert all(c == 0 for c in codes.values()), codes


def _config(block: Block) -> config_pb2.ChannelConfig:
    return read_genesis(block).config
