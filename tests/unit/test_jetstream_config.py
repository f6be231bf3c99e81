"""The configuration of jetstream ordering: the topology's `[jetstream]` table, the cluster plan
`dltmw init` writes (`net/nats_plan.py`), and the orderers' node.toml `[jetstream]` table."""

from __future__ import annotations

from pathlib import Path

import pytest

from dltmw.core.block import block_hash, make_block
from dltmw.core.errors import PeerError
from dltmw.core.genesis import read_genesis
from dltmw.core.identity import SigningIdentity
from dltmw.net.nats_plan import NatsPlan
from dltmw.net.topology import Topology
from dltmw.pki.network import init_network
from dltmw.runtime.config import NodeConfig
from dltmw.runtime.roles.peer.committer import check_orderer_signatures
from dltmw.v1 import block_pb2, config_pb2

ROOT = Path(__file__).parents[2]
TOPOLOGY = (ROOT / "services/networks/jetstream-three.toml").read_text()


def test_a_jetstream_channel_needs_the_jetstream_table(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text(TOPOLOGY.replace("[jetstream]\nservers = 3\nreplicas = 3\n", ""))
    with pytest.raises(ValueError, match="needs a \\[jetstream\\] table"):
        Topology.load(path)


def test_more_replicas_than_servers_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text(TOPOLOGY.replace("servers = 3", "servers = 1"))
    with pytest.raises(ValueError, match="more replicas than servers"):
        Topology.load(path)


def test_init_plans_the_cluster_and_tells_only_the_orderers(tmp_path: Path) -> None:
    (tmp_path / "t.toml").write_text(TOPOLOGY)
    init_network(tmp_path / "t.toml", tmp_path / "net")
    plan = NatsPlan.load(tmp_path / "net" / "jetstream")
    assert len(plan.members) == 3
    ports = [p for m in plan.members for p in (m.client_port, m.route_port, m.monitor_port)]
    assert len(set(ports)) == len(ports)
    for member in plan.members:  # every member routes to all, keeps its own store
        conf = (plan.member_dir(member) / "nats.conf").read_text()
        assert all(f"127.0.0.1:{m.route_port}" in conf for m in plan.members)
        assert str(plan.member_dir(member) / "store") in conf
    for node in ("orderer0", "orderer1"):
        config = NodeConfig.load(tmp_path / "net" / "nodes" / node / "node.toml")
        assert config.jetstream is not None
        assert config.jetstream.servers == plan.urls
        assert config.jetstream.replicas == 3
    peer = NodeConfig.load(tmp_path / "net" / "nodes" / "peer0.org1" / "node.toml")
    assert peer.jetstream is None
    block = block_pb2.Block.FromString((tmp_path / "net/channels/trades.block").read_bytes())
    assert read_genesis(block).config.ordering == config_pb2.ORDERING_TYPE_JETSTREAM


def test_a_plan_reads_back_as_written(tmp_path: Path) -> None:
    plan = NatsPlan.fresh(tmp_path / "js", 3)
    plan.write()
    assert NatsPlan.load(tmp_path / "js") == NatsPlan(
        (tmp_path / "js").resolve(), plan.members, plan.name
    )


def test_peers_accept_a_block_signed_by_either_orderer_and_by_nobody_else(
    tmp_path: Path,
) -> None:
    """Each jetstream orderer signs what it serves: one valid signature of a configured orderer
    suffices; a peer's (or a forged) signature does not."""
    (tmp_path / "t.toml").write_text(TOPOLOGY)
    init_network(tmp_path / "t.toml", tmp_path / "net")
    view = read_genesis(
        block_pb2.Block.FromString((tmp_path / "net/channels/trades.block").read_bytes())
    )

    def identity(node: str, org: str) -> SigningIdentity:
        home = tmp_path / "net/nodes" / node
        pem, key = (home / "identity.pem").read_bytes(), (home / "identity.key").read_bytes()
        return SigningIdentity.from_pem(org, pem, key)

    block = make_block("trades", 1, b"p" * 32, [b"tx"])
    digest = block_hash(block)

    def signed_by(who: SigningIdentity, over: bytes = digest) -> block_pb2.Block:
        out = block_pb2.Block()
        out.CopyFrom(block)
        out.metadata.signatures.add(signer=who.identity_bytes, signature=who.sign(over))
        return out

    for orderer in ("orderer0", "orderer1"):
        check_orderer_signatures(view, signed_by(identity(orderer, "OrdererOrg")))
    peer = identity("peer0.org1", "Org1")
    forged = signed_by(identity("orderer1", "OrdererOrg"), over=b"another block")
    with pytest.raises(PeerError, match="signature 0 is not by a configured orderer"):
        check_orderer_signatures(view, signed_by(peer))
    with pytest.raises(PeerError, match="signature 0: "):
        check_orderer_signatures(view, forged)
    with pytest.raises(PeerError, match="lacks 1 valid"):
        check_orderer_signatures(view, block)  # signed by nobody


def test_across_hosts_each_member_listens_on_its_own_host_and_routes_to_the_others(
    tmp_path: Path,
) -> None:
    hosts = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    path = tmp_path / "t.toml"
    path.write_text(TOPOLOGY.replace("replicas = 3\n", f"replicas = 3\nhosts = {hosts}\n", 1))
    init_network(path, tmp_path / "net")
    plan = NatsPlan.load(tmp_path / "net" / "jetstream")
    assert [m.host for m in plan.members] == hosts
    assert plan.urls == [f"tls://{h}:4222" for h in hosts]
    for member in plan.members:
        conf = (plan.member_dir(member) / "nats.conf").read_text()
        assert f'listen: "{member.host}:4222"' in conf
        assert f'http: "{member.host}:8222"' in conf
        assert all(f"nats-route://{h}:6222" in conf for h in hosts)
        assert "127.0.0.1" not in conf
        assert 'ping_interval: "2s"' in conf  # a silent (partitioned) member is left in seconds
    config = NodeConfig.load(tmp_path / "net" / "nodes" / "orderer0" / "node.toml")
    assert config.jetstream is not None and config.jetstream.servers == plan.urls
    assert config.jetstream.ping_interval_ms == 2000


@pytest.mark.parametrize(
    ("hosts", "error"),
    [
        (["10.0.0.1", "10.0.0.2"], "2 hosts for 3 servers"),
        (["10.0.0.1", "10.0.0.1", "10.0.0.2"], "a host is named twice"),
    ],
)
def test_jetstream_hosts_must_name_each_server_once(
    tmp_path: Path, hosts: list[str], error: str
) -> None:
    path = tmp_path / "t.toml"
    path.write_text(TOPOLOGY.replace("replicas = 3\n", f"replicas = 3\nhosts = {hosts}\n", 1))
    with pytest.raises(ValueError, match=error):
        Topology.load(path)


def test_a_plan_written_before_hosts_reads_as_loopback(tmp_path: Path) -> None:
    plan = NatsPlan.fresh(tmp_path / "js", 1)
    plan.write()
    doc = (tmp_path / "js" / "cluster.toml").read_text()
    (tmp_path / "js" / "cluster.toml").write_text(
        "\n".join(line for line in doc.splitlines() if not line.startswith("host ="))
    )
    assert NatsPlan.load(tmp_path / "js").members[0].url.startswith("nats://127.0.0.1:")


def test_the_cluster_runs_mutual_tls_and_lets_in_only_the_orderers(tmp_path: Path) -> None:
    (tmp_path / "t.toml").write_text(TOPOLOGY)
    init_network(tmp_path / "t.toml", tmp_path / "net")
    plan = NatsPlan.load(tmp_path / "net" / "jetstream")
    assert plan.tls and all(url.startswith("tls://") for url in plan.urls)
    assert plan.users == (
        "CN=orderer0,O=OrdererOrg,OU=orderer",
        "CN=orderer1,O=OrdererOrg,OU=orderer",
    )
    orderer_ca = (tmp_path / "net" / "orgs" / "OrdererOrg" / "ca.pem").read_bytes()
    assert plan.ca_file.read_bytes() == orderer_ca  # the peers' organisations are not in it
    for member in plan.members:
        conf = (plan.member_dir(member) / "nats.conf").read_text()
        assert conf.count("verify_and_map: true") == 1  # clients: certificate subject = user
        assert conf.count("verify: true") == 1  # routes: mutual TLS between members
        assert 'users = [{user: "CN=orderer0,O=OrdererOrg,OU=orderer"}' in conf
        cert, key = plan.tls_files(member)
        assert cert.exists() and (key.stat().st_mode & 0o777) == 0o600
    config = NodeConfig.load(tmp_path / "net" / "nodes" / "orderer0" / "node.toml")
    assert config.jetstream is not None
    assert Path(config.jetstream.ca_file).resolve() == plan.ca_file


def test_tls_off_is_plain_tcp(tmp_path: Path) -> None:
    (tmp_path / "t.toml").write_text(
        TOPOLOGY.replace("replicas = 3\n", "replicas = 3\ntls = false\n", 1)
    )
    init_network(tmp_path / "t.toml", tmp_path / "net")
    plan = NatsPlan.load(tmp_path / "net" / "jetstream")
    assert not plan.tls and all(url.startswith("nats://") for url in plan.urls)
    assert "tls {" not in (plan.member_dir(plan.members[0]) / "nats.conf").read_text()
    config = NodeConfig.load(tmp_path / "net" / "nodes" / "orderer0" / "node.toml")
    assert config.jetstream is not None and config.jetstream.ca_file == ""
