"""Confidentiality in depth on real node processes: a channel whose private payloads are wrapped
X25519 + ML-KEM-768 (`private_key_wrap = "x25519-mlkem768"`), on nodes that encrypt their
private stores at rest (`encrypt_at_rest = true`), with a client whose identity is ML-DSA-65.

One network for the module: Org1 trades privately with Org2; Org3 is a member that is not a
recipient. Tests run in file order and build on each other's ledger.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from dltmw.client import GatewayClient
from dltmw.client.privacy import PrivacyClient
from dltmw.core.identity import SigningIdentity, algorithm_of
from dltmw.core.privacy.envelope import PrivacyKey, payload_hash, seal
from dltmw.core.privacy.kem import HYBRID, X25519
from dltmw.ledger.at_rest import open_cipher
from dltmw.ops.supervisor import Supervisor
from dltmw.pki.network import init_network
from dltmw.rpc.status import reason_of
from dltmw.rpc.tls import TlsMaterial, secure_channel
from dltmw.runtime.roles.privacy.hybrid import encapsulate, load_privacy_key
from dltmw.v1 import (
    algorithms_pb2,
    privacy_manager_service_pb2_grpc,
    private_payload_pb2,
    transaction_pb2,
)
from dltmw.v1 import (
    privacy_manager_service_pb2 as P,
)

from .operations_http import get

pytestmark = pytest.mark.integration
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
CH = "pq"
TOPOLOGY = """
name = "pq"
encrypt_at_rest = true
[[orgs]]
id = "Org1"
[[orgs]]
id = "Org2"
[[orgs]]
id = "Org3"
[[orgs]]
id = "OrdererOrg"
[[nodes]]
id = "orderer0"
org = "OrdererOrg"
roles = ["orderer"]
[[nodes]]
id = "peer0.org1"
org = "Org1"
roles = ["peer", "gateway"]
[[nodes]]
id = "peer0.org2"
org = "Org2"
roles = ["peer", "gateway"]
[[nodes]]
id = "peer0.org3"
org = "Org3"
roles = ["peer", "gateway"]
[[clients]]
id = "user1.org1"
org = "Org1"
[[clients]]
id = "user1.org2"
org = "Org2"
[[clients]]
id = "user1.org3"
org = "Org3"
[[clients]]
id = "pq.user1.org1"
org = "Org1"
key_type = "mldsa65"
[[channels]]
id = "pq"
members = ["Org1", "Org2", "Org3"]
orderers = ["orderer0"]
private_key_wrap = "x25519-mlkem768"
contracts = [{ name = "kv" }]
endorsement_policy = "Org1.peer"
batch = { max_tx_count = 100, max_bytes = 1048576, timeout_ms = 50 }
"""
ORGS = ("org1", "org2", "org3")
CANARY = b"pq-canary-" + os.urandom(16).hex().encode()


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Supervisor]]:
    tmp = tmp_path_factory.mktemp("pq")
    (tmp / "topology.toml").write_text(TOPOLOGY)
    init_network(tmp / "topology.toml", tmp / "net")
    sup = Supervisor(tmp / "net")
    try:
        sup.up(timeout_s=90)
        yield tmp / "net", sup
    finally:
        codes = {n: sup.stop(n) for n in list(sup.nodes)}
        assert all(c == 0 for c in codes.values()), f"unclean stop: {codes}"


def node_key(net: Path, node: str) -> PrivacyKey:
    home = net / "nodes" / node
    kem = home / "privacy-kem.key"
    return load_privacy_key((home / "privacy.key").read_bytes(), kem.read_bytes())


def stored_payloads(net: Path, org: str) -> list[bytes]:
    """The node's stored payloads, opened with its own data keys (they are encrypted at rest)."""
    home = net / "nodes" / f"peer0.{org}"
    values = open_cipher(home / "data", (home / "storage.key").read_bytes())
    db = sqlite3.connect(f"file:{home / 'data' / f'{CH}.private.sqlite'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT hash, data FROM payloads").fetchall()
    finally:
        db.close()
    return [values.open("payloads", bytes(h), bytes(d)) for h, d in rows]


