"""A node loads only the code of the roles it hosts (`runtime/node.py`, `runtime/roles/utxo.py`:
role code is imported where the role is built), so an idle node's memory and its start-up time
are not spent on notary, vault, PBFT-lite, standby, JetStream, PostgreSQL, simulator or bench
code it never runs, nor on pydantic (the topology's validator, not node.toml's).

Each node of a two-org network (solo orderer; peers with privacy keys and an operations
endpoint, as `dltmw init` makes them) is started in a child process exactly as
`python -m dltmw.runtime` does — the entry module imported, then `Node(config).start()` — and the
child prints the modules it holds once the node serves. What a role needs is loaded (the
peer's privacy manager, the operations endpoint: the check can see a loaded module); what no
hosted role needs is not.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dltmw.pki.network import init_network
from tests.integration.conftest import TWO_ORG

pytestmark = pytest.mark.integration

CHILD = """
import json, sys
from pathlib import Path
import uvloop
import dltmw.runtime.__main__  # what `python -m dltmw.runtime` imports before it starts
from dltmw.runtime.config import NodeConfig
from dltmw.runtime.node import Node

async def main():
    node = Node(NodeConfig.load(Path(sys.argv[1])))
    address = await node.start()
    try:
        print(json.dumps({"address": address, "modules": sorted(sys.modules)}))
    finally:
        await node.stop(grace_s=1.0)

uvloop.run(main())
"""

NEVER = (  # no role of this network runs them
    "dltmw.runtime.roles.notary",
    "dltmw.runtime.roles.vault",
    "dltmw.runtime.roles.orderer.pbft",
    "dltmw.runtime.roles.orderer.jetstream",
    "dltmw.core.pbft",
    "dltmw.core.notary_cluster",
    "dltmw.ledger.pbft_store",
    "dltmw.ledger.notary_store",
    "dltmw.ledger.vault_store",
    "dltmw.ledger.postgresql",
    "dltmw.runtime.standby",
    "dltmw.rpc.standby",
    "dltmw.rpc.notary",
    "dltmw.rpc.flow",
    "dltmw.sim",
    "dltmw.bench",
    "dltmw.sdk",
    "dltmw.cli",
    "psycopg",
    "nats",
    # node.toml is read without pydantic (net/tomltable.py: ~9 MB of every node's memory)
    "pydantic",
    "pydantic_core",
    "importlib.metadata",  # `dltmw.__version__` is read on first use, never by a node
    "dltmw.net.topology",  # the topology file's schema is `dltmw init`'s (net/roles.py)
)
PRIVACY = ("dltmw.runtime.roles.privacy", "dltmw.ledger.private_store", "dltmw.rpc.privacy")
# The peer's and the gateway's code, and the contract code only peers, vaults and notaries run:
# an orderer node without them starts ~2.5 MiB lighter (benchmarks/RESULTS.md 2026-12-05 rss58)
PEER_GATEWAY = (
    "dltmw.runtime.roles.peer",
    "dltmw.runtime.roles.gateway",
    "dltmw.runtime.contract_store",
    "dltmw.contract_sdk",
    "dltmw.contracts",
    "dltmw.rpc.endorser",
    "dltmw.rpc.gateway",
    "dltmw.rpc.crosschain",
)


def _loaded(modules: list[str], packages: tuple[str, ...]) -> list[str]:
    return [m for m in modules if any(m == p or m.startswith(p + ".") for p in packages)]


def _modules_of_started_node(net: Path, node: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(net / "nodes" / node / "node.toml")],
        cwd=net / "nodes" / node,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    started = json.loads(done.stdout.strip().splitlines()[-1])
    assert started["address"].startswith("127.0.0.1:")
    modules: list[str] = started["modules"]
    return modules


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("imports")
    (root / "topology.toml").write_text(TWO_ORG.replace("BATCH_MS", "50"))
    init_network(root / "topology.toml", root / "net")
    return root / "net"


def test_a_peer_loads_its_roles_code_and_no_other(net: Path) -> None:
    modules = _modules_of_started_node(net, "peer0.org1")
    assert _loaded(modules, NEVER) == []
    assert "dltmw.runtime.roles.privacy.manager" in modules  # it holds a privacy key
    assert "dltmw.runtime.operations" in modules  # its [operations] endpoint


def test_a_solo_orderer_loads_neither_pbft_privacy_peer_nor_gateway_code(net: Path) -> None:
    modules = _modules_of_started_node(net, "orderer0")
    assert _loaded(modules, NEVER + PRIVACY + PEER_GATEWAY) == []
    assert "dltmw.runtime.roles.orderer.solo" in modules
    assert "dltmw.rpc.replica" in modules  # served (refusing) by every orderer node
