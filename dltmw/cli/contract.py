"""`dltmw contract ...`: package a contract directory, show a package, install it on a peer, list
what a peer has installed (approve and commit come with the lifecycle; see docs/contracts.md).

`package DIR` writes the canonical package (`core/contract_package.py`) and prints its id, the
SHA-256 every node will know it by; the install-time static check runs first, so a package a
peer would refuse is refused here, with every finding as file:line.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from dltmw.cli import params
from dltmw.cli.errors import UserError
from dltmw.cli.params import NetworkDir, NodeArg
from dltmw.client.contracts import NodeAdmin
from dltmw.contract_sdk.loader import load_package
from dltmw.contract_sdk.package import package_dir
from dltmw.core.contract_package import PackageError, package_id, read_package

contract_app = typer.Typer(
    no_args_is_help=True, help="Contract packages: package a contract directory, show a package."
)


@contract_app.command("package")
def package(
    directory: Annotated[
        Path, typer.Argument(help="the contract directory (contract.json and *.py modules)")
    ],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="package file (default: NAME-VERSION.zip)")
    ] = None,
) -> None:
    """Package a contract directory into one content-addressed file; print its id."""
    if not directory.is_dir():
        raise UserError(f"{directory} is not a directory")
    try:
        data = package_dir(directory)
        loaded = load_package(data)  # the same loading a peer does: entry class, annotations
    except PackageError as exc:
        raise UserError(f"{directory}: refused ({exc.reason}): {exc.message}") from None
    manifest = loaded.manifest
    target = out or Path(f"{manifest.name}-{manifest.version}.zip")
    target.write_bytes(data)
    functions = ", ".join(sorted(loaded.functions))
    typer.echo(
        f"{package_id(data)} {target} ({len(data)} bytes; {manifest.name} {manifest.version}: "
        f"{functions})"
    )


@contract_app.command("show")
def show(
    file: Annotated[Path, typer.Argument(help="a package file made by `dltmw contract package`")],
) -> None:
    """Check a package file as a peer would and print its id, manifest and functions."""
    try:
        data = file.read_bytes()
        package = read_package(data)
        loaded = load_package(data)
    except PackageError as exc:
        raise UserError(f"{file}: refused ({exc.reason}): {exc.message}") from None
    typer.echo(f"id        {package.package_id}")
    typer.echo(f"contract  {package.manifest.name} {package.manifest.version}")
    typer.echo(f"entry     {package.manifest.entry}")
    typer.echo(f"modules   {', '.join(sorted(package.files))}")
    typer.echo(f"functions {', '.join(f'{n} ({k})' for n, k in sorted(loaded.functions.items()))}")


AdminOpt = Annotated[
    str | None,
    typer.Option("--client", "-c", help="admin client to sign as (default: the node's org admin)"),
]


@contract_app.command("install")
def install(
    network: NetworkDir,
    node: NodeArg,
    file: Annotated[Path, typer.Argument(help="a package file made by `dltmw contract package`")],
    client: AdminOpt = None,
) -> None:
    """Install a package on a peer (signed by an admin of the peer's organisation)."""
    params.check_node(network, node)
    params.check_running(network, node)
    data = file.read_bytes()
    reply = asyncio.run(NodeAdmin(network, node, client).install(data))
    c = reply.contract
    state = "already installed" if reply.already_installed else "installed"
    typer.echo(f"{c.package_id} {state} on {node} ({c.name} {c.version})")


@contract_app.command("list")
def list_installed(network: NetworkDir, node: NodeArg, client: AdminOpt = None) -> None:
    """List the packages installed on a peer."""
    params.check_node(network, node)
    params.check_running(network, node)
    for c in asyncio.run(NodeAdmin(network, node, client).installed()):
        typer.echo(f"{c.package_id} {c.name} {c.version}: {', '.join(c.functions)}")
