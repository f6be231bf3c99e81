"""`dltmw failover NET NODE` (client/failover.py does the work; docs/operations.md)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from rich.console import Console

from dltmw.cli.errors import UserError
from dltmw.client.failover import ActiveAlive
from dltmw.client.failover import failover as promote_standby

console = Console()


def failover(network: Path, node: str, client: str | None) -> None:
    """Promote the standby of NODE's pair; refuse while the active answers."""
    try:
        reply = asyncio.run(promote_standby(network, node, client))
    except ActiveAlive as exc:
        raise UserError(str(exc)) from None
    if reply.already_promoted:
        console.print(f"the standby already serves as {reply.active_node_id} at {reply.address}")
    else:
        console.print(f"promoted: {reply.active_node_id} now resolves to {reply.address}")
