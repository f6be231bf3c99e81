"""`dltmw contract ...`: package a contract directory, show a package, install it on a peer, list
what a peer has installed, approve and commit a definition on a channel (docs/contracts.md).

`package DIR` writes the canonical package (`core/contract_package.py`) and prints its id, the
SHA-256 every node will know it by; the install-time static check runs first, so a package a
peer would refuse is refused here, with every finding as file:line.

`approve` and `commit` submit a `_lifecycle` transaction signed by an organisation's admin
client (`--org`, or `--client`), through its gateway (`client/lifecycle.py`, rules in
`core/lifecycle.py`); both print the validation code the transaction committed with.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from dltmw.cli import params
from dltmw.cli.errors import UserError
from dltmw.cli.params import GatewayOpt, NetworkDir, NodeArg
from dltmw.client.contracts import NodeAdmin
from dltmw.client.lifecycle import committed_definitions, definition_for, submit_definition
from dltmw.contract_sdk.loader import load_package
from dltmw.contract_sdk.package import package_dir
from dltmw.core.contract_package import PackageError, package_id, read_package
from dltmw.core.lifecycle import Definition
from dltmw.core.policy import PolicyError
from dltmw.v1 import transaction_pb2

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
    """Install a package on a peer, vault or notary (signed by an admin of its organisation)."""
    params.check_node(network, node)
    params.check_running(network, node)
    data = file.read_bytes()
    reply = asyncio.run(NodeAdmin(network, node, client).install(data))
    c = reply.contract
    state = "already installed" if reply.already_installed else "installed"
    typer.echo(f"{c.package_id} {state} on {node} ({c.name} {c.version})")


@contract_app.command("list")
def list_installed(
    network: NetworkDir,
    node: NodeArg,
    client: AdminOpt = None,
    channel: Annotated[
        str | None,
        typer.Option("--channel", help="also list the definitions committed on this channel"),
    ] = None,
) -> None:
    """List the packages installed on a peer (and the definitions committed on a channel)."""
    params.check_node(network, node)
    params.check_running(network, node)
    admin = NodeAdmin(network, node, client)
    for c in asyncio.run(admin.installed()):
        typer.echo(f"{c.package_id} {c.name} {c.version}: {', '.join(c.functions)}")
    if channel is None:
        return
    signer = client or admin.files.client_id
    for d in asyncio.run(committed_definitions(network, signer, channel, node)):
        package = d["package_id"] or "built-in"
        typer.echo(
            f"committed {d['name']} {d['version']} sequence {d['sequence']} package {package}"
            f" policy {d['endorsement_policy']}"
        )


ChannelOpt = Annotated[str, typer.Option("--channel", help="channel id", show_default=False)]
NameOpt = Annotated[str, typer.Option("--name", help="contract name", show_default=False)]
VersionOpt = Annotated[str, typer.Option("--version", help="its version", show_default=False)]
SequenceOpt = Annotated[
    int, typer.Option("--sequence", help="1 for a new contract, committed + 1 for an upgrade")
]
PackageIdOpt = Annotated[
    str, typer.Option("--package-id", help="the package id (`dltmw contract package`)")
]
PolicyOpt = Annotated[
    str, typer.Option("--policy", help="endorsement policy (default: the channel's default)")
]
OrgOpt = Annotated[
    str | None, typer.Option("--org", help="sign as this organisation's admin, e.g. Org1")
]
InitOpt = Annotated[
    bool,
    typer.Option("--init-required", help="its `init` must run first, once per sequence"),
]


@dataclass(frozen=True)
class _Signer:
    org: str | None
    client: str | None
    gateway: str | None

    def client_id(self, network: Path) -> str:
        if self.client is None and self.org is None:
            raise UserError("name the organisation with --org (or an admin client with --client)")
        signer = self.client or f"admin.{str(self.org).lower()}"
        params.check_client(network, signer)
        return signer


def _lifecycle(
    function: str, network: Path, channel: str, signer: _Signer, build: Callable[[], Definition]
) -> None:
    client = signer.client_id(network)
    try:
        definition = build()
    except (KeyError, PolicyError) as exc:
        raise UserError(str(exc)) from None
    call = submit_definition(network, client, channel, function, definition, signer.gateway)
    done = asyncio.run(call)
    name = transaction_pb2.TxValidationCode.Name(done.status.result)
    typer.echo(
        f"{function} {definition.name} {definition.version} sequence {definition.sequence}:"
        f" {name.removeprefix('TX_VALIDATION_CODE_')} (tx {done.tx_id},"
        f" block {done.status.block_number})"
    )
    if done.status.result != transaction_pb2.TX_VALIDATION_CODE_VALID:
        raise typer.Exit(1)


@contract_app.command("approve")
def approve(
    network: NetworkDir,
    channel: ChannelOpt,
    name: NameOpt,
    version: VersionOpt,
    sequence: SequenceOpt,
    package_id: PackageIdOpt,
    policy: PolicyOpt = "",
    init_required: InitOpt = False,
    org: OrgOpt = None,
    client: AdminOpt = None,
    gateway: GatewayOpt = None,
) -> None:
    """Approve a contract definition for an organisation (signed by its admin)."""
    _lifecycle(
        "approve",
        network,
        channel,
        _Signer(org, client, gateway),
        lambda: definition_for(
            network, channel, name, version, sequence, package_id, policy, init_required
        ),
    )


@contract_app.command("commit")
def commit(
    network: NetworkDir,
    channel: ChannelOpt,
    name: NameOpt,
    version: VersionOpt,
    sequence: SequenceOpt,
    package_id: PackageIdOpt,
    policy: PolicyOpt = "",
    init_required: InitOpt = False,
    org: OrgOpt = None,
    client: AdminOpt = None,
    gateway: GatewayOpt = None,
) -> None:
    """Commit a definition whose approvals meet the lifecycle policy (signed by an admin)."""
    _lifecycle(
        "commit",
        network,
        channel,
        _Signer(org, client, gateway),
        lambda: definition_for(
            network, channel, name, version, sequence, package_id, policy, init_required
        ),
    )
