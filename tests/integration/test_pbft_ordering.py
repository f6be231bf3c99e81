"""PBFT-lite ordering on four real orderer processes (services/networks/bft-four.toml).

- kill -9 the primary (orderer.a, replica 0 of view 0) under a load of a few hundred
  transactions: the other replicas change view (their metrics say so), commits resume, no
  committed transaction is lost or committed twice, every block carries 2f+1 = 3 orderer
  signatures, the surviving replicas hold the same chain, and the restarted primary catches up
  to it;
- bad input to ReplicaService.Exchange is refused with a specific status and changes nothing;
- an envelope with an unrepresentable timestamp forwarded by one orderer is never ordered (the
  regression test of issue 10, finding 1: it used to halt every peer);
- seven replicas (f = 2) order too, every block carrying 5 signatures;
- a backup down for longer than its peers retain decided batches catches up from their blocks;
  the channel takes identity references (what `dltmw init` sets), so every block names its 2f+1
  signers by their ~40-byte references, which the restarted replica's catch-up and both peers
  accept; on a channel without the flag (the seven-replica run) blocks name them in full;
- a config update (a revocation) is cut alone and applied at its block by every replica and peer,
  including a replica down when it was ordered (issue 12);
- the replica set changes (issue 12 item 3): orderer.e, running as a follower, is added (4 -> 5),
  catches up and signs; orderer.b is removed (5 -> 4) and killed; the channel goes on; bad
  replica changes are refused with their reason and change nothing.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from dltmw.client import GatewayClient
from dltmw.client.files import ClientFiles
from dltmw.client.governance import current_config, submit_update
from dltmw.core import config_edit
from dltmw.core.block import block_hash
from dltmw.core.config_update import CONFIG_KEY, CONFIG_NAMESPACE, add_signature, update_content
from dltmw.core.hashing import compute_tx_id
from dltmw.core.identity import SigningIdentity, identity_bytes, reference_bytes
from dltmw.rpc.status import reason_of
from dltmw.rpc.tls import TlsMaterial, secure_channel
from dltmw.runtime.metrics import reason_name
from dltmw.v1 import (
    block_pb2,
    common_pb2,
    config_pb2,
    config_update_pb2,
    replica_pb2,
    replica_pb2_grpc,
    transaction_pb2,
)
from integration.wire import logged_errors

from .cli import dltmw
from .operations_http import scrape, value

pytestmark = pytest.mark.integration
BFT_FOUR = (Path(__file__).parents[2] / "services/networks/bft-four.toml").read_text()
# The envelope path (pre-prepares carry the envelopes): channels made before `dltmw init` turned
# `pbft_dissemination` on, which keep it for good. These tests and those importing TOPOLOGY
# (byzantine, censoring and withholding orderers, collector, rekey, readiness, crash cycles)
# were written against it; `test_pbft_dissemination.py` runs bft-four as `dltmw init` makes it.
BATCH = "batch = { max_tx_count = 100, max_bytes = 1048576, timeout_ms = 100 }"
ENVELOPES_BATCH = BATCH[:-2] + ", pbft_dissemination = false }"
TOPOLOGY = BFT_FOUR.replace(BATCH, ENVELOPES_BATCH)
TXS = 300
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
ORDERERS = ["orderer.a", "orderer.b", "orderer.c", "orderer.d"]
S = grpc.StatusCode


def _blocks(net: Path, node: str, role: str = "orderer") -> list[block_pb2.Block]:
    db = sqlite3.connect(f"file:{net}/nodes/{node}/data/trades.{role}.sqlite?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT data FROM blocks ORDER BY number").fetchall()
    finally:
        db.close()
    return [block_pb2.Block.FromString(data) for (data,) in rows]


def _valid_tx_ids(net: Path, peer: str) -> list[str]:
    db = sqlite3.connect(f"file:{net}/nodes/{peer}/data/trades.peer.sqlite?mode=ro", uri=True)
    try:
        return [t for (t,) in db.execute("SELECT tx_id FROM txs WHERE code=?", (VALID,))]
    finally:
        db.close()


async def _wait(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


def _same_chain(net: Path, nodes: list[str]) -> bool:
    chains = [[block_hash(b) for b in _blocks(net, n)] for n in nodes]
    return all(c == chains[0] for c in chains) and len(chains[0]) > 1


def putter(client: GatewayClient, concurrency: int = 8):
    """`put_all(prefix, count, timeout_s=240)`: `count` kv puts through `client`, at most
    `concurrency` at a time; every one must commit VALID."""
    sem = asyncio.Semaphore(concurrency)

    async def put_all(prefix: str, count: int, timeout_s: float = 240) -> None:
        async def put(i: int) -> int:
            async with sem:
                done = await client.submit_transaction("trades", "kv", "put", f"{prefix}{i}", "v")
                return done.status.result

        results = await asyncio.wait_for(asyncio.gather(*(put(i) for i in range(count))), timeout_s)
        assert all(r == VALID for r in results), f"{prefix}: not all committed"

    return put_all


async def behind_the_retention(net: Path, sup, put_all) -> int:
    """orderer.d down while the others decide more sequences than they keep (the caller sets
    decided_retain = 8 and two transactions per batch), then restarted: it catches up by the
    2f+1-signed blocks it fetches. Returns the others' block count when it was restarted."""
    await put_all("warm", 4)
    sup.kill("orderer.d")
    behind = len(_blocks(net, "orderer.d"))
    await put_all("load", 120)
    ahead = len(_blocks(net, "orderer.b"))
    assert ahead - behind > 8 + 2 * 16, f"too few sequences decided ({behind} -> {ahead})"
    sup.start("orderer.d")
    sup.wait_ready("orderer.d", timeout_s=60)
    await _wait(lambda: _same_chain(net, ORDERERS), 120, "orderer.d to catch up")
    return ahead


