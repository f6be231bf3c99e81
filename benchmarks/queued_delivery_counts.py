"""Counts of queued private delivery (branch priv57), runnable against an older tree too: no
wall clock, the redelivery task on a virtual clock (`redelivery.loop_now` replaced) with a real
sqlite private store and a pushing channel that fails (the I/O boundary).

* one virtual hour of the redelivery task with three owed nodes: "down" (a member, down the
  whole hour), "gone" (no longer in the channel config), "purged" (its row purged after the
  first push): push attempts per node and outbox passes (each a store read);
* store calls awaited inside one AgreeBatch ask whose k items answer "does not hold" (a real
  grpc.aio server on 127.0.0.1 answers), then the calls the redelivery's next pass makes;
* latency from a recipient's return to its push, 1,000 draws of the moment it returns within
  a backoff at the ceiling (seeded): the end of the backoff before, `heard_from` after.

Run: `PYTHONPATH=<tree> .venv/bin/python benchmarks/queued_delivery_counts.py` (prints JSON);
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc

from dltmw.aio.outbox_retry import RetrySchedule
from dltmw.core.errors import TransientError
from dltmw.ledger.private_store import NewPayload, PrivateStore
from dltmw.runtime.roles.privacy import redelivery as rd
from dltmw.runtime.roles.privacy.agreement import Agreements
from dltmw.runtime.roles.privacy.private_channel import PrivateChannel
from dltmw.v1 import config_pb2, private_payload_pb2
from dltmw.v1 import errors_pb2 as R
from dltmw.v1 import privacy_manager_service_pb2_grpc as svc
from dltmw.v1 import private_agreement_pb2 as A

ME, NODE_KEY = b"k" * 32, b"n" * 32
HOUR_S = 3600.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class DownChannel:
    """The redelivery's channel: every push fails; "gone" is not a member any more."""

    def __init__(self, store: PrivateStore) -> None:
        self.store, self.channel_id = store, "c"
        self.pushes: dict[str, int] = {}
        self.delivery_expiry_s = 0.0

    def members(self) -> frozenset[str]:
        return frozenset({"down", "purged"})

    def still_recipient(self, raw: bytes, node: str) -> bool:
        return True

    async def left_group(self, node: str, items: Any) -> list[bytes]:
        return []  # no privacy group here

    async def push_payloads(self, node: str, items: Any) -> int:
        self.pushes[node] = self.pushes.get(node, 0) + 1
        raise TransientError(R.ERROR_REASON_PEER_UNAVAILABLE, f"{node} down")


def _payload(tag: bytes) -> NewPayload:
    data = private_payload_pb2.EncryptedPayload(ciphertext=tag).SerializeToString()
    return NewPayload(tag, data, ())


async def one_hour(tmp: Path) -> dict[str, Any]:
    store = await PrivateStore.open(tmp / "hour.sqlite")
    h1, h2, h3 = (bytes([i]) * 32 for i in (1, 2, 3))
    owed = [(h1, "gone"), (h2, "purged"), (h3, "down")]
    await store.store_payloads([_payload(h) for h in (h1, h2, h3)], owed)
    clock = Clock()
    rd.loop_now = clock  # type: ignore[assignment]  # a script: the module is ours alone
    channel = DownChannel(store)
    task = rd.Redelivery(channel)  # type: ignore[arg-type]
    passes = 0
    while clock.now < 1000.0 + HOUR_S:
        wait = await task._pass()
        passes += 1
        if passes == 2:  # after the first push attempts: "purged"'s row goes
            await store.transaction(lambda txn: txn.remove_payloads([h2], "tx", 3))
        clock.now += wait
    await store.close()
    return {"push_attempts_per_hour_by_node": channel.pushes, "outbox_passes_per_hour": passes}