async def wait_executed(pc: PrivacyClient, digest: bytes, timeout_s: float = 60) -> bytes:
    """The plaintext once the recipient's node holds it (Receive), within a deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            return await pc.receive(CH, digest)
        except grpc.aio.AioRpcError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.1)


async def test_a_private_trade_on_a_hybrid_channel(net: tuple[Path, Supervisor]) -> None:
    path, _ = net
    pcs = {o: PrivacyClient(await GatewayClient.connect(path, f"user1.{o}")) for o in ORGS}
    try:
        done = await pcs["org1"].submit_private(CH, ["Org2"], "kv", "put", "deal", CANARY)
        assert done.status.result == VALID
        for org in ("org1", "org2"):
            assert CANARY in await wait_executed(pcs[org], done.payload_hash), org
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await pcs["org3"].receive(CH, done.payload_hash)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        for pc in pcs.values():
            await pc.close()
    held = [
        private_payload_pb2.EncryptedPayload.FromString(raw)
        for raw in stored_payloads(path, "org2")
    ]
    mine = [p for p in held if payload_hash(p) == done.payload_hash]
    assert len(mine) == 1 and mine[0].key_wrap_algorithm == HYBRID
    assert all(len(box.kem_ciphertext) == 1088 for box in mine[0].recipient_boxes)


def _push_stub(
    net: Path, sup: Supervisor
) -> tuple[
    privacy_manager_service_pb2_grpc.PrivacyManagerServiceStub, SigningIdentity, grpc.aio.Channel
]:
    home = net / "nodes" / "peer0.org1"
    signer = SigningIdentity.from_pem(
        "Org1", (home / "identity.pem").read_bytes(), (home / "identity.key").read_bytes()
    )
    tls = TlsMaterial.load(home / "tls.pem", home / "tls.key", net / "tls-roots.pem")
    address = (net / "run" / "endpoints" / "peer0.org2").read_text().strip()
    channel = secure_channel(address, "peer0.org2", tls, 4 * 1024 * 1024)
    return privacy_manager_service_pb2_grpc.PrivacyManagerServiceStub(channel), signer, channel


async def test_a_downgraded_push_is_refused_and_a_hybrid_one_stored(
    net: tuple[Path, Supervisor],
) -> None:
    """Org1's node pushes Org2 a payload wrapped X25519 only (refused: the channel requires
    hybrid), then the same wrapped hybrid (stored): the refusal is the algorithm's alone."""
    path, sup = net
    org1, org2 = node_key(path, "peer0.org1"), node_key(path, "peer0.org2")
    stub, signer, channel = _push_stub(path, sup)
    invocation = private_payload_pb2.PrivateInvocation(contract="kv", function="put", args=[b"k"])
    keys = [org2.public_key]
    kem = {k.public_key: encapsulate(k.kem_public_key) for k in (org1, org2)}

    def request(wrap: int) -> P.PushRequest:
        nonces = [os.urandom(12), os.urandom(12)]
        sealed = seal(
            invocation.SerializeToString(),
            org1,
            keys,
            os.urandom(32),
            os.urandom(12),
            nonces,
            wrap,
            kem if wrap == HYBRID else None,
        )
        batch = P.PushBatch(
            channel_id=CH,
            requester=signer.identity_bytes,
            payloads=[sealed],
            payload_hashes=[payload_hash(sealed)],
        )
        batch.timestamp.GetCurrentTime()
        data = batch.SerializeToString()
        return P.PushRequest(batch=data, signature=signer.sign(data))

    before = len(stored_payloads(path, "org2"))
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for _ in stub.Push(iter([request(X25519)]), timeout=20):
                pass
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert reason_of(refused.value) == "INVALID_FIELD"
        assert "requires KEY_WRAP_ALGORITHM_X25519_MLKEM768" in (refused.value.details() or "")
        assert len(stored_payloads(path, "org2")) == before
        async for reply in stub.Push(iter([request(HYBRID)]), timeout=20):
            assert reply.stored == 1
        assert len(stored_payloads(path, "org2")) == before + 1
    finally:
        await channel.close(None)


def node_files(net: Path) -> list[Path]:
    """Every node's files: keys, configs, data (sqlite with -wal/-shm), and their logs (run/)."""
    return [p for d in ("nodes", "run") for p in sorted((net / d).rglob("*")) if p.is_file()]


