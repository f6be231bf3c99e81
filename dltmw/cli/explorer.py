"""`dltmw explorer NET`: where to open the explorer page of a running network.

Every node's operations endpoint serves the explorer (`runtime/explorer/`, docs/operations.md);
a peer holds the ledgers with their validation codes, so the command picks a running peer (or
the node named with `--node`), reads its endpoint from its READY line, and prints the URL. The
explorer answers loopback callers only by default, so the URL names 127.0.0.1 when the endpoint
listens on every address; nothing is started and nothing runs after the command returns.
"""

from __future__ import annotations

import json

from rich.console import Console

from dltmw.cli.errors import UserError
from dltmw.ops.supervisor import Supervisor
from dltmw.runtime.config import NodeConfig

console = Console(highlight=False)
ANY_ADDRESS = ("0.0.0.0", "::", "[::]", "")


def explorer_url(sup: Supervisor, node: str | None) -> tuple[str, str]:
    """(node id, URL) of the explorer of `node`, or of the first running peer."""
    candidates = [node] if node else sup.node_ids()
    for node_id in candidates:
        if not node and "peer" not in NodeConfig.load(sup.config_path(node_id)).roles:
            continue
        address = sup.operations_address(node_id) if sup.node_pid(node_id) else None
        if address:
            host, _, port = address.rpartition(":")
            host = "127.0.0.1" if host in ANY_ADDRESS else host
            return node_id, f"http://{host}:{port}/explorer/"
    which = f"node {node}" if node else "no peer of this network"
    raise UserError(
        f"{which} runs with an operations endpoint: start the network (`dltmw up`) first"
        if not node
        else f"{which} does not run with an operations endpoint: `dltmw start NET {node}`"
    )


def show(sup: Supervisor, node: str | None, as_json: bool) -> None:
    """Print where the explorer is."""
    node_id, url = explorer_url(sup, node)
    if as_json:
        print(json.dumps({"node": node_id, "url": url}))
    else:
        console.print(f"explorer of {node_id}: {url}")
