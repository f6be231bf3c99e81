"""`dltmw` — init, up, down, start, stop, restart, invoke, query, events, demo, bench, audit.

Typer gives typed options and help text for free; rich renders the tables.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from dltmw.cli.audit import audit as audit_command
from dltmw.cli.bench import bench as bench_command
from dltmw.client import GatewayClient
from dltmw.ops.supervisor import Supervisor
from dltmw.pki.network import init_network
from dltmw.v1 import transaction_pb2

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
console = Console()
NetworkDir = Annotated[Path, typer.Argument(help="network directory made by `dltmw init`")]
ClientOpt = Annotated[str, typer.Option("--client", "-c", help="client id, e.g. user1.org1")]
GatewayOpt = Annotated[str | None, typer.Option("--gateway", "-g", help="gateway node id")]


@app.command()
def init(
    topology: Annotated[
        Path, typer.Argument(help="topology TOML, e.g. services/networks/two-org.toml")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="directory to create")],
    synchronous: Annotated[str, typer.Option(help="sqlite synchronous mode")] = "FULL",
) -> None:
    """Generate CAs, certificates, node configs and channel config blocks."""
    topo = init_network(topology, out, synchronous)
    console.print(f"network [bold]{topo.name}[/] written to {out}")


NodeArg = Annotated[str, typer.Argument(help="node id, e.g. peer0.org1")]


@app.command()
def up(network: NetworkDir) -> None:
    """Start every node that is not running (each under a keeper that restarts it after a
    failure) and wait until all are ready; nodes already running are reported, not doubled."""
    sup = Supervisor(network, keep=True)
    try:
        statuses = sup.start_missing()
    except RuntimeError as exc:
        for node_id in list(sup.nodes):  # only what this command started
            sup.stop(node_id)
        console.print(f"[red]failed:[/] {exc}")
        raise typer.Exit(1) from exc
    for s in statuses:
        what = "started" if s.started else "already running"
        console.print(f"{s.node_id:24} {s.address:22} pid {s.pid:<8} {what}")


@app.command()
def down(network: NetworkDir) -> None:
    """Stop every node of the network (SIGTERM, then SIGKILL after the grace period)."""
    codes = Supervisor(network).down()
    for node_id, code in sorted(codes.items()):
        console.print(f"{node_id:24} stopped (exit {code})")
    console.print("stopped")


@app.command()
def start(network: NetworkDir, node: NodeArg) -> None:
    """Start one node (under a keeper) and wait until it is ready."""
    sup = Supervisor(network, keep=True)
    _check_node(sup, node)
    try:
        sup.start(node)
        address = sup.wait_ready(node)
    except RuntimeError as exc:  # AlreadyRunning included
        console.print(f"[red]failed:[/] {exc}")
        raise typer.Exit(1) from exc
    console.print(f"{node:24} {address:22} pid {sup.nodes[node].process.pid:<8} started")


@app.command()
def stop(network: NetworkDir, node: NodeArg) -> None:
    """Stop one node (SIGTERM to its keeper or itself, then SIGKILL after the grace period)."""
    sup = Supervisor(network)
    _check_node(sup, node)
    code = sup.stop(node)
    if code is None:
        console.print(f"{node:24} was not running")
    else:
        console.print(f"{node:24} stopped (exit {code})")


@app.command()
def restart(network: NetworkDir, node: NodeArg) -> None:
    """Stop one node if it runs, then start it again (under a keeper)."""
    stop(network, node)
    start(network, node)


def _check_node(sup: Supervisor, node: str) -> None:
    if node not in sup.node_ids():
        console.print(f"[red]no node {node!r}[/] in {sup.dir} (nodes: {', '.join(sup.node_ids())})")
        raise typer.Exit(2)


@app.command()
def invoke(
    network: NetworkDir,
    channel: str,
    contract: str,
    function: str,
    args: Annotated[list[str] | None, typer.Argument()] = None,
    client: ClientOpt = "",
    gateway: GatewayOpt = None,
) -> None:
    """Submit a transaction and wait for its commit."""

    async def go() -> None:
        async with await GatewayClient.connect(network, client, gateway) as c:
            done = await c.submit_transaction(channel, contract, function, *(args or []))
        code = transaction_pb2.TxValidationCode.Name(done.status.result)
        console.print(
            f"{done.tx_id} {code} block {done.status.block_number} "
            f"result {done.result.payload.decode(errors='replace')!r}"
        )

    asyncio.run(go())


@app.command()
def query(
    network: NetworkDir,
    channel: str,
    contract: str,
    function: str,
    args: Annotated[list[str] | None, typer.Argument()] = None,
    client: ClientOpt = "",
    gateway: GatewayOpt = None,
) -> None:
    """Evaluate a read-only invocation."""

    async def go() -> None:
        async with await GatewayClient.connect(network, client, gateway) as c:
            result = await c.evaluate(channel, contract, function, *(args or []))
        console.print(result.payload.decode(errors="replace"))

    asyncio.run(go())


@app.command()
def events(
    network: NetworkDir,
    channel: str,
    client: ClientOpt = "",
    gateway: GatewayOpt = None,
    start: Annotated[int, typer.Option("--from", help="first block")] = 0,
    count: Annotated[int, typer.Option(help="stop after this many blocks (0 = follow)")] = 0,
) -> None:
    """Follow committed blocks from a number."""

    async def go() -> None:
        async with await GatewayClient.connect(network, client, gateway) as c:
            seen = 0
            async for block in c.events(channel, start):
                for tx in block.transactions:
                    code = transaction_pb2.TxValidationCode.Name(tx.validation_code)
                    console.print(f"block {block.block_number} {tx.tx_id[:16]} {code}")
                seen += 1
                if count and seen >= count:
                    break

    asyncio.run(go())


@app.command()
def demo(
    keep: Annotated[Path | None, typer.Option(help="keep the network in this directory")] = None,
) -> None:
    """The main job: a capital-market network, Figure 8, a bank workload, a report."""
    from dltmw.cli.demo import run_demo

    raise typer.Exit(run_demo(console, keep))


app.command()(bench_command)
app.command()(audit_command)


def main() -> None:
    """Console-script entry point."""
    app()
