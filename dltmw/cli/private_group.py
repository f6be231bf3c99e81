"""`dltmw private group create|add|remove|call`: privacy groups (`client/groups.py`).

    dltmw private group create NET trades desk Org1 Org2 -c user1.org1
    dltmw private group add NET trades desk Org3 -c user1.org1
    dltmw private group remove NET trades desk Org2 -c user1.org1
    dltmw private group call NET trades desk kv put k v -c user1.org1

Each submits one private transaction through the client's gateway node and prints its public
outcome (tx_id, validation code, block). A refusal by the node (e.g. PRIVACY_GROUP_NOT_MEMBER)
is printed with its reason, nothing sent.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated

import typer

from dltmw.cli import params
from dltmw.cli.params import (
    ArgsArg,
    ChannelArg,
    ClientOpt,
    ContractArg,
    FunctionArg,
    GatewayOpt,
    JsonOpt,
    NetworkDir,
)
from dltmw.cli.private_deliveries import abandon, pending
from dltmw.client.groups import add_to_group, create_group, group_call, remove_from_group
from dltmw.client.privacy import PrivacyClient, PrivateSubmitted
from dltmw.v1 import transaction_pb2

private_app = typer.Typer(
    help="Private transactions: privacy groups, the sender's queued deliveries.",
    no_args_is_help=True,
)
group_app = typer.Typer(help="Privacy groups of a channel.", no_args_is_help=True)
private_app.add_typer(group_app, name="group")
private_app.command("pending")(pending)
private_app.command("abandon")(abandon)
GroupArg = Annotated[str, typer.Argument(help="privacy group id, e.g. desk", show_default=False)]
OrgsArg = Annotated[list[str], typer.Argument(help="member organisations", show_default=False)]
CODE = transaction_pb2.TxValidationCode.Name


def _submit(
    network: Path,
    client: str,
    gateway: str | None,
    as_json: bool,
    action: Callable[[PrivacyClient], Awaitable[PrivateSubmitted]],
) -> None:
    async def go() -> PrivateSubmitted:
        async with PrivacyClient(await params.connect(network, client, gateway)) as pc:
            return await action(pc)

    done = asyncio.run(go())
    result = {
        "tx_id": done.tx_id,
        "payload_hash": done.payload_hash.hex(),
        "validation_code": CODE(done.status.result),
        "block_number": done.status.block_number,
    }
    if as_json:
        print(json.dumps(result))
    else:
        print(f"{done.tx_id} {result['validation_code']} block {done.status.block_number}")


def _change_command(
    change: Callable[[PrivacyClient, str, str, list[str]], Awaitable[PrivateSubmitted]],
    doc: str,
) -> Callable[..., None]:
    """The command of one group change (create, add or remove): the same arguments, another
    change."""

    def command(
        network: NetworkDir,
        channel: ChannelArg,
        group: GroupArg,
        orgs: OrgsArg,
        client: ClientOpt,
        gateway: GatewayOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        _submit(network, client, gateway, as_json, lambda pc: change(pc, channel, group, orgs))

    command.__doc__ = doc
    return command


group_app.command("create")(
    _change_command(
        create_group, "Create a privacy group of member organisations (the client's among them)."
    )
)
group_app.command("add")(
    _change_command(
        add_to_group,
        "Add organisations to a privacy group (the client's organisation must be a member).",
    )
)
group_app.command("remove")(
    _change_command(
        remove_from_group,
        "Remove member organisations from a privacy group (the client's organisation must be"
        " a member; at least one member remains).",
    )
)


@group_app.command("call")
def call(
    network: NetworkDir,
    channel: ChannelArg,
    group: GroupArg,
    contract: ContractArg,
    function: FunctionArg,
    client: ClientOpt,
    args: ArgsArg = None,
    gateway: GatewayOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Call a contract in the group's own private state."""
    _submit(
        network,
        client,
        gateway,
        as_json,
        lambda pc: group_call(pc, channel, group, contract, function, *(args or [])),
    )