class NotHolding(svc.PrivacyManagerServiceServicer):
    def __init__(self, k: int) -> None:
        self.k = k

    async def AgreeBatch(self, request: Any, context: Any) -> A.AgreeBatchResponse:
        words = "this node does not hold that payload"
        reason = getattr(R, "ERROR_REASON_PAYLOAD_NOT_HELD", R.ERROR_REASON_NOT_AUTHORIZED)
        return A.AgreeBatchResponse(results=[A.AgreeResult(reason=reason, message=words)] * self.k)


class CountingStore:
    """Holds every payload asked (sent by this node to "n"), counts the calls."""

    def __init__(self) -> None:
        self.calls = 0
        sent = private_payload_pb2.EncryptedPayload(sender_public_key=ME)
        sent.recipient_boxes.add(recipient_public_key=ME)
        sent.recipient_boxes.add(recipient_public_key=NODE_KEY)
        self.sent = sent.SerializeToString()

    async def payload(self, digest: bytes) -> bytes:
        self.calls += 1
        return self.sent

    async def held(self, hashes: Any) -> dict[bytes, bytes]:
        self.calls += 1
        return {h: self.sent for h in hashes}

    async def store_payloads(self, *args: Any) -> int:
        self.calls += 1
        return 0


async def not_held_ask(k: int) -> tuple[int, int]:
    """(store calls awaited inside the ask, store calls of the next pass after it)."""
    server = grpc.aio.server()
    svc.add_PrivacyManagerServiceServicer_to_server(NotHolding(k), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    link = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    store = CountingStore()
    channel = PrivateChannel.__new__(PrivateChannel)
    config = config_pb2.ChannelConfig(private_agreement=1)  # type: ignore[arg-type]
    config.peers.add(node_id="n", privacy_public_key=NODE_KEY)
    channel.peer = SimpleNamespace(view=SimpleNamespace(config=config, channel_id="c"))  # type: ignore[assignment]
    channel.key = SimpleNamespace(public_key=ME)  # type: ignore[assignment]
    channel.store = store  # type: ignore[assignment]
    channel.redelivery = rd.Redelivery(channel) if hasattr(rd.Redelivery, "not_held") else None

    async def channel_to(_node: str) -> grpc.aio.Channel:
        return link

    signer = SimpleNamespace(identity_bytes=b"me", sign=lambda data: b"s")
    agreements = Agreements(SimpleNamespace(signer=signer, channel_to=channel_to), None)  # type: ignore[arg-type]
    agreements._runners["c"] = (channel, None, None)  # type: ignore[assignment]
    queries = [A.AgreeQuery(payload_hash=i.to_bytes(2, "big") * 16, tx_id="t") for i in range(k)]
    try:
        await agreements._ask_batch("c", "n", queries)
        inside = store.calls
        if channel.redelivery is not None:
            await channel.redelivery._owe_claimed()
    finally:
        await link.close(None)
        await server.stop(None)
    return inside, store.calls - inside


def return_latency() -> dict[str, float]:
    """Seconds from a recipient's return to its push (see the module docstring)."""
    draw = random.Random(7)
    before, after = [], []
    for _ in range(1000):
        schedule: RetrySchedule[str] = RetrySchedule(
            first_delay_s=1.0,
            backoff_min_s=rd.BACKOFF_MIN_S,
            backoff_max_s=rd.BACKOFF_MAX_S,
            tracked_max=10,
        )
        schedule.due("n", 0.0)
        delay = schedule.failed("n", 6, 0.0)  # at the ceiling
        back = draw.uniform(0.0, delay)
        before.append(delay - back)
        if hasattr(schedule, "hurry"):
            schedule.hurry("n", back, rd.BACKOFF_MIN_S)
            after.append(schedule._next["n"][0] - back)
    out = {"median_s": statistics.median(before), "max_s": max(before)}
    if after:
        out = {"median_s": statistics.median(after), "max_s": max(after)}
    return {k: round(v, 2) for k, v in out.items()}


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out: dict[str, Any] = await one_hour(Path(tmp))
    for k in (1, 16, 256):
        out[f"not_held_k{k}_store_calls_inside_ask_then_pass"] = await not_held_ask(k)
    out["return_to_push"] = return_latency()
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
