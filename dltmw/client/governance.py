"""Channel governance from a client: read the current config, sign and submit config updates
(`dltmw channel update|org add|org remove|cert revoke`, docs/governance.md).

The current config is what every node computes: block 0's config, then each later block that
is a config update alone, checked exactly as a peer checks it at commit
(`core/config_replay.next_view`: `core/txcheck.check_transaction`, which runs
`core/config_update.check_update`). The client reads the blocks from an orderer (Deliver, as
any member may) up to the height the orderer announces, so it trusts no node's word for the
result, only the orderers' signatures.
A config update travels as the serialised `ConfigUpdate` in a file: each admin adds a signature
(`sign_update_file`), then any member submits it through a gateway and waits for its code.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from dltmw.aio.clock import utc_now
from dltmw.client.files import ClientFiles
from dltmw.client.gateway import GatewayClient
from dltmw.core.channel import ChannelView
from dltmw.core.config_replay import next_view
from dltmw.core.config_update import add_signature, update_envelope
from dltmw.core.genesis import read_genesis
from dltmw.rpc.orderer import HEIGHT_METADATA
from dltmw.rpc.tls import secure_channel
from dltmw.v1 import (
    block_pb2,
    common_pb2,
    config_update_pb2,
    orderer_service_pb2,
    orderer_service_pb2_grpc,
)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
RESOLVE_TIMEOUT_S = 10.0
DELIVER_TIMEOUT_S = 60.0


def genesis_of(network_dir: Path, channel_id: str) -> block_pb2.Block:
    """Block 0 of `channel_id` as `dltmw init` wrote it."""
    path = network_dir / "channels" / f"{channel_id}.block"
    return block_pb2.Block.FromString(path.read_bytes())


async def current_config(network_dir: Path, client_id: str, channel_id: str) -> ChannelView:
    """The channel's current config, replayed from an orderer's blocks (see the module doc)."""
    files = ClientFiles.load(network_dir, client_id)
    view = read_genesis(genesis_of(network_dir, channel_id))
    orderer = view.orderer_ids()[0]
    address = await files.addresses.resolve(orderer, RESOLVE_TIMEOUT_S)
    if address is None:
        raise ConnectionError(f"orderer {orderer} has not published an address")
    seek = orderer_service_pb2.SeekInfo(
        channel_id=channel_id, start_block=1, follow=True, requester=files.signer.identity_bytes
    )
    seek.timestamp.FromDatetime(utc_now())
    data = seek.SerializeToString()
    request = orderer_service_pb2.DeliverRequest(seek_info=data, signature=files.signer.sign(data))
    async with secure_channel(address, orderer, files.tls, MAX_MESSAGE_BYTES) as channel:
        call = orderer_service_pb2_grpc.OrdererServiceStub(channel).Deliver(
            request, timeout=DELIVER_TIMEOUT_S
        )
        try:
            metadata = dict(await call.initial_metadata() or ())
            if HEIGHT_METADATA not in metadata:  # a refused call sends none: raise its status
                async for _ in call:
                    break
                raise ConnectionError(f"orderer {orderer} announced no height")
            height = int(str(metadata[HEIGHT_METADATA]))
            if height <= 1:
                return view
            async for response in call:
                view = next_view(view, response.block)
                if response.block.header.number >= height - 1:
                    break
        finally:
            call.cancel()
    return view


def sign_update_file(path: Path, network_dir: Path, admin_id: str) -> int:
    """Add `admin_id`'s signature to the update in `path` (in place); returns the count."""
    update = config_update_pb2.ConfigUpdate.FromString(path.read_bytes())
    add_signature(update, ClientFiles.load(network_dir, admin_id).signer)
    path.write_bytes(update.SerializeToString())
    return len(update.signatures)


async def submit_update(
    network_dir: Path,
    client_id: str,
    channel_id: str,
    update: config_update_pb2.ConfigUpdate,
    gateway: str | None = None,
) -> tuple[str, int, int]:
    """Submit through a gateway and wait: (tx_id, validation code, block number). A refusal at
    admission raises the gateway's AioRpcError (its ErrorInfo names the reason)."""
    files = ClientFiles.load(network_dir, client_id)
    nonce = hashlib.sha256(os.urandom(32)).digest()
    raw = update_envelope(update, channel_id, files.signer, nonce, utc_now())
    client = await GatewayClient.connect(network_dir, client_id, gateway, pipelined=False)
    try:
        tx_id = await client.submit(common_pb2.Envelope.FromString(raw))
        status = await client.commit_status(channel_id, tx_id)
    finally:
        await client.close()
    return tx_id, status.result, status.block_number
