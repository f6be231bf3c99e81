"""Standby peers (issue 20 item 6): the topology rules, what `dltmw init` writes for a standby,
the gate every RPC passes before promotion (unary and streaming), and promotion's durable
marker and address record. The real-process failover is tests/integration/test_failover.py."""

from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from cryptography import x509

from dltmw.core.errors import ClientError
from dltmw.core.genesis import read_genesis
from dltmw.net.addressbook import AddressBook
from dltmw.net.netmap import NetworkMap
from dltmw.net.tomlfile import FileError
from dltmw.net.topology import Topology
from dltmw.pki.network import init_network
from dltmw.rpc.boundary import Boundary
from dltmw.runtime.config import Limits, NodeConfig
from dltmw.runtime.context import NodeContext
from dltmw.runtime.standby import PROMOTED_FILE, Standby, superseded_gate
from dltmw.v1 import block_pb2, errors_pb2, gateway_service_pb2

ROOT = Path(__file__).resolve().parents[2]
TWO_ORG = (ROOT / "services" / "networks" / "two-org.toml").read_text()
ACTIVE, STANDBY = "peer0.org1", "peer0.org1-standby"


def _with_standby(org: str = "Org1", of: str = ACTIVE, roles: str = '["peer", "gateway"]') -> str:
    node = f'[[nodes]]\nid = "{STANDBY}"\norg = "{org}"\nroles = {roles}\nstandby_of = "{of}"\n'
    return TWO_ORG.replace("[[clients]]", node + "[[clients]]", 1)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (_with_standby(of="peer9"), "unknown node 'peer9'"),
        (_with_standby(of="orderer0"), "orderer0 is not an active peer or vault node"),
        (_with_standby(org="Org2"), "belongs to Org1, not Org2"),
        (_with_standby(roles='["peer", "vault"]'), "only the peer/gateway/vault roles of its"),
    ],
    ids=["unknown-active", "active-not-a-peer", "other-org", "role-the-active-lacks"],
)
def test_a_bad_standby_is_refused_with_its_key_path(tmp_path: Path, text: str, problem: str):
    path = tmp_path / "topology.toml"
    path.write_text(text)
    with pytest.raises(FileError) as refused:
        Topology.load(path)
    assert problem in str(refused.value)
    assert "standby_of" in str(refused.value)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("standby")
    (tmp / "topology.toml").write_text(_with_standby())
    out = tmp / "net"
    init_network(tmp / "topology.toml", out)
    return out


