"""A fetch of a batch already in the chain is answered from the replica's record store.

A running replica with dissemination on keeps no copy of a batch in the chain in memory (its
signed message used to stay for `decided_retain` = 256 slots, ~15-20 MB per replica under load:
docs/ordering.md "Storage bounds"); a replica catching up still fetches such batches, and the
answer is read back from the record store (`BatchFromStore`, `RecordStore.batch`).

Four real orderer processes: after some load, orderer.d is stopped and this test listens on its
address as orderer.d (its TLS key pair), asks orderer.b for a batch of the chain with a
`BatchFetch` signed by orderer.d's identity, and waits for orderer.b to send the origin's signed
batch to "orderer.d" over its replica link: byte for byte the row of orderer.b's store.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import grpc
import pytest

from dltmw.client import GatewayClient
from dltmw.core.identity import SigningIdentity
from dltmw.core.pbft.assembly import AssembledRecord
from dltmw.ledger.pbft_store import decode
from dltmw.rpc.tls import TlsMaterial
from dltmw.v1 import replica_pb2, replica_pb2_grpc, transaction_pb2

from .test_pbft_dissemination import ON
from .test_pbft_ordering import _replica_stub, _signed

pytestmark = pytest.mark.integration
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
TXS = 60
ORDERER_D = 3  # its index in the channel's orderer list (a, b, c, d)


class Recorder(replica_pb2_grpc.ReplicaServiceServicer):
    """Stands in for orderer.d's ReplicaService: keeps every message it is sent."""

    def __init__(self) -> None:
        self.messages: list[replica_pb2.SignedReplicaMessage] = []

    async def Exchange(
        self, request: replica_pb2.ExchangeRequest, context: object
    ) -> replica_pb2.ExchangeResponse:
        self.messages.extend(request.messages)
        return replica_pb2.ExchangeResponse(accepted=len(request.messages))


def _chain_batch(net: Path, node: str) -> bytes:
    """The stored row of a batch that an assembled slot of `node` took (a batch in the chain)."""
    db = sqlite3.connect(f"file:{net}/nodes/{node}/data/trades.pbft.sqlite?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT kind, seq, data FROM records ORDER BY id").fetchall()
    finally:
        db.close()
    taken = set()
    for kind, seq, data in rows:
        record = decode(kind, seq, bytes(data))
        if isinstance(record, AssembledRecord):
            taken.update(record.batches)
    for kind, _seq, data in rows:
        if kind != "batch":
            continue
        envelope = replica_pb2.SignedReplicaMessage.FromString(data)
        batch = replica_pb2.ReplicaMessage.FromString(envelope.payload).batch
        if (envelope.replica, batch.batch_sequence, batch.digest) in taken:
            return bytes(data)
    raise AssertionError(f"no batch of the chain in {node}'s record store")


async def _load(net: Path) -> None:
    client = await GatewayClient.connect(net, "user1.org1")
    sem = asyncio.Semaphore(16)

    async def put(i: int) -> bool:
        async with sem:
            done = await client.submit_transaction("trades", "kv", "put", f"k{i}", f"v{i}")
            return bool(done.status.result == VALID)

    try:
        results = await asyncio.wait_for(asyncio.gather(*(put(i) for i in range(TXS))), 120)
    finally:
        await client.close()
    assert all(results)


async def test_a_fetch_of_a_batch_in_the_chain_is_answered_from_the_record_store(
    network,
) -> None:
    net, sup = network(ON)
    await _load(net)
    row = _chain_batch(net, "orderer.b")
    stored = replica_pb2.SignedReplicaMessage.FromString(row)
    batch = replica_pb2.ReplicaMessage.FromString(stored.payload).batch

    home = net / "nodes" / "orderer.d"
    endpoint = net / "run" / "endpoints" / "orderer.d"
    address = endpoint.read_text()
    assert sup.stop("orderer.d") == 0
    endpoint.write_text(address)  # the recorder is orderer.d now (a stop removes the file)
    recorder = Recorder()
    server = grpc.aio.server()
    replica_pb2_grpc.add_ReplicaServiceServicer_to_server(recorder, server)
    tls = TlsMaterial.load(home / "tls.pem", home / "tls.key", net / "tls-roots.pem")
    assert server.add_secure_port(address.strip(), tls.server_credentials()) > 0
    await server.start()
    channel, stub = _replica_stub(net, "orderer.b", "orderer.d")
    try:
        signer = SigningIdentity.from_pem(
            "OrdererD", (home / "identity.pem").read_bytes(), (home / "identity.key").read_bytes()
        )
        fetch = replica_pb2.ReplicaMessage(
            batch_fetch=replica_pb2.BatchFetch(
                origin=stored.replica, batch_sequence=batch.batch_sequence, digest=batch.digest
            )
        )
        request = replica_pb2.ExchangeRequest(
            channel_id="trades", messages=[_signed(signer, ORDERER_D, fetch)]
        )
        # Asked again every 2 s, as a fetching replica retries: a replica link drops a batch
        # whose call fails (the first call to the new listener may meet the old connection),
        # and PBFT-lite leaves recovery to the asker's retransmission.
        deadline = time.monotonic() + 30
        asked_at = 0.0
        while time.monotonic() < deadline:
            if any(m.SerializeToString() == row for m in recorder.messages):
                break
            if time.monotonic() - asked_at > 2:
                reply = await stub.Exchange(request, timeout=30)  # type: ignore[attr-defined]
                assert reply.accepted == 1
                asked_at = time.monotonic()
            await asyncio.sleep(0.1)
        else:
            kinds = {
                replica_pb2.ReplicaMessage.FromString(m.payload).WhichOneof("body")
                for m in recorder.messages
            }
            pytest.fail(f"orderer.b never sent the fetched batch (it sent {sorted(kinds)})")
    finally:
        await channel.close()
        await server.stop(None)
