"""Approving and committing contract definitions (`dltmw contract approve|commit|list`).

Each is an ordinary transaction of the channel's `_lifecycle` system contract, submitted through
a gateway by an admin client of a member organisation (by default `clients/admin.<org>` of the
network directory); the rules are in `core/lifecycle.py`. `definition_for` builds the canonical
definition the way every organisation must write it to approve the same one: the policy in its
canonical text, the channel's default endorsement policy when none is given.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dltmw.client.gateway import GatewayClient, Submitted
from dltmw.core.genesis import read_genesis
from dltmw.core.lifecycle import NAMESPACE, Definition, canonical_policy
from dltmw.v1 import block_pb2


def channel_default_policy(network_dir: Path, channel_id: str) -> str:
    """The default endorsement policy in the channel's genesis block of `network_dir`."""
    path = network_dir / "channels" / f"{channel_id}.block"
    if not path.is_file():
        raise KeyError(f"the network has no channel {channel_id!r} ({path} is missing)")
    return read_genesis(
        block_pb2.Block.FromString(path.read_bytes())
    ).config.default_endorsement_policy


def definition_for(
    network_dir: Path,
    channel_id: str,
    name: str,
    version: str,
    sequence: int,
    package_id: str,
    policy: str = "",
    init_required: bool = False,
) -> Definition:
    """The canonical definition (PolicyError if `policy` is not a policy)."""
    text = policy or channel_default_policy(network_dir, channel_id)
    return Definition(name, version, sequence, package_id, canonical_policy(text), init_required)


async def submit_definition(
    network_dir: Path,
    client_id: str,
    channel_id: str,
    function: str,
    definition: Definition,
    gateway: str | None = None,
) -> Submitted:
    """`approve` or `commit` `definition` as `client_id`; waits for the commit status."""
    async with await GatewayClient.connect(network_dir, client_id, gateway) as client:
        return await client.submit_transaction(
            channel_id, NAMESPACE, function, definition.to_bytes()
        )


async def committed_definitions(
    network_dir: Path, client_id: str, channel_id: str, gateway: str | None = None
) -> list[dict[str, Any]]:
    """The channel's committed definitions as the gateway's peer holds them."""
    async with await GatewayClient.connect(network_dir, client_id, gateway) as client:
        result = await client.evaluate(channel_id, NAMESPACE, "definitions")
    listed: list[dict[str, Any]] = json.loads(result.payload)
    return listed
