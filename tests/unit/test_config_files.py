"""Typed topology and node.toml: unknown keys are refused with their path, never defaulted.

A misspelt key used to be ignored (a misspelt policy fell back to the default policy); now the
loader names it. The page `docs/config.md` is generated from the same models and must be current.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import tomli_w

from dltmw.cli import config_doc
from dltmw.net.tomlfile import FileError
from dltmw.net.topology import Topology
from dltmw.pki.network import init_network
from dltmw.runtime.config import NodeConfig

ROOT = Path(__file__).resolve().parents[2]
TWO_ORG = (ROOT / "services" / "networks" / "two-org.toml").read_text()


def _topology(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "topology.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            ("endorsement_policy = ", "endorsment_policy = "),
            "channels[0].endorsment_policy: unknown key",
        ),
        (
            ('[[clients]]\nid = "user1.org1"', '[[client]]\nid = "user1.org1"'),
            "client: unknown key",
        ),
        (("timeout_ms = 200", "timeout = 200"), "channels[0].batch.timeout: unknown key"),
        (('ordering = "none"', 'ordering = "raft"'), "channels[0].ordering"),
        (('members = ["Org1", "Org2"]', 'members = ["Org1", "Org9"]'), "unknown org 'Org9'"),
        (('roles = ["peer", "gateway"]', 'roles = ["gateway"]'), "a gateway needs the peer role"),
        (('orderers = ["orderer0"]', 'orderers = ["peer0.org1"]'), "is not an orderer node"),
    ],
    ids=[
        "misspelt-policy-key",
        "misspelt-table",
        "misspelt-nested-key",
        "unknown-ordering",
        "dangling-org",
        "gateway-without-peer",
        "peer-as-orderer",
    ],
)
def test_a_bad_topology_is_refused_with_its_key_path(tmp_path: Path, change, problem) -> None:
    old, new = change
    assert old in TWO_ORG
    path = _topology(tmp_path, TWO_ORG.replace(old, new, 1))
    with pytest.raises(FileError) as refused:
        Topology.load(path)
    assert problem in str(refused.value)
    assert str(path) in str(refused.value)


def test_a_good_topology_gets_its_defaults(tmp_path: Path) -> None:
    text = TWO_ORG.replace(
        "batch = { max_tx_count = 100, max_bytes = 1048576, timeout_ms = 200 }", ""
    )
    raw = Topology.load(_topology(tmp_path, text)).raw
    assert raw["channels"][0]["batch"] == {
        "max_tx_count": 100,
        "max_bytes": 1048576,
        "timeout_ms": 250,
        "cut_by_limits_only": False,  # adaptive cutting unless a channel asks for Fabric's rule
        "reorder": False,  # arrival order unless a channel asks for Fabric++'s
        "pbft_dissemination": True,  # PBFT-lite orders batch certificates unless told not to
        "pbft_collector": True,  # PBFT-lite votes via the primary unless told not to
        "pbft_carried_batches": True,  # the primary's own batch carried unless told not to
    }
    assert raw["nodes"][0]["listen"] == "127.0.0.1:0"


@pytest.fixture(scope="module")
def node_toml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    net = tmp_path_factory.mktemp("net")
    init_network(ROOT / "services" / "networks" / "two-org.toml", net / "n")
    return net / "n" / "nodes" / "peer0.org1" / "node.toml"


def _edited(node_toml: Path, tmp_path: Path, tables: dict[str, dict[str, object]]) -> Path:
    raw = tomllib.loads(node_toml.read_text())
    for table, values in tables.items():
        raw.setdefault(table, {}).update(values)
    path = node_toml.parent / f"edited-{tmp_path.name}.toml"
    path.write_text(tomli_w.dumps(raw))
    return path


def test_the_generated_node_toml_loads(node_toml: Path) -> None:
    config = NodeConfig.load(node_toml)
    assert config.node_id == "peer0.org1" and config.roles == {"peer", "gateway"}
    assert config.logging.level == "INFO" and config.limits.items_per_request_max == 1000


def test_the_verify_pool_follows_the_cores_unless_configured(
    node_toml: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4}, raising=False)
    assert NodeConfig.load(node_toml).verify_pool_threads() == 5
    edited = _edited(node_toml, tmp_path, {"validation": {"verify_threads": 3}})
    assert NodeConfig.load(edited).verify_pool_threads() == 3


def test_the_notary_interpreter_settings_load(node_toml: Path, tmp_path: Path) -> None:
    default = NodeConfig.load(node_toml).notary
    assert (default.switch_interval_ms, default.gc_young_threshold) == (5.0, 700)
    table = {"notary": {"switch_interval_ms": 0.5, "gc_young_threshold": 50_000}}
    loaded = NodeConfig.load(_edited(node_toml, tmp_path, table)).notary
    assert (loaded.switch_interval_ms, loaded.gc_young_threshold) == (0.5, 50_000)


@pytest.mark.parametrize(
    ("tables", "problem"),
    [
        ({"limits": {"items_per_request_maxx": 5}}, "limits.items_per_request_maxx: unknown key"),
        ({"limit": {"items_per_request_max": 5}}, "limit: unknown key"),
        ({"limits": {"items_per_request_max": 0}}, "limits.items_per_request_max must be positive"),
        ({"logging": {"level": "LOUD"}}, "logging.level"),
        ({"keepalive": {"time_ms": 1000, "min_recv_ping_interval_ms": 5000}}, "keepalive"),
        ({"storage": {"retry_first_s": 5, "retry_max_s": 1}}, "retry_first_s <= retry_max_s"),
        ({"ledger": {"synchronous": "SOMETIMES"}}, "ledger.synchronous"),
        ({"node": {"roles": ["gateway"]}}, "a gateway needs the peer role"),
        ({"validation": {"verify_threads": -1}}, "validation.verify_threads"),
        ({"notary": {"switch_interval_ms": 0}}, "notary.switch_interval_ms"),
        ({"notary": {"gc_young_threshold": 10}}, "notary.gc_young_threshold"),
    ],
    ids=[
        "misspelt-limit",
        "misspelt-table",
        "zero-limit",
        "bad-level",
        "keepalive-rule",
        "storage-order",
        "bad-synchronous",
        "gateway-without-peer",
        "negative-verify-threads",
        "zero-switch-interval",
        "tiny-young-threshold",
    ],
)
def test_a_bad_node_toml_is_refused_with_its_key_path(
    node_toml: Path, tmp_path: Path, tables, problem
) -> None:
    with pytest.raises(FileError) as refused:
        NodeConfig.load(_edited(node_toml, tmp_path, tables))
    assert problem in str(refused.value)


def test_docs_config_md_is_generated_from_the_models() -> None:
    assert config_doc.PAGE.read_text() == config_doc.render(), (
        "docs/config.md is stale: run `python -m dltmw.cli.config_doc`"
    )
