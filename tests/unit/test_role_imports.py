"""The node's entry module (`python -m dltmw.runtime`) loads no role's code: each role's code is
imported where `runtime/node.py` builds that role, so an orderer does not hold the peer,
gateway and contract code (~4.5 MiB of its start-up memory, benchmarks/RESULTS.md 2026-12-05
rss58), a notary neither these nor the orderer's. The started nodes themselves are checked in
`tests/integration/test_node_imports.py`; this is the quick check that the imports at the top
of the node's modules stay free of role code (red when one of them goes back to the top)."""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = "import json, sys; import dltmw.runtime.__main__; print(json.dumps(sorted(sys.modules)))"

ROLE_CODE = (  # each imported only by a node that hosts the role
    "dltmw.runtime.roles.gateway",
    "dltmw.runtime.roles.peer",
    "dltmw.runtime.roles.orderer",
    "dltmw.runtime.roles.notary",
    "dltmw.runtime.roles.vault",
    "dltmw.runtime.roles.privacy",
    "dltmw.runtime.contract_store",  # peers, vaults and notaries run installed contracts
    "dltmw.contract_sdk",
    "dltmw.contracts",
    "dltmw.rpc.gateway",
    "dltmw.rpc.endorser",
    "dltmw.rpc.crosschain",
    "dltmw.rpc.orderer",
)


def test_the_node_entry_module_loads_no_role_code() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD], check=False, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    modules: list[str] = json.loads(done.stdout)
    assert "dltmw.runtime.node" in modules  # the check sees what the entry loads
    loaded = [m for m in modules if any(m == p or m.startswith(p + ".") for p in ROLE_CODE)]
    assert loaded == []
