"""Private bus messages between three organisations' node processes.

Org1, Org2 and Org3 each run a peer (+ gateway and privacy manager) as its own process (the
supervisor); the subscribers attach remotely (`dltmw.connect`, and a profile). Org1 publishes,
on topic `otc`, a public quote, a private message to Org2 only, and a public close:

- Org2's subscriber gets all three, the private one in plaintext (`message.private`);
- Org3's subscriber gets the two public ones only; Org3 sees the private transaction's payload
  hash on the ledger and nothing more (`receive_private` → None) — also when Org3's client
  attaches to Org2's gateway and asks Org2's privacy manager;
- no ledger (block store) of any node, and no file of Org3's node or the orderer, holds the
  plaintext; the ledger holds its hash.

Red when the privacy manager's recipients check is removed (`rpc/privacy.py` `_client`
answering clients of any organisation: Org3, through Org2's gateway, reads the plaintext).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import dltmw
from tests.integration.test_bus import BUS_TOPOLOGY, Network

THREE_ORGS = (
    BUS_TOPOLOGY.replace(
        '[[orgs]]\nid = "OrdererOrg"',
        '[[orgs]]\nid = "Org3"\n[[orgs]]\nid = "OrdererOrg"',
    )
    .replace(
        '[[clients]]\nid = "user1.org1"',
        '[[nodes]]\nid = "peer0.org3"\norg = "Org3"\nroles = ["peer", "gateway"]\n'
        '[[clients]]\nid = "user1.org3"\norg = "Org3"\n[[clients]]\nid = "user1.org1"',
    )
    .replace('members = ["Org1", "Org2"]', 'members = ["Org1", "Org2", "Org3"]')
)
WAIT_S = 60.0


async def _read(client: dltmw.Client, count: int) -> list[dltmw.Message]:
    """The first `count` messages of topic `otc`, as `client` sees them."""
    got: list[dltmw.Message] = []
    async with asyncio.timeout(WAIT_S), dltmw.Bus(client, "trades").subscribe("otc") as sub:
        async for message in sub:
            got.append(message)
            if len(got) == count:
                break
    return got


def _holding(files: list[Path], needle: bytes) -> list[Path]:
    return [p for p in files if p.is_file() and needle in p.read_bytes()]


def test_private_message_reaches_org2_only(network: Network, tmp_path: Path) -> None:
    net, _sup = network(THREE_ORGS, batch_ms=10)
    secret_text = b"block trade " + os.urandom(12).hex().encode()

    async def scenario() -> dltmw.Committed:
        async with dltmw.connect(net) as connected:
            org1 = connected.bus("user1.org1", "trades")
            await org1.create_topic("otc")  # public: every member knows the topic
            await org1.create_private_topic("otc", ["Org2"])
            await org1.publish("otc", b"public quote")
            secret = await org1.publish_private("otc", secret_text, ["Org2"], {"desk": "rates"})
            await org1.publish("otc", b"public close")

            org2 = await _read(connected.client("user1.org2"), 3)
            assert [(m.payload, m.private) for m in org2] == [
                (b"public quote", False),
                (secret_text, True),
                (b"public close", False),
            ]
            assert org2[1].headers == {"desk": "rates"} and org2[1].tx_id == secret.tx_id
            assert org2[0].position < org2[1].position < org2[2].position

            org3 = connected.client("user1.org3")
            assert [m.payload for m in await _read(org3, 2)] == [
                b"public quote",
                b"public close",
            ]
            # What Org3 sees of the private message: its transaction, with the hash only.
            async with asyncio.timeout(WAIT_S):
                async for block in org3.blocks("trades", secret.block_number):
                    seen = [t for t in block.transactions if t.tx_id == secret.tx_id]
                    break
            assert [t.private_payload_hash for t in seen] == [secret.payload]
            assert len(secret.payload) == 32 and seen[0].events == ()
            assert await org3.receive_private("trades", secret.payload) is None

            # Org3 attached to Org2's gateway: Org2's privacy manager does not answer it.
            raw = connected.profile("user1.org3").model_dump(mode="json")
            org2_gateway = connected.profile("user1.org2").model_dump(mode="json")["gateways"]
            raw["gateways"] = org2_gateway
            async with dltmw.Client(dltmw.Profile.from_dict(raw), deadline_s=WAIT_S) as via2:
                assert await via2.receive_private("trades", secret.payload) is None
                assert [m.payload for m in await _read(via2, 2)] == [
                    b"public quote",
                    b"public close",
                ]
                assert via2.gateway_name == "peer0.org2"
            return secret

    secret = asyncio.run(scenario())
    nodes = net / "nodes"
    block_stores = [p for p in nodes.rglob("trades.*.sqlite*") if ".private." not in p.name]
    assert {p.parent.parent.name for p in block_stores} >= {
        "orderer0",
        "peer0.org1",
        "peer0.org2",
        "peer0.org3",
    }
    assert _holding(block_stores, secret_text) == []
    assert _holding(block_stores, secret.payload), "no block store holds the payload hash"
    outsiders = [*(nodes / "peer0.org3").rglob("*"), *(nodes / "orderer0").rglob("*")]
    assert _holding(outsiders, secret_text) == []


QUEUED = THREE_ORGS.replace(
    'members = ["Org1", "Org2", "Org3"]',
    'members = ["Org1", "Org2", "Org3"]\n'
    'private_agreement = "OutOf(2, Org1.peer, Org2.peer, Org3.peer)"',
)


def test_a_recipient_down_at_send_still_gets_the_private_message(
    network: Network, tmp_path: Path
) -> None:
    """Queued delivery (docs/privacy.md): Org3's node is down when Org1 sends a private message
    to Org2 and Org3 (the agreement policy lets it commit with Org1's and Org2's), and the
    sender's node is down when Org3's comes back, so Org3's node has the block before the
    payload. Org3's subscriber must wait for the payload (`private_payload_owed`), not take
    "not held" for "not a recipient": it gets the message in its place once the sender's node
    is back. Red when the SDK ignores `private_payload_owed` (`sdk/bus.py` `_private`) or the
    gateway does not set it (`rpc/events.py` `_owed`): Org3 gets "after" straight after
    "before", and the private message is lost for good to its subscription."""
    net, sup = network(QUEUED, batch_ms=10)

    async def send() -> dltmw.Committed:
        async with dltmw.connect(net) as connected:
            org1 = connected.bus("user1.org1", "trades")
            await org1.create_topic("otc")
            await org1.create_private_topic("otc", ["Org2", "Org3"])
            sup.kill("peer0.org3")
            await org1.publish("otc", b"before")
            secret = await org1.publish_private("otc", b"for org2 and org3", ["Org2", "Org3"])
            await org1.publish("otc", b"after")
            return secret

    async def receive() -> list[dltmw.Message]:
        got: list[dltmw.Message] = []
        async with dltmw.connect(net) as connected:
            org3 = connected.bus("user1.org3", "trades")
            async with asyncio.timeout(WAIT_S), org3.subscribe("otc") as sub:
                async for message in sub:
                    got.append(message)
                    if message.payload == b"before":  # the sender's node comes back now
                        sup.start("peer0.org1")
                    if message.payload == b"after":
                        return got
        raise AssertionError(f"the subscription ended after {got}")

    secret = asyncio.run(send())
    assert sup.stop("peer0.org1") == 0
    sup.start("peer0.org3")
    sup.wait_ready("peer0.org3", WAIT_S)
    got = asyncio.run(receive())
    sup.wait_ready("peer0.org1", WAIT_S)
    assert [(m.payload, m.private) for m in got] == [
        (b"before", False),
        (b"for org2 and org3", True),
        (b"after", False),
    ]
    assert got[1].tx_id == secret.tx_id
