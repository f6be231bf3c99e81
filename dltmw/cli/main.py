"""`dltmw` — make, run and use a dltmw network.

Every command takes a network directory made by `dltmw init`; `--json` prints what the read
commands (query, events, status, audit) found as JSON. A mistake gets one line and a non-zero
exit status (`--debug` adds the traceback; statuses: `dltmw/cli/errors.py`).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from dltmw.cli import (
    governance,  # noqa: F401 - adds channel update|join, org add|remove, cert revoke
    params,
)
from dltmw.cli.audit import audit as audit_command
from dltmw.cli.bench import bench as bench_command
from dltmw.cli.contract import contract_app
from dltmw.cli.custody import cert_app, channel_app, netmap_app, org_app
from dltmw.cli.errors import EXIT_USAGE, UserError, run
from dltmw.cli.params import (
    ArgsArg,
    ChannelArg,
    ClientOpt,
    ContractArg,
    FunctionArg,
    GatewayOpt,
    JsonOpt,
    NetworkDir,
    NodeArg,
)
from dltmw.cli.private_group import private_app
from dltmw.cli.transfer import transfer as transfer_command
from dltmw.cli.vault import vault_app
from dltmw.client import GatewayClient
from dltmw.net.hsm import MODULE_ENV, HsmError
from dltmw.ops.supervisor import Supervisor
from dltmw.pki.network import HsmPlan, init_network
from dltmw.runtime.logs import configure_console_logging
from dltmw.v1 import gateway_service_pb2, transaction_pb2

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help=__doc__, pretty_exceptions_enable=False
)
console = Console()
CODE = transaction_pb2.TxValidationCode.Name


def _version(show: bool) -> None:
    if show:
        console.print(f"dltmw {package_version('dltmw')} (wire contract dltmw.v1)")
        raise typer.Exit()


@app.callback()
def _options(
    debug: Annotated[
        bool, typer.Option("--debug", help="log everything and show tracebacks of errors")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", help="print the version and exit", callback=_version),
    ] = False,
) -> None:
    """Options of every command."""
    configure_console_logging(debug)


@app.command()
def init(
    topology: Annotated[
        Path, typer.Argument(help="topology TOML, e.g. services/networks/two-org.toml")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="directory to create")],
    synchronous: Annotated[
        str, typer.Option(help="sqlite synchronous mode: OFF, NORMAL, FULL or EXTRA")
    ] = "FULL",
    hsm: Annotated[
        list[str] | None,
        typer.Option(help="node or client whose signing key is made in the PKCS#11 token"),
    ] = None,
    hsm_token: Annotated[
        str, typer.Option(help="label of the PKCS#11 token (PIN from DLTMW_PKCS11_PIN[_FILE])")
    ] = "",
    hsm_module: Annotated[
        str, typer.Option(help="PKCS#11 library (default: DLTMW_PKCS11_MODULE)")
    ] = "",
) -> None:
    """Generate CAs, certificates, node configs and channel config blocks (docs/deploy.md:
    keys encrypted at rest, keys in an HSM)."""
    if not topology.is_file():
        raise UserError(f"no topology file {topology}", EXIT_USAGE)
    plan = None
    if hsm:
        if not hsm_token:
            raise UserError("--hsm needs --hsm-token", EXIT_USAGE)
        module = hsm_module or os.environ.get(MODULE_ENV, "")
        if not module:
            raise UserError(f"--hsm needs --hsm-module or {MODULE_ENV}", EXIT_USAGE)
        plan = HsmPlan(hsm_token, module, frozenset(hsm))
    try:
        topo = init_network(topology, out, synchronous.upper(), hsm=plan)
    except HsmError as exc:
        raise UserError(str(exc), EXIT_USAGE) from exc
    console.print(f"network [bold]{topo.name}[/] written to {out}")


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
    params.check_node(sup.dir, node)


async def _connect(network: Path, client: str, gateway: str | None) -> GatewayClient:
    """A gateway client, after checking that the client exists and its gateway runs."""
    return await params.connect(network, client, gateway)


@app.command()
def invoke(
    network: NetworkDir,
    channel: ChannelArg,
    contract: ContractArg,
    function: FunctionArg,
    client: ClientOpt,
    args: ArgsArg = None,
    gateway: GatewayOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Submit a transaction and wait for its commit."""

    async def go() -> None:
        async with await _connect(network, client, gateway) as c:
            done = await c.submit_transaction(channel, contract, function, *(args or []))
        result = {
            "tx_id": done.tx_id,
            "validation_code": CODE(done.status.result),
            "block_number": done.status.block_number,
            "tx_index": done.status.tx_index,
            "result": done.result.payload.decode(errors="replace"),
        }
        if as_json:
            print(json.dumps(result))
            return
        console.print(
            f"{done.tx_id} {result['validation_code']} block {done.status.block_number} "
            f"result {result['result']!r}"
        )

    asyncio.run(go())


