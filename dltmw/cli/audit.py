"""`dltmw audit NET`: compare block hashes, state hashes and private-state hashes across every
node of each channel and name the first divergence (logic in `dltmw/client/audit.py`).

Exit status: 0 when every reachable node agrees and no node's state differs from its stored
hash; 1 on any divergence; 2 when nothing diverged but some node could not be audited.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from dltmw.cli.params import NetworkDir
from dltmw.client.audit import ChannelReport, audit_network

console = Console()


def audit(
    network: NetworkDir,
    channel: Annotated[str | None, typer.Option("--channel", help="only this channel")] = None,
    client: Annotated[
        str | None,
        typer.Option("--client", "-c", help="admin to ask every node as (default: each node's)"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON document")] = False,
) -> None:
    """Compare block, state and private-state hashes across the nodes of each channel."""
    reports = asyncio.run(audit_network(network, channel, client))
    if as_json:
        print(json.dumps([_as_dict(r) for r in reports], indent=2))
    else:
        for report in reports:
            _print(report)
    if any(r.findings for r in reports):
        raise typer.Exit(1)
    if not reports:
        console.print(f"[yellow]no node of {network} could be audited (is the network up?)[/]")
    if any(r.unreachable for r in reports) or not reports:
        raise typer.Exit(2)


def _as_dict(report: ChannelReport) -> dict[str, Any]:
    return {
        "channel": report.channel_id,
        "common_height": report.common_height,
        "nodes": [
            {
                "node": v.node_id,
                "roles": list(v.roles),
                "height": v.height,
                "stored_state_hash": v.stored_state_hash.hex() if v.has_state else None,
                "recomputed_state_hash": v.recomputed_state_hash.hex() if v.has_state else None,
                "private_state_hash": v.private_stored_state_hash.hex() if v.has_private else None,
            }
            for v in report.views
        ],
        "divergences": [
            {
                "node": f.node_id,
                "channel": f.channel_id,
                "height": f.height,
                "what": f.what,
                "detail": f.detail,
            }
            for f in report.findings
        ],
        "first_divergence": None if not report.findings else report.findings[0].__dict__,
        "unreachable": report.unreachable,
        "purged": report.purged,
    }


def _short(data: bytes) -> str:
    return data.hex()[:16] if data else "-"


def _print(report: ChannelReport) -> None:
    table = Table(
        title=f"channel {report.channel_id} (compared up to height {report.common_height})"
    )
    for column in ("node", "roles", "height", "state hash", "recomputed", "private state"):
        table.add_column(column)
    for v in sorted(report.views, key=lambda v: v.node_id):
        table.add_row(
            v.node_id,
            ",".join(v.roles),
            str(v.height),
            _short(v.stored_state_hash) if v.has_state else "",
            _short(v.recomputed_state_hash) if v.has_state else "",
            _short(v.private_stored_state_hash) if v.has_private else "",
        )
    console.print(table)
    if report.purged:  # verified like the others: the ledger keeps their hashes
        console.print(f"PURGED: {len(report.purged)} private transaction(s)")
    for node, why in sorted(report.unreachable.items()):
        console.print(f"[yellow]not audited:[/] {node}: {why}")
    if not report.findings:
        console.print(f"[green]{report.channel_id}: no divergence[/]")
        return
    first = report.findings[0]
    console.print(
        f"[red]first divergence:[/] node {first.node_id}, channel {first.channel_id}, "
        f"height {first.height}: {first.what} ({first.detail})"
    )
    for f in report.findings[1:]:
        console.print(f"  also: node {f.node_id}, height {f.height}: {f.what} ({f.detail})")