async def kill_primary_under_load(net: Path, sup) -> list[str]:
    """Load the channel (16 in flight, `TXS` puts), kill -9 the primary once 40 committed, and
    check: commits resume after the view change, the survivors agree with >= 3 signatures per
    block and saw the view change (operations endpoint), no committed transaction is lost or
    doubled on either peer, the restarted primary catches up. Returns the committed tx ids."""
    return await kill_under_load(net, sup, "orderer.a")


async def kill_under_load(net: Path, sup, victim: str) -> list[str]:
    """`kill_primary_under_load` with any orderer as the victim; the survivors must have
    changed view only when it is the primary (orderer.a)."""
    client = await GatewayClient.connect(net, "user1.org1")
    committed: list[str] = []
    sem = asyncio.Semaphore(16)

    async def put(i: int) -> None:
        async with sem:
            try:
                done = await client.submit_transaction("trades", "kv", "put", f"k{i}", f"v{i}")
            except Exception:
                return
            if done.status.result == VALID:
                committed.append(done.tx_id)

    try:
        load = asyncio.gather(*(put(i) for i in range(TXS)))
        deadline = time.monotonic() + 120
        while len(committed) < 40 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert len(committed) >= 40, "no progress before the kill"
        sup.kill(victim)
        killed_at = len(committed)
        try:  # bounded: a stuck submission must fail here with a message, not hang the suite
            await asyncio.wait_for(load, 180)
        except TimeoutError:
            pytest.fail(f"load did not finish after the kill: {len(committed)}/{TXS} committed")
        assert len(committed) >= killed_at + 100, "commits did not resume after the view change"
        survivors = [o for o in ORDERERS if o != victim]
        await _wait(lambda: _same_chain(net, survivors), 60, "surviving replicas to agree")
        chain = _blocks(net, survivors[0])
        assert all(len(b.metadata.signatures) >= 3 for b in chain[1:])
        # Their operations endpoints saw the view change too (a killed primary's).
        for node in survivors if victim == "orderer.a" else ():
            samples = await asyncio.to_thread(scrape, sup.operations_address(node) or "")
            replica = {"replica": "orderer-trades"}
            assert value(samples, "dltmw_pbft_view", **replica) >= 1, node
            assert value(samples, "dltmw_pbft_view_changes_total", **replica) >= 1, node
            assert value(samples, "dltmw_pbft_checkpoint_lag", **replica) >= 0, node
        # No committed transaction lost or doubled, on both peers.
        for peer in ("peer0.org1", "peer0.org2"):
            height = len(chain)
            await _wait(lambda p=peer, h=height: len(_blocks(net, p, "peer")) >= h, 60, peer)
            valid = _valid_tx_ids(net, peer)
            assert len(valid) == len(set(valid)), "a transaction was committed twice"
            assert set(committed) <= set(valid), "an acknowledged transaction was lost"
        # The restarted replica catches up to the same chain.
        sup.start(victim)
        sup.wait_ready(victim, timeout_s=60)
        await _wait(lambda: _same_chain(net, ORDERERS), 90, f"restarted {victim} to catch up")
    finally:
        await client.close()
    return committed


