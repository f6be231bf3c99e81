"""Arguments shared by `dltmw` commands, each with its help text and its check.

A check turns a user's mistake into a one-line message before anything is connected or started:
a directory that `dltmw init` did not make, a client or node id the network does not have (the
message lists the ones it has), a gateway that is not running.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dltmw.cli.errors import EXIT_USAGE, UserError
from dltmw.client import GatewayClient
from dltmw.client.files import ClientFiles
from dltmw.net.addressbook import AddressBook


def _network_dir(path: Path) -> Path:
    if not path.is_dir():
        raise typer.BadParameter(f"{path} is not a directory")
    if not (path / "topology.toml").is_file() or not (path / "nodes").is_dir():
        raise typer.BadParameter(f"{path} is not a network directory made by `dltmw init`")
    return path


NetworkDir = Annotated[
    Path,
    typer.Argument(
        help="network directory made by `dltmw init`", callback=_network_dir, show_default=False
    ),
]
NodeArg = Annotated[str, typer.Argument(help="node id, e.g. peer0.org1", show_default=False)]
ChannelArg = Annotated[str, typer.Argument(help="channel id, e.g. trades", show_default=False)]
ContractArg = Annotated[str, typer.Argument(help="contract name, e.g. bank", show_default=False)]
FunctionArg = Annotated[
    str, typer.Argument(help="contract function, e.g. balance", show_default=False)
]
ArgsArg = Annotated[
    list[str] | None,
    typer.Argument(help="the function's arguments (UTF-8 text each)", show_default=False),
]
ClientOpt = Annotated[
    str,
    typer.Option("--client", "-c", help="client id of the network, e.g. user1.org1"),
]
GatewayOpt = Annotated[
    str | None, typer.Option("--gateway", "-g", help="gateway node id (default: the client's)")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of text")]


def ids_in(network: Path, kind: str) -> list[str]:
    """Ids of the clients or nodes (`kind`) of a network directory."""
    root = network / kind
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def check_client(network: Path, client: str) -> None:
    """UserError unless `client` is a client of the network."""
    known = ids_in(network, "clients")
    if client not in known:
        raise UserError(
            f"no client {client!r} in {network} (clients: {', '.join(known)})", EXIT_USAGE
        )


def check_node(network: Path, node: str) -> None:
    """UserError unless `node` is a node of the network."""
    known = ids_in(network, "nodes")
    if node not in known:
        raise UserError(f"no node {node!r} in {network} (nodes: {', '.join(known)})", EXIT_USAGE)


def check_running(network: Path, node: str, book: AddressBook | None = None) -> None:
    """UserError unless `node` has an address: an advertised endpoint in `book` (a client's),
    or one it published in the network's address book (it serves)."""
    check_node(network, node)
    if (book or AddressBook(network / "run" / "endpoints")).lookup(node) is None:
        raise UserError(f"node {node} is not running (start it: dltmw up {network})")


async def connect(network: Path, client: str, gateway: str | None) -> GatewayClient:
    """A gateway client, after checking that the client exists and its gateway runs."""
    check_client(network, client)
    files = ClientFiles.load(network, client)
    node = gateway or files.gateway
    if not node:
        raise UserError(f"client {client} has no default gateway: name one with --gateway")
    check_running(network, node, files.addresses)
    return await GatewayClient.connect(network, client, node)
