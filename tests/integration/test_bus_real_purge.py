"""A purged private bus message on real node processes: told apart from one not delivered yet.

Org1 publishes on topic `otc` a public "before", a private message to Org2, and a public
"after", on a channel whose private transactions carry agreements (so Org2's node is told the
private payload is owed to it, `private_payload_owed`). Both organisations then purge the private
payload (docs/privacy.md "Purge"). A subscriber of Org2 from block 0 — a subscription resuming
from a checkpoint before the purge — gets "before", the private message as `purged=True` (its tx
id and position, no topic, payload or headers), then "after", promptly: it does not wait for a
payload that will never come. `Client.receive_private` raises `PayloadPurged` naming the purge.

Red when the privacy manager's `Receive` does not tell a purged payload from one not held
(`runtime/roles/privacy/private_channel.py` `receive` without the purge lookup): the owed
payload is waited for until the client's deadline (`DEADLINE_S`), so the read times out at
`READ_S`, far below it; and red when the SDK does not map `PayloadPurged` to a purged message
(`sdk/bus.py` `_private`): the subscription raises instead.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import dltmw
from dltmw.client.purge import approve, purge_body, submit_purge
from dltmw.runtime.roles.privacy.hybrid import load_privacy_key
from dltmw.v1 import transaction_pb2
from tests.integration.test_bus import BUS_TOPOLOGY, Network

AGREED = BUS_TOPOLOGY.replace(
    'members = ["Org1", "Org2"]',
    'members = ["Org1", "Org2"]\nprivate_agreement = "AND(Org1.peer, Org2.peer)"',
)
DEADLINE_S = 120.0  # the subscriber's client deadline: how long an owed payload is waited for
READ_S = 40.0  # the whole read must end well within it
WAIT_S = 60.0


def _privacy_key(net: Path, node: str) -> bytes:
    return load_privacy_key((net / "nodes" / node / "privacy.key").read_bytes()).public_key


async def _readable(client: dltmw.Client, payload_hash: bytes) -> bool:
    try:
        return await client.receive_private("trades", payload_hash) is not None
    except dltmw.PayloadPurged:
        return False


def test_a_purged_private_message_is_delivered_as_purged_not_waited_for(
    network: Network,
) -> None:
    net, _sup = network(AGREED, batch_ms=10)
    secret_text = b"purge me"

    async def scenario() -> tuple[dltmw.Committed, list[dltmw.Message]]:
        async with dltmw.connect(net) as connected:
            org1 = connected.bus("user1.org1", "trades")
            await org1.create_topic("otc")
            await org1.create_private_topic("otc", ["Org2"])
            await org1.publish("otc", b"before")
            secret = await org1.publish_private("otc", secret_text, ["Org2"], {"desk": "rates"})
            await org1.publish("otc", b"after")
            org2 = connected.client("user1.org2", deadline_s=DEADLINE_S)
            assert await org2.receive_private("trades", secret.payload) is not None

            # every recipient's organisation approves; Org1 submits the purge
            pc1 = await connected.client("user1.org1").private()
            pc2 = await org2.private()
            nonce, tx_id = pc1.new_nonce()
            keys = [_privacy_key(net, n) for n in ("peer0.org1", "peer0.org2")]
            body = purge_body("trades", tx_id, [secret.payload], [], keys)
            approvals = [approve(pc.client.signer, body) for pc in (pc1, pc2)]
            status = await submit_purge(pc1, "trades", body, approvals, nonce)
            assert status.result == transaction_pb2.TX_VALIDATION_CODE_VALID

            # Org2's node executes the purge in block order, after its commit: wait until the
            # payload is no longer readable there (how it is refused is checked below)
            async with asyncio.timeout(WAIT_S):
                while await _readable(org2, secret.payload):
                    await asyncio.sleep(0.1)

            got: list[dltmw.Message] = []
            bus2 = dltmw.Bus(org2, "trades")
            async with asyncio.timeout(READ_S), bus2.subscribe("otc") as sub:
                async for message in sub:
                    got.append(message)
                    if message.payload == b"after":
                        break
            with pytest.raises(dltmw.PayloadPurged) as purged:
                await org2.receive_private("trades", secret.payload)
            assert purged.value.reason == "PAYLOAD_PURGED"
            assert purged.value.purge_tx_id == tx_id
            assert purged.value.block_number == status.block_number
            return secret, got

    secret, got = asyncio.run(scenario())
    assert [(m.payload, m.private, m.purged) for m in got] == [
        (b"before", False, False),
        (b"", True, True),
        (b"after", False, False),
    ]
    purged = got[1]
    assert purged.tx_id == secret.tx_id and purged.topic == "" and purged.headers == {}
    assert purged.position.block == secret.block_number
    assert got[0].position < purged.position < got[2].position
