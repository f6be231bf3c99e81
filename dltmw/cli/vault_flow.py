"""`dltmw vault identity|states|run`: use any UTXO contract, e.g. one installed as a package,
from the command line (VaultService.RunFlow `contract`, runtime/roles/vault/contract_flow.py;
docs/utxo.md "Installed UTXO contracts").

    dltmw vault identity NET brokera                      # hex Identity, for state data
    dltmw vault run NET ops.bank bank bond issue --hash ID --output 'brokera:{"isin": ...}'
    dltmw vault states NET trader.brokera brokera --contract bond
    dltmw vault run NET trader.brokera brokera bond transfer --hash ID --input TX:0 \\
        --output 'bank:{...}' --signer brokerb

An `--output` is `NODE[,NODE...]:DATA`: the vault nodes that hold the new state, then its data
as UTF-8 text in the contract's own format (JSON for the bond). A client runs flows on a vault
node of its own organisation.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from dltmw.cli import params
from dltmw.cli.errors import EXIT_USAGE, UserError
from dltmw.cli.params import NetworkDir, NodeArg
from dltmw.client.utxo import PartyFiles, VaultClient
from dltmw.net.netmap import FILE_NAME as NETWORK_MAP
from dltmw.net.netmap import NetworkMap
from dltmw.v1 import utxo_pb2

ClientArg = Annotated[str, typer.Argument(help="client id, e.g. ops.bank", show_default=False)]


def register(app: typer.Typer) -> None:
    """Add the commands to `dltmw vault`."""
    app.command("identity")(identity)
    app.command("states")(states)
    app.command("run")(run_command)


def _party(network: Path, client: str, node: str) -> PartyFiles:
    params.check_client(network, client)
    params.check_running(network, node)
    return PartyFiles.load(network, client)


def identity(network: NetworkDir, node: NodeArg) -> None:
    """Print NODE's serialised Identity in hex (how state data and --signer name parties)."""
    params.check_node(network, node)
    found = NetworkMap.load(network / NETWORK_MAP).nodes.get(node)
    if found is None:
        raise UserError(f"{node} is not in the network map (not a vault or notary node)")
    typer.echo(found.identity.hex())


def states(
    network: NetworkDir,
    client: ClientArg,
    node: NodeArg,
    contract: Annotated[str, typer.Option("--contract", help="only this contract's states")] = "",
    consumed: Annotated[bool, typer.Option("--consumed", help="also consumed states")] = False,
) -> None:
    """List NODE's vault states: TX_ID:INDEX CONTRACT DATA (and the consuming tx)."""
    party = _party(network, client, node)

    async def query() -> list[str]:
        async with await VaultClient.connect(party, node) as vault:
            found = await vault.query(contract=contract, include_consumed=consumed)
        lines = []
        for s in found:
            out = utxo_pb2.UtxoOutput.FromString(s.output)
            data = out.data.decode("utf-8", "replace")
            spent = f" consumed by {s.consumed_by}" if s.consumed_by else ""
            lines.append(f"{s.ref.tx_id}:{s.ref.index} {out.contract} {data}{spent}")
        return lines

    for line in asyncio.run(query()):
        typer.echo(line)


def _ref(text: str) -> tuple[str, int]:
    tx_id, _, index = text.partition(":")
    if not index.isdigit():
        raise UserError(f"--input {text!r}: expected TX_ID:INDEX", EXIT_USAGE)
    return tx_id, int(index)


def run_command(
    network: NetworkDir,
    client: ClientArg,
    node: NodeArg,
    contract: Annotated[str, typer.Argument(help="contract name, e.g. bond", show_default=False)],
    command: Annotated[str, typer.Argument(help="command, e.g. issue", show_default=False)],
    package: Annotated[str, typer.Option("--hash", help="the contract's package id")],
    inputs: Annotated[
        list[str] | None, typer.Option("--input", help="own state to consume, TX_ID:INDEX")
    ] = None,
    outputs: Annotated[
        list[str] | None, typer.Option("--output", help="new state, NODE[,NODE...]:DATA")
    ] = None,
    signers: Annotated[
        list[str] | None, typer.Option("--signer", help="another vault node that must sign")
    ] = None,
    data: Annotated[str, typer.Option("--data", help="command data (UTF-8 text)")] = "",
) -> None:
    """Run one command of a UTXO contract on NODE; print the notarised tx_id."""
    party = _party(network, client, node)

    def identity_of(node_id: str) -> bytes:
        found = party.netmap.nodes.get(node_id)
        if found is None:
            raise UserError(f"{node_id!r} is not a node of the network map", EXIT_USAGE)
        return found.identity

    new: list[tuple[bytes, list[bytes]]] = []
    for text in outputs or []:
        holders, sep, body = text.partition(":")
        if not sep or not holders:
            raise UserError(f"--output {text!r}: expected NODE[,NODE...]:DATA", EXIT_USAGE)
        new.append((body.encode(), [identity_of(n) for n in holders.split(",")]))

    async def flow() -> str:
        async with await VaultClient.connect(party, node) as vault:
            reply = await vault.contract_command(
                contract,
                package,
                command,
                new,
                inputs=[_ref(i) for i in inputs or []],
                signers=[identity_of(s) for s in signers or []],
                command_data=data.encode(),
            )
        return reply.tx_id

    typer.echo(asyncio.run(flow()))