@app.command()
def query(
    network: NetworkDir,
    channel: ChannelArg,
    contract: ContractArg,
    function: FunctionArg,
    client: ClientOpt,
    args: ArgsArg = None,
    gateway: GatewayOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Evaluate a read-only invocation on the gateway's peer."""

    async def go() -> None:
        async with await _connect(network, client, gateway) as c:
            result = await c.evaluate(channel, contract, function, *(args or []))
        payload = result.payload.decode(errors="replace")
        if as_json:
            print(
                json.dumps({"status": result.status, "message": result.message, "payload": payload})
            )
        else:
            console.print(payload, highlight=False)

    asyncio.run(go())


def _block_json(block: gateway_service_pb2.EventsResponse) -> str:
    return json.dumps(
        {
            "block_number": block.block_number,
            "block_hash": block.block_hash.hex(),
            "transactions": [
                {
                    "tx_id": tx.tx_id,
                    "validation_code": CODE(tx.validation_code),
                    "events": [
                        {"contract": e.contract, "name": e.name, "payload": e.payload.hex()}
                        for e in tx.events
                    ],
                }
                for tx in block.transactions
            ],
        }
    )


@app.command()
def events(
    network: NetworkDir,
    channel: ChannelArg,
    client: ClientOpt,
    gateway: GatewayOpt = None,
    start: Annotated[int, typer.Option("--from", min=0, help="first block")] = 0,
    count: Annotated[int, typer.Option(min=0, help="stop after this many blocks (0 = follow)")] = 0,
    as_json: Annotated[
        bool, typer.Option("--json", help="one JSON object per block (JSON lines)")
    ] = False,
) -> None:
    """Follow committed blocks from a number: one line per transaction with its code."""

    async def go() -> None:
        async with await _connect(network, client, gateway) as c:
            seen = 0
            async for block in c.events(channel, start):
                if as_json:
                    print(_block_json(block), flush=True)
                for tx in block.transactions if not as_json else ():
                    code = CODE(tx.validation_code)
                    console.print(f"block {block.block_number} {tx.tx_id[:16]} {code}")
                seen += 1
                if count and seen >= count:
                    break

    asyncio.run(go())


@app.command()
def status(network: NetworkDir, as_json: JsonOpt = False) -> None:
    """Every node: running or stopped, health, height per channel, PBFT-lite orderer view.
    Exit status 1 unless every node runs and is SERVING."""
    from dltmw.cli.status import status as run_status

    run_status(network, as_json)


@app.command()
def failover(
    network: NetworkDir,
    node: NodeArg,
    client: Annotated[
        str | None, typer.Option(help="admin client id (default: admin.<org> of the node)")
    ] = None,
) -> None:
    """Promote the standby of NODE (the active peer or its standby) once the active no longer
    answers; its id then resolves to the standby (docs/operations.md, Standby and failover)."""
    from dltmw.cli.failover import failover as run_failover

    run_failover(network, node, client)


@app.command()
def explorer(
    network: NetworkDir,
    node: Annotated[
        str | None, typer.Option(help="the node to explore (default: the first running peer)")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Print the URL of the explorer page (blocks, transactions, codes) of a running peer."""
    from dltmw.cli.explorer import show

    if node is not None:
        params.check_node(network, node)
    show(Supervisor(network), node, as_json)


@app.command()
def logs(
    network: NetworkDir,
    node: NodeArg,
    lines: Annotated[int, typer.Option("--lines", "-n", min=0, help="lines from the end")] = 50,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new lines")] = False,
    follow_s: Annotated[
        float, typer.Option("--follow-s", min=0, help="stop following after this long (0: never)")
    ] = 0.0,
    stream: Annotated[
        str, typer.Option(help="log (the node's JSON log), err (stderr, keeper) or out (READY)")
    ] = "log",
    raw: Annotated[bool, typer.Option("--raw", help="print JSON lines as they are")] = False,
) -> None:
    """Show the end of a node's log (readable), optionally following it."""
    from dltmw.cli.logs import SUFFIXES, show_log

    params.check_node(network, node)
    if stream not in SUFFIXES:
        raise UserError(f"--stream must be one of {', '.join(SUFFIXES)}", EXIT_USAGE)
    show_log(network / "run" / "logs" / f"{node}.{stream}", lines, follow, follow_s, raw)


@app.command()
def demo(
    keep: Annotated[
        Path | None, typer.Option(help="make the network in this (new) directory and keep it")
    ] = None,
) -> None:
    """The main job: a capital-market network, Figure 8, a bank workload, privacy, UTXO."""
    from dltmw.cli.demo import run_demo

    raise typer.Exit(run_demo(console, keep))


app.command()(bench_command)
app.command()(audit_command)
app.command()(transfer_command)
app.add_typer(contract_app, name="contract")
app.add_typer(org_app, name="org")  # org init (custody); org add|remove (governance)
app.add_typer(channel_app, name="channel")  # channel create; channel update|join
app.add_typer(netmap_app, name="network-map")
app.add_typer(cert_app, name="cert")
app.add_typer(vault_app, name="vault")
app.add_typer(private_app, name="private")  # private group create|add|call  # vault recover


def main() -> None:
    """Console-script entry point: the error boundary of `cli/errors.py` around the app."""
    run(app, sys.argv[1:])


if __name__ == "__main__":  # `python -m dltmw.cli.main ...` runs the command line too
    main()
