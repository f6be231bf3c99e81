"""Where nodes are (`net/addressbook.py`): advertised endpoints from a channel config win over
the local directory, carry the name and CA a link must verify, and malformed endpoints are
refused before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from dltmw.net.addressbook import AddressBook, Route, routes, split_endpoint
from dltmw.net.topology import Topology
from dltmw.v1 import config_pb2


@pytest.mark.parametrize(
    ("endpoint", "split"),
    [("peer0.example.com:7051", ("peer0.example.com", 7051)), ("[::1]:7051", ("::1", 7051))],
)
def test_endpoints_split_into_host_and_port(endpoint: str, split: tuple[str, int]) -> None:
    assert split_endpoint(endpoint) == split


@pytest.mark.parametrize(
    "endpoint", ["peer0", "peer0:", ":7051", "peer0:0", "peer0:65536", "a b:1", "u@h:1", "h:x"]
)
def test_malformed_endpoints_are_refused(endpoint: str) -> None:
    with pytest.raises(ValueError, match="endpoint"):
        split_endpoint(endpoint)


def test_routes_come_from_the_config_with_the_nodes_own_org_ca(tmp_path: Path) -> None:
    config = config_pb2.ChannelConfig(channel_id="c")
    config.organizations.add(org_id="Org1", root_certificate_pem=b"CA1")
    config.orderer_organizations.add(org_id="Ord", root_certificate_pem=b"CAO")
    config.peers.add(node_id="p1", org_id="Org1", endpoint="p1.example:7051")
    config.peers.add(node_id="p2", org_id="Org1")  # one machine: no endpoint, no route
    config.orderers.add(node_id="o1", org_id="Ord", endpoint="10.0.0.9:7050")
    found = routes(config)
    assert found == {
        "p1": Route("p1.example:7051", "p1.example", b"CA1"),
        "o1": Route("10.0.0.9:7050", "10.0.0.9", b"CAO"),
    }
    book = AddressBook(tmp_path)
    book.publish("p1", "127.0.0.1:1111")
    book.publish("p2", "127.0.0.1:2222")
    book.learn(found)
    assert book.lookup("p1") == "p1.example:7051" and book.tls_name("p1") == "p1.example"
    assert book.lookup("p2") == "127.0.0.1:2222" and book.tls_name("p2") == "p2"


def test_a_topology_endpoint_is_checked_and_becomes_the_default_listen(tmp_path: Path) -> None:
    base = '[[orgs]]\nid = "O"\n[[nodes]]\nid = "n1"\norg = "O"\nroles = ["orderer"]\n'
    path = tmp_path / "t.toml"
    path.write_text(base + 'endpoint = "n1.example:7050"\n')
    assert Topology.load(path).raw["nodes"][0]["listen"] == "n1.example:7050"
    path.write_text(base + 'endpoint = "n1.example:7050"\nlisten = "0.0.0.0:7050"\n')
    assert Topology.load(path).raw["nodes"][0]["listen"] == "0.0.0.0:7050"
    path.write_text(base + 'endpoint = "n1.example"\n')
    with pytest.raises(ValueError, match=r"nodes\[0\].*must be host:port"):
        Topology.load(path)