async def test_kill9_primary_under_load(network) -> None:
    net, sup = network(TOPOLOGY)
    await kill_primary_under_load(net, sup)


def _replica_stub(net: Path, node: str, as_node: str) -> tuple[grpc.aio.Channel, object]:
    home = net / "nodes" / as_node
    if not home.exists():
        home = net / "clients" / as_node
    tls = TlsMaterial.load(home / "tls.pem", home / "tls.key", net / "tls-roots.pem")
    address = (net / "run" / "endpoints" / node).read_text().strip()
    channel = secure_channel(address, node, tls, 8 * 1024 * 1024)
    return channel, replica_pb2_grpc.ReplicaServiceStub(channel)


def _signed(signer: SigningIdentity, replica: int, message: replica_pb2.ReplicaMessage):
    payload = message.SerializeToString()
    return replica_pb2.SignedReplicaMessage(
        payload=payload, replica=replica, signature=signer.sign(payload)
    )


async def _refused(call, code: grpc.StatusCode, reason: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == code, err.value.details()
    assert reason_of(err.value) == reason, err.value.details()


async def test_replica_service_refuses_bad_input(network) -> None:
    net, sup = network(TOPOLOGY)
    home = net / "nodes" / "orderer.a"
    signer = SigningIdentity.from_pem(
        "OrdererA", (home / "identity.pem").read_bytes(), (home / "identity.key").read_bytes()
    )
    channel, stub = _replica_stub(net, "orderer.b", "orderer.a")
    org_channel, org_stub = _replica_stub(net, "orderer.b", "user1.org1")
    vote = replica_pb2.Vote(view=0, sequence=1, digest=b"d" * 32)
    good = _signed(signer, 0, replica_pb2.ReplicaMessage(prepare=vote))

    def request(*messages: replica_pb2.SignedReplicaMessage) -> replica_pb2.ExchangeRequest:
        return replica_pb2.ExchangeRequest(channel_id="trades", messages=list(messages))

    try:
        before = _blocks(net, "orderer.b")
        garbled = replica_pb2.SignedReplicaMessage()
        garbled.CopyFrom(good)
        garbled.signature = signer.sign(b"something else")
        unsigned = replica_pb2.SignedReplicaMessage(payload=good.payload, replica=0)
        junk = _signed(signer, 0, replica_pb2.ReplicaMessage())
        junk.payload = b"\xff\xff\xff"
        junk.signature = signer.sign(junk.payload)
        cases = [
            (stub.Exchange(request(good, junk)), S.INVALID_ARGUMENT, "MALFORMED"),
            (stub.Exchange(request(unsigned)), S.PERMISSION_DENIED, "BAD_SIGNATURE"),
            (stub.Exchange(request(garbled)), S.PERMISSION_DENIED, "BAD_SIGNATURE"),
            (stub.Exchange(request(as_replica(good, 7))), S.PERMISSION_DENIED, "NOT_A_MEMBER"),
            (stub.Exchange(request(as_replica(good, 1))), S.PERMISSION_DENIED, "BAD_SIGNATURE"),
            (org_stub.Exchange(request(good)), S.PERMISSION_DENIED, "TLS_IDENTITY_MISMATCH"),
            (
                stub.Exchange(replica_pb2.ExchangeRequest(channel_id="nochannel")),
                S.FAILED_PRECONDITION,
                "CHANNEL_NOT_FOUND",
            ),
        ]
        for call, code, reason in cases:
            await _refused(call, code, reason)
        # The same on a link's stream: each bad batch is answered with its reason and the
        # stream goes on; a caller that is not an orderer, or a channel not ordered here, ends it.
        stream = stub.ExchangeStream()
        for bad, reason in [
            (request(good, junk), "MALFORMED"),
            (request(unsigned), "BAD_SIGNATURE"),
            (request(as_replica(good, 7)), "NOT_A_MEMBER"),
            (request(as_replica(good, 1)), "BAD_SIGNATURE"),
        ]:
            await stream.write(replica_pb2.ExchangeStreamRequest(batch=bad))
            answer = await stream.read()
            assert (answer.accepted, reason_name(answer.refused)) == (0, reason), answer
        nowhere = replica_pb2.ExchangeRequest(channel_id="nochannel")
        await stream.write(replica_pb2.ExchangeStreamRequest(batch=nowhere))
        await _refused(stream.read(), S.FAILED_PRECONDITION, "CHANNEL_NOT_FOUND")
        stranger = org_stub.ExchangeStream()
        await stranger.write(replica_pb2.ExchangeStreamRequest(batch=request(good)))
        await _refused(stranger.read(), S.PERMISSION_DENIED, "TLS_IDENTITY_MISMATCH")
        assert _blocks(net, "orderer.b") == before, "refused input changed the ledger"
        ok = await stub.Exchange(request(good))
        assert ok.accepted == 1
        stream = stub.ExchangeStream()
        await stream.write(replica_pb2.ExchangeStreamRequest(batch=request(good)))
        assert (await stream.read()).accepted == 1
        stream.cancel()
        # Stale view: with orderer.a (primary of view 0) gone, a submission makes the others
        # change view; a correctly signed view-0 message is then refused as stale.
        sup.kill("orderer.a")
        client = await GatewayClient.connect(net, "user1.org1")
        try:
            done = await client.submit_transaction("trades", "kv", "put", "k", "v")
            assert done.status.result == VALID
        finally:
            await client.close()
        await _refused(stub.Exchange(request(good)), S.FAILED_PRECONDITION, "STALE_VIEW")
        # ... but a late vote does not take the rest of its batch with it (a catch-up request
        # here): only the late message is dropped
        ask = replica_pb2.StateRequest(from_sequence=1)
        catch_up = _signed(signer, 0, replica_pb2.ReplicaMessage(state_request=ask))
        mixed = await stub.Exchange(request(good, catch_up))
        assert mixed.accepted == 1
    finally:
        await channel.close()
        await org_channel.close()


async def test_an_unrepresentable_timestamp_forwarded_by_one_orderer_is_never_ordered(
    network,
) -> None:
    """Issue 10, finding 1, exactly: orderer.d, with only its own key, forwards one envelope
    whose header timestamp has nanos = 1e9 to the primary and the other backups. It must never
    be ordered; the peers keep committing and log no error."""
    net, _ = network(TOPOLOGY)
    home = net / "nodes" / "orderer.d"
    signer = SigningIdentity.from_pem(
        "OrdererD", (home / "identity.pem").read_bytes(), (home / "identity.key").read_bytes()
    )
    nonce = b"n" * 32
    header = common_pb2.Header(
        type=common_pb2.HEADER_TYPE_ENDORSER_TRANSACTION,
        channel_id="trades",
        tx_id=compute_tx_id(nonce, signer.identity_bytes),
        creator=signer.identity_bytes,
        nonce=nonce,
    )
    header.timestamp.seconds, header.timestamp.nanos = 1_700_000_000, 1_000_000_000
    payload = common_pb2.Payload(header=header.SerializeToString()).SerializeToString()
    poison = common_pb2.Envelope(payload=payload, signature=signer.sign(payload))
    forwarded = replica_pb2.ReplicaMessage(
        forwarded=replica_pb2.ForwardedRequests(requests=[poison.SerializeToString()])
    )
    request = replica_pb2.ExchangeRequest(
        channel_id="trades", messages=[_signed(signer, 3, forwarded)]
    )
    for node in ORDERERS[:3]:
        channel, stub = _replica_stub(net, node, "orderer.d")
        try:
            assert (await stub.Exchange(request)).accepted == 1
        finally:
            await channel.close()
    client = await GatewayClient.connect(net, "user1.org1")
    try:  # bounded: on a halted peer the commit never comes and this fails, not hangs
        for i in range(3):
            done = await asyncio.wait_for(
                client.submit_transaction("trades", "kv", "put", f"after{i}", "v"), 90
            )
            assert done.status.result == VALID
    finally:
        await client.close()
    await _wait(lambda: _same_chain(net, ORDERERS[:3]), 60, "the orderers to agree")
    height = len(_blocks(net, "orderer.a"))
    for peer in ("peer0.org1", "peer0.org2"):
        await _wait(lambda p=peer: len(_blocks(net, p, "peer")) >= height, 60, peer)
        log = (net / "run" / "logs" / f"{peer}.log").read_text()
        assert "Traceback" not in log and not logged_errors(log), log
    ordered = {env for b in _blocks(net, "orderer.a") for env in b.data.envelopes}
    assert poison.SerializeToString() not in ordered


def as_replica(
    envelope: replica_pb2.SignedReplicaMessage, replica: int
) -> replica_pb2.SignedReplicaMessage:
    """`envelope` claiming another signer (its signature is still orderer.a's)."""
    return replica_pb2.SignedReplicaMessage(
        payload=envelope.payload, replica=replica, signature=envelope.signature
    )


def _seven_orderers() -> str:
    """bft-four with three more orderer replicas (n = 7, f = 2, blocks need 5 signatures)."""
    extra = "".join(
        f'\n[[orgs]]\nid = "Orderer{x}"\n\n[[nodes]]\nid = "orderer.{x.lower()}"\n'
        f'org = "Orderer{x}"\nroles = ["orderer"]\n'
        for x in "EFG"
    )
    text = TOPOLOGY.replace("\n[[channels]]", extra + "\n[[channels]]")
    return text.replace('"orderer.d"]', '"orderer.d", "orderer.e", "orderer.f", "orderer.g"]')


async def test_seven_replicas_order_with_five_signatures_per_block(network) -> None:
    seven_without_references = _seven_orderers().replace(
        'ordering = "pbft"', 'ordering = "pbft"\nidentity_references = false'
    )
    net, _ = network(seven_without_references)
    client = await GatewayClient.connect(net, "user1.org1")
    try:
        results = await asyncio.gather(
            *(client.submit_transaction("trades", "kv", "put", f"k{i}", "v") for i in range(20))
        )
        assert all(r.status.result == VALID for r in results)
    finally:
        await client.close()
    seven = [*ORDERERS, "orderer.e", "orderer.f", "orderer.g"]
    await _wait(lambda: _same_chain(net, seven), 60, "all seven replicas to hold one chain")
    chain = _blocks(net, "orderer.g")
    assert all(len(b.metadata.signatures) >= 5 for b in chain[1:])
    await _wait(lambda: len(_blocks(net, "peer0.org2", "peer")) >= len(chain), 60, "peer")
    # A channel without identity references: its replicas name themselves in full, as before.
    full = {_own_org_identity(net, node) for node in seven}
    assert all({s.signer for s in b.metadata.signatures} <= full for b in chain[1:])


def _own_org_identity(net: Path, node: str) -> bytes:
    """The identity (in full) orderer `node` of organisation "Orderer<X>" signs with."""
    return _orderer_identity(net, node, f"Orderer{node.removeprefix('orderer.').upper()}")


def _named_by_reference(net: Path, chain: list[block_pb2.Block]) -> None:
    """Every block after block 0 names each of its >= 3 signers by a distinct orderer's
    reference (block 0, the config the references resolve against, has none)."""
    refs = {reference_bytes(_own_org_identity(net, node)) for node in ORDERERS}
    for block in chain[1:]:
        signers = [s.signer for s in block.metadata.signatures]
        assert len(set(signers)) == len(signers) >= 3, block.header.number
        assert set(signers) <= refs, block.header.number


async def test_backup_behind_the_retention_catches_up_from_peer_blocks(
    network, monkeypatch: pytest.MonkeyPatch
) -> None:
    """orderer.d (a backup) is down while the others decide far more sequences than they keep
    (decided_retain = 8, two transactions per batch): state transfer cannot serve it, so on
    restart it fetches the 2f+1-signed blocks, reaches the same chain, and its PBFT core takes
    part again — with orderer.b killed afterwards, the three left (incl. orderer.d) still commit.
    """
    monkeypatch.setenv("DLTMW_PBFT_DECIDED_RETAIN", "8")
    net, sup = network(TOPOLOGY.replace("max_tx_count = 100", "max_tx_count = 2"))
    client = await GatewayClient.connect(net, "user1.org1")
    put_all = putter(client)
    try:
        ahead = await behind_the_retention(net, sup, put_all)
        chain = _blocks(net, "orderer.d")
        assert len(chain) >= ahead and all(len(b.metadata.signatures) >= 3 for b in chain[1:])
        # The fetched blocks name their signers by reference; the peers took them all.
        _named_by_reference(net, chain)
        for peer in ("peer0.org1", "peer0.org2"):
            await _wait(lambda p=peer: len(_blocks(net, p, "peer")) >= ahead, 60, peer)
            _named_by_reference(net, _blocks(net, peer, "peer"))
        # New sequences are decided with orderer.d in the normal path again (it learns the
        # stable checkpoint from its peers' state replies) ...
        await put_all("after", 6)
        await _wait(lambda: _same_chain(net, ORDERERS), 60, "all four after the catch-up")
        # ... and it is needed: with orderer.b gone, a quorum of 3 must include orderer.d.
        sup.kill("orderer.b")
        await put_all("quorum", 6)
        left = ["orderer.a", "orderer.c", "orderer.d"]
        await _wait(lambda: _same_chain(net, left), 60, "the three left to agree")
        assert len(_blocks(net, "orderer.d")) > len(_blocks(net, "orderer.b"))
    finally:
        await client.close()


def _stored_config(net: Path, node: str, role: str) -> tuple[bytes, int] | None:
    """The config a node's ledger recorded as applied, and the block that applied it."""
    path = f"file:{net}/nodes/{node}/data/trades.{role}.sqlite?mode=ro"
    db = sqlite3.connect(path, uri=True)
    try:
        row = db.execute(
            "SELECT value, block_number FROM state WHERE namespace = ? AND key = ?",
            (CONFIG_NAMESPACE, CONFIG_KEY),
        ).fetchone()
    finally:
        db.close()
    return None if row is None else (bytes(row[0]), int(row[1]))


async def test_a_config_update_is_ordered_alone_and_applied_at_its_block_everywhere(
    network,
) -> None:
    """Issue 12 on PBFT-lite: Org1 and Org2 admins revoke user2.org1 while orderer.d is down;
    the update is cut alone, every replica and peer applies it at that block (orderer.d too,
    catching up across it after a restart); user2.org1's transactions are valid before and
    refused after, user1.org1's still commit."""
    net, sup = network(TOPOLOGY + '\n[[clients]]\nid = "user2.org1"\norg = "Org1"\n')

    async def put(client_id: str, key: str) -> int:
        async with await GatewayClient.connect(net, client_id, pipelined=False) as c:
            return (await c.submit_transaction("trades", "kv", "put", key, "v")).status.result

    assert await put("user2.org1", "before") == VALID
    sup.kill("orderer.d")
    view = await current_config(net, "user1.org1", "trades")
    cert = ClientFiles.load(net, "user2.org1").signer.certificate_der
    serial = x509.load_der_x509_certificate(cert).serial_number
    update = config_update_pb2.ConfigUpdate(
        content=update_content(view, config_edit.with_revoked(view.config, "Org1", [serial]))
    )
    for admin in ("admin.org1", "admin.org2"):
        add_signature(update, ClientFiles.load(net, admin).signer)
    _, code, number = await submit_update(net, "admin.org1", "trades", update)
    assert code == VALID
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await put("user2.org1", "after")
    assert (err.value.code(), reason_of(err.value)) == (S.PERMISSION_DENIED, "CERTIFICATE_REVOKED")
    assert await put("user1.org1", "after") == VALID
    sup.start("orderer.d")
    sup.wait_ready("orderer.d", timeout_s=60)
    await _wait(lambda: _same_chain(net, ORDERERS), 60, "orderer.d to catch up")
    (config_block,) = [b for b in _blocks(net, "orderer.a") if b.header.number == number]
    assert len(config_block.data.envelopes) == 1  # cut alone
    peers = ["peer0.org1", "peer0.org2"]
    await _wait(
        lambda: all(len(_blocks(net, p, "peer")) > number + 1 for p in peers), 60, "the peers"
    )
    stored = {n: _stored_config(net, n, "orderer") for n in ORDERERS}
    stored |= {p: _stored_config(net, p, "peer") for p in peers}
    assert {s[1] for s in stored.values() if s} == {number}, stored
    assert len({s[0] for s in stored.values() if s}) == 1 and None not in stored.values()


PEERS = ("peer0.org1", "peer0.org2")


def _with_orderer_e() -> str:
    """bft-four with orderer.e, a second orderer node of OrdererA that block 0 does not name."""
    extra = '\n[[nodes]]\nid = "orderer.e"\norg = "OrdererA"\nroles = ["orderer"]\n'
    return TOPOLOGY.replace("\n[[channels]]", extra + "\n[[channels]]")


def _orderer_identity(net: Path, node: str, org: str) -> bytes:
    home = net / "nodes" / node
    return identity_bytes(org, (home / "identity.pem").read_bytes())


async def _update_orderers(net: Path, orderers: list[config_pb2.NodeConfig]) -> tuple[int, int]:
    """Submit an update setting the orderer list, signed by Org1's and Org2's admins."""
    view = await current_config(net, "user1.org1", "trades")
    config = config_pb2.ChannelConfig()
    config.CopyFrom(view.config)
    del config.orderers[:]
    config.orderers.extend(orderers)
    update = config_update_pb2.ConfigUpdate(content=update_content(view, config))
    for admin in ("admin.org1", "admin.org2"):
        add_signature(update, ClientFiles.load(net, admin).signer)
    _, code, number = await submit_update(net, "admin.org1", "trades", update)
    return code, number


async def _cli_add_orderer(net: Path, tmp_path: Path, node: str) -> int:
    """`dltmw channel update --add-orderer`, signed by Org1's and Org2's admins, submitted;
    returns the block that applied it."""
    upd, net_s = str(tmp_path / f"add-{node}.update"), str(net)
    run = asyncio.to_thread
    await run(dltmw, "channel", "update", net_s, "trades", "--add-orderer", node, "-o", upd,
              "-c", "admin.org1")  # fmt: skip
    for admin in ("admin.org1", "admin.org2"):
        await run(dltmw, "channel", "update", net_s, "trades", "--sign", upd, "-c", admin)
    said = await run(
        dltmw, "channel", "update", net_s, "trades", "--submit", upd, "-c", "admin.org1"
    )
    assert " VALID in block " in said, said
    return int(said.rsplit(" ", 1)[-1])


async def test_a_replica_is_added_then_another_removed_and_the_channel_goes_on(
    network, tmp_path: Path
) -> None:
    """Issue 12 item 3 on real processes: orderer.e (running from the start as a follower) is
    added (4 -> 5: blocks need 4 signatures), catches up and signs blocks after the boundary;
    orderer.b is removed (5 -> 4) and killed; transactions before, between and after are VALID
    and every peer and replica in force holds one chain. Bad replica changes are refused with
    their reason and leave the config byte for byte as it was."""
    net, sup = network(_with_orderer_e())
    async with await GatewayClient.connect(net, "user1.org1", pipelined=False) as client:

        async def put(key: str) -> int:
            return (await client.submit_transaction("trades", "kv", "put", key, "v")).status.result

        assert await put("before") == VALID
        view = await current_config(net, "user1.org1", "trades")
        kept = list(view.config.orderers)
        before = view.config.SerializeToString()
        for bad, reason in (
            (kept[:3], "REPLICA_SET_TOO_SMALL"),
            ([*kept, config_pb2.NodeConfig(node_id="x", org_id="Org9", identity=b"x")],
             "REPLICA_ORG_UNKNOWN"),
            ([*kept, config_pb2.NodeConfig(node_id="x", org_id="OrdererA", identity=b"junk")],
             "REPLICA_IDENTITY_INVALID"),
        ):  # fmt: skip
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await _update_orderers(net, bad)
            assert (err.value.code(), reason_of(err.value)) == (S.INVALID_ARGUMENT, reason)
        after_bad = await current_config(net, "user1.org1", "trades")
        assert after_bad.config.SerializeToString() == before, "a refused update changed it"
        first = await _cli_add_orderer(net, tmp_path, "orderer.e")
        assert await put("between") == VALID
        five = [*ORDERERS, "orderer.e"]
        await _wait(lambda: _same_chain(net, five), 60, "orderer.e to follow and join")
        assert await put("joined") == VALID
        await _wait(lambda: _same_chain(net, five), 60, "all five after the join")
        signed = [b for b in _blocks(net, "orderer.e")[first + 1 :] if b.metadata.signatures]
        assert signed and all(len(b.metadata.signatures) >= 4 for b in signed)
        # named by its reference (the channel takes identity references)
        mine = reference_bytes(_orderer_identity(net, "orderer.e", "OrdererA"))
        assert any(s.signer == mine for b in signed for s in b.metadata.signatures)
        five_view = await current_config(net, "user1.org1", "trades")
        kept_four = [o for o in five_view.config.orderers if o.node_id != "orderer.b"]
        code, second = await _update_orderers(net, kept_four)
        assert code == VALID and second > first
        sup.kill("orderer.b")
        results = [await put(f"after{i}") for i in range(3)]
        assert results == [VALID] * 3
    left = ["orderer.a", "orderer.c", "orderer.d", "orderer.e"]
    await _wait(lambda: _same_chain(net, left), 60, "the four left to agree")
    chain = _blocks(net, "orderer.a")
    assert all(len(b.metadata.signatures) >= 3 for b in chain[second + 1 :])

    def peers_hold_it() -> bool:
        hashes = [[block_hash(b) for b in _blocks(net, p, "peer")] for p in PEERS]
        return hashes[0] == hashes[1] == [block_hash(b) for b in chain]

    await _wait(peers_hold_it, 60, "both peers to hold the chain")