async def test_the_private_canary_is_in_no_node_file_and_nodes_still_serve(
    net: tuple[Path, Supervisor],
) -> None:
    """Every file of every node (sqlite files with their -wal and -shm, keys, logs): the canary
    sent privately (first test) and a new one in private state appear 0 times, raw or hex,
    while recipients still read the payload and execute against their encrypted state."""
    path, _ = net
    pcs = {o: PrivacyClient(await GatewayClient.connect(path, f"user1.{o}")) for o in ORGS}
    second = b"pq-canary-2-" + os.urandom(8).hex().encode()
    try:
        opened = await pcs["org1"].submit_private(CH, ["Org2"], "kv", "put", "deal2", second)
        assert opened.status.result == VALID
        for org in ("org1", "org2"):
            assert second in await wait_executed(pcs[org], opened.payload_hash), org
        report = await pcs["org2"].validate(CH, opened.payload_hash)
        assert report.status == P.PRIVATE_TX_STATUS_EXECUTED and not report.mismatch
    finally:
        for pc in pcs.values():
            await pc.close()
    files = node_files(path)
    assert any(p.name.endswith(".private.sqlite-wal") for p in files)
    for needle in (CANARY, second):
        found = {
            str(p): n
            for p in files
            if (n := (data := p.read_bytes()).count(needle) + data.count(needle.hex().encode()))
        }
        assert found == {}, f"{needle!r} at rest in {found}"


def key_ids(net: Path, org: str) -> dict[bytes, int]:
    """payload hash -> the data key id its stored record was sealed under."""
    path = net / "nodes" / f"peer0.{org}" / "data" / f"{CH}.private.sqlite"
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT hash, data FROM payloads").fetchall()
    finally:
        db.close()
    return {bytes(h): int.from_bytes(bytes(d)[1:5], "big") for h, d in rows}


async def test_a_data_key_rotates_without_downtime(net: tuple[Path, Supervisor]) -> None:
    """Org2 rotates its data key while running: its new records use key 2, the old ones stay
    readable under key 1, and it keeps executing and serving private trades."""
    path, sup = net
    ops = sup.operations_address("peer0.org2")
    assert ops
    assert (await asyncio.to_thread(get, ops, "/data-key/rotate"))[0] == 405
    assert await asyncio.to_thread(get, ops, "/data-key/rotate", "POST") == (
        200,
        "data key 2 current\n",
    )
    before = key_ids(path, "org2")
    assert set(before.values()) == {1}
    pcs = {o: PrivacyClient(await GatewayClient.connect(path, f"user1.{o}")) for o in ORGS}
    try:
        done = await pcs["org1"].submit_private(CH, ["Org2"], "kv", "put", "after", b"rotated")
        assert done.status.result == VALID
        assert b"rotated" in await wait_executed(pcs["org2"], done.payload_hash)
        for digest in before:  # every record written before the rotation still opens
            assert await pcs["org2"].receive(CH, digest)
    finally:
        for pc in pcs.values():
            await pc.close()
    assert key_ids(path, "org2")[done.payload_hash] == 2


async def test_an_ml_dsa_client_transacts_publicly_and_privately(
    net: tuple[Path, Supervisor],
) -> None:
    """Its 3309-byte ML-DSA-65 signatures are checked by the gateway, the endorser, the orderer,
    every committing peer and the privacy manager: each transaction commits VALID."""
    path, _ = net
    client = await GatewayClient.connect(path, "pq.user1.org1")
    try:
        cert = x509.load_der_x509_certificate(client.signer.certificate_der)
        assert algorithm_of(cert.public_key()) == algorithms_pb2.SIGNATURE_ALGORITHM_ML_DSA_65
        done = await client.submit_transaction(CH, "kv", "put", "pq-public", "signed ML-DSA")
        assert done.status.result == VALID
        answer = await client.evaluate(CH, "kv", "get", "pq-public")
        assert answer.payload == b"signed ML-DSA"
        private = await PrivacyClient(client).submit_private(CH, ["Org2"], "kv", "put", "k", "v")
        assert private.status.result == VALID
    finally:
        await client.close()
