"""Integration tier: real node processes on 127.0.0.1, real mTLS gRPC, real sqlite files.

`network(topology_text)` runs `dltmw init` into a temporary directory, starts every node as its
own process, waits for their READY lines (deadline, no sleeps) and, at teardown, stops them all
by PID and checks that each stopped cleanly (exit code 0).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dltmw.ops.supervisor import Supervisor
from dltmw.pki.network import init_network

TWO_ORG = """
name = "it"
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
[[nodes]]
id = "peer0.org1"
org = "Org1"
roles = ["peer", "gateway"]
[[nodes]]
id = "peer0.org2"
org = "Org2"
roles = ["peer", "gateway"]
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
endorsement_policy = "AND(Org1.peer, Org2.peer)"
contracts = [
  { name = "bank" },
  { name = "bank_rmw" },
  { name = "kv", endorsement_policy = "OR(Org1.peer, Org2.peer)" },
]
batch = { max_tx_count = 100, max_bytes = 1048576, timeout_ms = BATCH_MS }
"""


@pytest.fixture
def network(tmp_path: Path) -> Iterator[Callable[..., tuple[Path, Supervisor]]]:
    """Factory: start a network from topology text (`node_toml_extra` appended to every
    node.toml); everything is stopped at teardown."""
    started: list[Supervisor] = []

    def start(
        topology: str = TWO_ORG,
        batch_ms: int = 100,
        by_limits_only: bool = False,
        node_toml_extra: str = "",
    ) -> tuple[Path, Supervisor]:
        """`by_limits_only`: blocks are cut by count/bytes/`batch_ms` only (Fabric's rule), not
        as soon as the orderer has nothing more queued (the default, adaptive cutting);
        `node_toml_extra` is appended to every node.toml (e.g. a [tracing] table)."""
        topo = tmp_path / f"topology{len(started)}.toml"
        limits_only = ", cut_by_limits_only = true" if by_limits_only else ""
        topo.write_text(topology.replace("BATCH_MS", f"{batch_ms}{limits_only}"))
        net = tmp_path / f"net{len(started)}"
        init_network(topo, net)
        for node_toml in (net / "nodes").glob("*/node.toml"):  # e.g. a [tracing] table
            node_toml.write_text(node_toml.read_text() + node_toml_extra)
        sup = Supervisor(net)
        started.append(sup)
        sup.up(timeout_s=60)
        return net, sup

    yield start
    for sup in started:
        codes = sup.stop_all()
        assert all(c == 0 for c in codes.values()), f"unclean stop: {codes}"
