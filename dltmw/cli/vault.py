"""`dltmw vault recover NET NODE`: rebuild a vault node's lost vault from its counterparties
(VaultRecoveryService.RecoverVault, runtime/roles/vault/recovery.py; docs/operations.md
"Recovering a lost vault"). Signed by an admin of the node's organisation. Exits non-zero when a
counterparty served a transaction that did not verify (it was not stored) or could not be asked
(run the command again once it is up: recording is idempotent)."""

from __future__ import annotations

import asyncio

import typer

from dltmw.cli import params
from dltmw.cli.contract import AdminOpt
from dltmw.cli.errors import UserError
from dltmw.cli.params import NetworkDir, NodeArg
from dltmw.cli.vault_flow import register
from dltmw.client.contracts import NodeAdmin

vault_app = typer.Typer(no_args_is_help=True, help="A vault node's UTXO vault.")
register(vault_app)  # identity, states, run: cli/vault_flow.py


@vault_app.command("recover")
def recover(network: NetworkDir, node: NodeArg, client: AdminOpt = None) -> None:
    """Rebuild NODE's vault from the transactions its counterparties hold (each verified)."""
    params.check_running(network, node)
    reply = asyncio.run(NodeAdmin(network, node, client).recover_vault())
    typer.echo(f"{node}: asked {', '.join(reply.asked) or 'nobody'}; recorded {reply.recorded}")
    for r in reply.refused:
        typer.echo(f"refused {r.tx_id or '?'} from {r.node_id}: {r.reason}: {r.message}")
    if reply.unreachable:
        typer.echo(f"could not ask: {', '.join(reply.unreachable)}")
    if reply.refused or reply.unreachable:
        raise UserError(
            f"{len(reply.refused)} transactions refused, {len(reply.unreachable)} nodes not asked"
        )
