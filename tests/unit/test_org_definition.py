"""Org definitions (`pki/org.py`): what one organisation hands the others is checked before a
channel is made from it — each certificate chains to the organisation's own root, names its
node and role, and an advertised endpoint is named by the node's TLS certificate — and a
refused definition writes nothing."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dltmw.core.genesis import read_genesis
from dltmw.net.netmap import NetworkMap
from dltmw.pki.ca import IssuedCert, issue_cert
from dltmw.pki.network import init_network
from dltmw.pki.org import (
    ChannelPlan,
    DefinitionError,
    check_definition,
    create_channel,
    init_org,
    write_network_map,
)
from dltmw.v1 import block_pb2, org_pb2


def _org(tmp: Path, org: str, node: str, roles: str, endpoint: str) -> org_pb2.OrgDefinition:
    topo = tmp / f"{org}.toml"
    topo.write_text(
        f'[[orgs]]\nid = "{org}"\n[[nodes]]\nid = "{node}"\norg = "{org}"\n'
        f'roles = {roles}\nendpoint = "{endpoint}"\n'
    )
    return init_org(topo, tmp / org)


@pytest.fixture(scope="module")
def orgs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, org_pb2.OrgDefinition]]:
    tmp = tmp_path_factory.mktemp("orgs")
    return tmp, {
        "Ord": _org(tmp, "Ord", "o1", '["orderer"]', "o1.example:7050"),
        "Org1": _org(tmp, "Org1", "p1", '["peer", "gateway"]', "p1.example:7051"),
        "Org2": _org(tmp, "Org2", "p2", '["peer", "gateway"]', "10.0.0.2:7051"),
    }


def _ca(tmp: Path, org: str) -> IssuedCert:
    return IssuedCert((tmp / org / "orgs" / org / "ca.pem").read_bytes(),
                      (tmp / org / "orgs" / org / "ca.key").read_bytes())  # fmt: skip


def test_a_definition_holds_certificates_and_public_keys_only(orgs) -> None:
    tmp, defs = orgs
    d = defs["Org2"]
    check_definition(d, datetime.now(UTC))
    assert [p.node_id for p in d.peers] == ["p2"] and not d.orderers
    assert d.peers[0].endpoint == "10.0.0.2:7051" and len(d.peers[0].privacy_public_key) == 32
    text = (tmp / "Org2" / "Org2.org.json").read_text()
    assert "PRIVATE KEY" not in text and "p2" in text


def _broken(defs: dict[str, org_pb2.OrgDefinition], tmp: Path, how: str) -> org_pb2.OrgDefinition:
    d = org_pb2.OrgDefinition()
    d.CopyFrom(defs["Org1"])
    if how == "root of another org":
        d.organization.root_certificate_pem = defs["Org2"].organization.root_certificate_pem
    elif how == "node renamed":
        d.peers[0].node_id = "p9"
        d.tls_certificates["p9"] = d.tls_certificates["p1"]
    elif how == "peer listed as orderer":
        d.orderers.append(d.peers[0])
    elif how == "node of another org":
        d.peers[0].org_id = "Org2"
    elif how == "tls of another org":
        other = issue_cert(_ca(tmp, "Org2"), "Org2", "p1", "peer", tls=True, hosts=["p1.example"])
        d.tls_certificates["p1"] = other.cert_pem
    elif how == "tls without the endpoint host":
        tls = issue_cert(_ca(tmp, "Org1"), "Org1", "p1", "peer", tls=True, hosts=["p1"])
        d.tls_certificates["p1"] = tls.cert_pem
    elif how == "no tls":
        del d.tls_certificates["p1"]
    return d


@pytest.mark.parametrize(
    ("how", "says"),
    [
        ("root of another org", "not issued by the root CA of 'Org1'"),
        ("node renamed", "its certificate names 'p1'"),
        ("peer listed as orderer", "is not an orderer's"),
        ("node of another org", "belongs to 'Org2'"),
        ("tls of another org", "TLS certificate is not issued by Org1's CA"),
        ("tls without the endpoint host", "does not name its endpoint host 'p1.example'"),
        ("no tls", "no TLS certificate"),
    ],
)
def test_a_bad_definition_is_refused_and_no_channel_is_made(orgs, how: str, says: str) -> None:
    tmp, defs = orgs
    bad = _broken(defs, tmp, how)
    with pytest.raises(DefinitionError, match=says):
        check_definition(bad, datetime.now(UTC))
    plan = ChannelPlan("trades", members=["Org1", "Org2"], orderers=["o1"])
    with pytest.raises(DefinitionError, match=says):
        create_channel(tmp / "Ord", plan, [defs["Ord"], bad, defs["Org2"]])
    assert not (tmp / "Ord" / "channels").exists()


@pytest.mark.parametrize(
    ("members", "orderers", "says"),
    [
        (["Org1", "Org3"], ["o1"], r"no definition of member\(s\) \['Org3'\]"),
        (["Org1"], ["o7"], r"orderer\(s\) \['o7'\] are in no definition"),
    ],
)
def test_a_channel_needs_a_definition_of_every_member_and_orderer(
    orgs, members: list[str], orderers: list[str], says: str
) -> None:
    tmp, defs = orgs
    with pytest.raises(DefinitionError, match=says):
        create_channel(tmp / "Ord", ChannelPlan("c", members, orderers), list(defs.values()))
    with pytest.raises(DefinitionError, match="two definitions of Org1"):
        create_channel(tmp / "Ord", ChannelPlan("c", ["Org1"], ["o1"]), [defs["Org1"]] * 2)
    assert not (tmp / "Ord" / "channels").exists()


def test_org_init_takes_one_organisation_without_channels(tmp_path: Path) -> None:
    topo = tmp_path / "t.toml"
    two = '[[orgs]]\nid = "A"\n[[orgs]]\nid = "B"\n'
    topo.write_text(two + '[[nodes]]\nid = "n"\norg = "A"\nroles = ["orderer"]\n')
    with pytest.raises(ValueError, match="ONE organisation"):
        init_org(topo, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_every_org_builds_the_same_network_map_with_inline_certificates(orgs) -> None:
    tmp, defs = orgs
    a, b = tmp / "map-a", tmp / "map-b"
    a.mkdir()
    b.mkdir()
    write_network_map(a, list(defs.values()))
    write_network_map(b, list(defs.values()))
    assert (a / "network-map.toml").read_bytes() == (b / "network-map.toml").read_bytes()
    netmap = NetworkMap.load(a / "network-map.toml")  # nothing else in the directory
    assert set(netmap.nodes) == {"o1", "p1", "p2"} and set(netmap.roots) == {"Ord", "Org1", "Org2"}
    assert netmap.nodes["p2"].identity == defs["Org2"].peers[0].identity
    routes = netmap.routes()
    assert routes["p2"].address == "10.0.0.2:7051" and routes["p2"].tls_name == "10.0.0.2"
    assert routes["p2"].roots_pem == defs["Org2"].organization.root_certificate_pem
    with pytest.raises(DefinitionError, match="3f\\+1"):
        write_network_map(a, list(defs.values()), {"nc": ["p1", "p2"]})


INIT_TOPOLOGY = """
[[orgs]]
id = "Ord"
[[orgs]]
id = "Org1"
[[orgs]]
id = "Org2"
[[nodes]]
id = "o1"
org = "Ord"
roles = ["orderer"]
[[nodes]]
id = "p1"
org = "Org1"
roles = ["peer", "gateway"]
[[nodes]]
id = "p2"
org = "Org2"
roles = ["peer", "gateway"]
[[channels]]
id = "flags"
members = ["Org1", "Org2"]
orderers = ["o1"]
"""


def _flags(block: Path) -> dict[str, bool]:
    """Every yes/no setting of a block 0's config (ChannelConfig's and BatchConfig's)."""
    config = read_genesis(block_pb2.Block.FromString(block.read_bytes())).config
    return {
        f"{type(m).__name__}.{f.name}": getattr(m, f.name)
        for m in (config, config.batch)
        for f in m.DESCRIPTOR.fields
        if f.type == f.TYPE_BOOL
    }


def test_a_custody_channel_has_the_new_channel_flags_of_dltmw_init(orgs, tmp_path: Path) -> None:
    """`dltmw channel create` (org custody) and `dltmw init` make a channel with the same
    settings turned on (identity references, batch signatures, PBFT-lite's dissemination,
    collector and carried batches): a new flag `dltmw init` sets is set by both."""
    tmp, defs = orgs
    shutil.copytree(tmp / "Ord", tmp_path / "Ord")
    custody = create_channel(
        tmp_path / "Ord", ChannelPlan("flags", ["Org1", "Org2"], ["o1"]), list(defs.values())
    )
    (tmp_path / "t.toml").write_text(INIT_TOPOLOGY)
    init_network(tmp_path / "t.toml", tmp_path / "net")
    made_by_init = _flags(tmp_path / "net" / "channels" / "flags.block")
    assert made_by_init["ChannelConfig.identity_references"]
    assert made_by_init["ChannelConfig.client_identity_references"]
    assert _flags(custody) == made_by_init