def test_init_gives_the_standby_the_actives_identity_and_its_own_tls(net: Path) -> None:
    active, standby = net / "nodes" / ACTIVE, net / "nodes" / STANDBY
    for name in ("identity.pem", "identity.key", "privacy.key"):
        assert (standby / name).read_bytes() == (active / name).read_bytes(), name
    assert (standby / "tls.pem").read_bytes() != (active / "tls.pem").read_bytes()
    cert = x509.load_pem_x509_certificate((standby / "tls.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {ACTIVE, STANDBY} <= set(names.get_values_for_type(x509.DNSName))
    config = NodeConfig.load(standby / "node.toml")
    assert (config.node_id, config.standby_of, config.identity_id) == (STANDBY, ACTIVE, ACTIVE)
    joined = {p.resolve() for p in NodeConfig.load(active / "node.toml").genesis_blocks}
    assert joined and {p.resolve() for p in config.genesis_blocks} == joined
    assert config.data_dir != NodeConfig.load(active / "node.toml").data_dir


def test_the_channel_config_and_default_gateways_do_not_name_the_standby(net: Path) -> None:
    for block_path in (net / "channels").glob("*.block"):
        view = read_genesis(block_pb2.Block.FromString(block_path.read_bytes()))
        assert STANDBY not in {p.node_id for p in view.config.peers}
        assert ACTIVE in {p.node_id for p in view.config.peers}
    for client_toml in (net / "clients").glob("*/client.toml"):
        with client_toml.open("rb") as f:
            assert tomllib.load(f)["client"]["gateway"] != STANDBY


def _standby(tmp_path: Path) -> Standby:
    ctx = cast(NodeContext, type("Ctx", (), {"addresses": AddressBook(tmp_path / "endpoints")}))
    standby = Standby(ctx, ACTIVE, tmp_path, STANDBY)
    standby.address = "127.0.0.1:4242"
    return standby


REFUSED = [
    "/dltmw.v1.GatewayService/Evaluate",
    "/dltmw.v1.GatewayService/Transact",
    "/dltmw.v1.GatewayService/Events",
    "/dltmw.v1.EndorserService/ProcessProposals",
    "/dltmw.v1.PrivacyManagerService/Push",
    "/dltmw.v1.OrdererService/Deliver",
]
OPEN = [
    "/grpc.health.v1.Health/Check",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/dltmw.v1.AdminService/NodeStatus",
    "/dltmw.v1.StandbyService/Promote",
]


def test_an_unpromoted_standby_refuses_the_actives_work(tmp_path: Path) -> None:
    standby = _standby(tmp_path)
    for path in REFUSED:
        with pytest.raises(ClientError) as refused:
            standby.gate(path)
        assert refused.value.reason == errors_pb2.ERROR_REASON_STANDBY_NOT_PROMOTED
        assert refused.value.metadata == {"active": ACTIVE}
    for path in OPEN:
        standby.gate(path)


def test_promotion_is_durable_opens_the_gate_and_takes_the_actives_name(tmp_path: Path) -> None:
    standby = _standby(tmp_path)
    assert asyncio.run(standby.promote()) is False  # the active never published: not alive
    assert (tmp_path / PROMOTED_FILE).exists()
    assert standby.ctx.addresses.lookup(ACTIVE) == standby.address
    for path in REFUSED:
        standby.gate(path)
    assert asyncio.run(standby.promote()) is True  # again: nothing to do
    restarted = _standby(tmp_path)
    assert restarted.promoted
    restarted.gate(REFUSED[0])


def test_promotion_fences_a_revived_active_out(tmp_path: Path) -> None:
    standby = _standby(tmp_path)
    book = standby.ctx.addresses
    assert book.superseded_by(ACTIVE) is None
    asyncio.run(standby.promote())
    # the fence is durable, names the standby, and is there before the address is published
    assert book.superseded_by(ACTIVE) == STANDBY
    gate = superseded_gate(ACTIVE, STANDBY)
    for path in [
        *REFUSED,
        "/dltmw.v1.AdminService/JoinChannel",
        "/dltmw.v1.StandbyService/Promote",
    ]:
        with pytest.raises(ClientError) as refused:
            gate(path)
        assert refused.value.reason == errors_pb2.ERROR_REASON_ACTIVE_SUPERSEDED
        assert refused.value.metadata == {"standby": STANDBY}
    for path in OPEN[:2]:  # health and reflection only
        gate(path)


class _Aborted(Exception):
    pass


class _Context:
    """The little of a grpc.aio servicer context the boundary reads before a servicer runs."""

    def __init__(self) -> None:
        self.status: Any = None

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}

    async def abort_with_status(self, status: Any) -> None:
        self.status = status
        raise _Aborted


GATEWAY = gateway_service_pb2.DESCRIPTOR.services_by_name["GatewayService"]


@pytest.mark.parametrize("method", ["Evaluate", "Events", "Transact"])
def test_the_boundary_asks_the_gate_before_any_servicer_runs(tmp_path: Path, method: str):
    boundary = Boundary(Limits())
    boundary.gate = _standby(tmp_path).gate
    ran: list[str] = []

    async def servicer(*_args: object) -> Any:
        ran.append(method)
        return None

    async def streaming(*_args: object) -> Any:
        ran.append(method)
        yield None

    descriptor = GATEWAY.methods_by_name[method]
    behaviour = streaming if descriptor.server_streaming else servicer
    handler = boundary.handler(GATEWAY, descriptor, behaviour)
    context = _Context()

    async def call() -> None:
        if descriptor.client_streaming:

            async def requests() -> Any:
                yield b""

            async for _ in handler.stream_stream(requests(), context):  # type: ignore[union-attr]
                pass
        elif descriptor.server_streaming:
            await handler.unary_stream(b"", context)  # type: ignore[misc]
        else:
            await handler.unary_unary(b"", context)  # type: ignore[misc]

    with pytest.raises(_Aborted):
        asyncio.run(call())
    assert ran == []
    assert context.status.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "STANDBY_NOT_PROMOTED" in context.status.details


class _Privacy:
    """A privacy manager whose replication passes are scripted: `outcomes` in order (a list of
    stored hashes, or an exception to raise); the standby is promoted after the last."""

    def __init__(self, standby: Standby, outcomes: list[Any]) -> None:
        self.channels = {"trades": object()}
        self.standby = standby
        self.outcomes = outcomes
        self.calls: list[tuple[str, str, list[bytes]]] = []

    async def replicate_from(self, channel_id: str, node_id: str, recheck: Any = ()) -> list[bytes]:
        self.calls.append((channel_id, node_id, list(recheck)))
        outcome = self.outcomes.pop(0)
        if not self.outcomes:
            self.standby.promoted = True  # the loop ends after this pass
        if isinstance(outcome, Exception):
            raise outcome
        return list(outcome)


async def test_follow_pulls_from_the_active_until_promoted_and_survives_failed_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dltmw.runtime.standby.FOLLOW_S", 0)
    standby = _standby(tmp_path)
    forgotten: list[str] = []

    async def forget(node_id: str) -> None:
        forgotten.append(node_id)

    standby.ctx.forget = forget  # type: ignore[method-assign]
    down = grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, None, None, "active down")
    refused = ClientError(errors_pb2.ERROR_REASON_CHANNEL_NOT_FOUND, "not joined yet")
    privacy = _Privacy(standby, [[b"h1"], down, refused, [], [b"h2"]])
    await asyncio.wait_for(standby.follow(privacy, None), timeout=10)
    # every pass asks the active; the hashes stored by a pass are rechecked by the next one
    # that succeeds (a failed pass keeps them), and a failed pass re-resolves the active
    assert privacy.calls == [
        ("trades", ACTIVE, []),
        ("trades", ACTIVE, [b"h1"]),
        ("trades", ACTIVE, [b"h1"]),
        ("trades", ACTIVE, [b"h1"]),
        ("trades", ACTIVE, []),
    ]
    assert forgotten == [ACTIVE, ACTIVE]
    await standby.follow(privacy, None)  # promoted: returns at once, asks nothing
    assert len(privacy.calls) == 5


VAULT_PAIR = """
name = "vault-standby"
[[orgs]]
id = "BrokerB"
[[orgs]]
id = "NotaryOrg"
[[nodes]]
id = "notary0"
org = "NotaryOrg"
roles = ["notary"]
[[nodes]]
id = "brokerb"
org = "BrokerB"
roles = ["vault"]
[[nodes]]
id = "brokerb-standby"
org = "BrokerB"
roles = ["vault"]
standby_of = "brokerb"
"""


def test_a_vault_node_standby_is_its_active_to_the_network_map(tmp_path: Path) -> None:
    (tmp_path / "topology.toml").write_text(VAULT_PAIR)
    init_network(tmp_path / "topology.toml", tmp_path / "net")
    netmap = NetworkMap.load(tmp_path / "net" / "network-map.toml")
    assert sorted(netmap.nodes) == ["brokerb", "notary0"]  # the standby is not a party
    standby_identity = tmp_path / "net" / "nodes" / "brokerb-standby" / "identity.pem"
    assert (
        standby_identity.read_bytes()
        == (tmp_path / "net" / "nodes" / "brokerb" / "identity.pem").read_bytes()
    )
    assert netmap.node_of(netmap.identity_of("brokerb")) == "brokerb"
