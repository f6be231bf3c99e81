"""`dltmw private pending|abandon`: the sender's queued deliveries (docs/privacy.md "Queued
delivery").

    dltmw private pending NET trades -c user1.org1
    dltmw private abandon NET trades <payload hash hex> -c user1.org1

`pending` lists the deliveries of payloads the client's gateway node sent that no recipient
acknowledged yet, one line each: payload hash, recipient node, state (PENDING: still pushed;
EXPIRED, RECIPIENT_REMOVED, ABANDONED: given up, no longer pushed) and when it was queued.
`abandon` makes the node stop pushing a payload to the recipients still owed it: for a pending
private transaction that nobody will resume (`PrivacyClient.resume_private` resumes one).
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC
from typing import Annotated

import typer

from dltmw.cli import params
from dltmw.cli.params import ChannelArg, ClientOpt, GatewayOpt, JsonOpt, NetworkDir
from dltmw.client.privacy import PrivacyClient
from dltmw.v1 import privacy_manager_service_pb2

STATE = privacy_manager_service_pb2.DeliveryState.Name
HashArg = Annotated[str, typer.Argument(help="payload hash, hex", show_default=False)]


def pending(
    network: NetworkDir,
    channel: ChannelArg,
    client: ClientOpt,
    gateway: GatewayOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the node's private deliveries not acknowledged yet (pending or given up)."""

    async def go() -> list[privacy_manager_service_pb2.PendingDelivery]:
        async with PrivacyClient(await params.connect(network, client, gateway)) as pc:
            return await pc.pending_deliveries(channel)

    rows = [
        {
            "payload_hash": d.payload_hash.hex(),
            "node_id": d.node_id,
            "state": STATE(d.state).removeprefix("DELIVERY_STATE_"),
            "queued_at": d.queued_at.ToDatetime(UTC).isoformat() if d.HasField("queued_at") else "",
        }
        for d in asyncio.run(go())
    ]
    if as_json:
        print(json.dumps(rows))
        return
    for row in rows:
        print(f"{row['payload_hash']} {row['node_id']} {row['state']} {row['queued_at']}")
    if not rows:
        print("nothing pending")


def abandon(
    network: NetworkDir,
    channel: ChannelArg,
    payload_hash: HashArg,
    client: ClientOpt,
    gateway: GatewayOpt = None,
) -> None:
    """Stop pushing a payload the node sent to the recipients still owed it."""
    try:
        digest = bytes.fromhex(payload_hash)
    except ValueError:
        raise typer.BadParameter("not hex", param_hint="PAYLOAD_HASH") from None

    async def go() -> int:
        async with PrivacyClient(await params.connect(network, client, gateway)) as pc:
            return await pc.abandon_delivery(channel, digest)

    print(f"{asyncio.run(go())} delivery(ies) abandoned")
