"""Private payloads end to end on real node processes (Quorum/Tessera style).

One network for the module: Org1 and Org2 trade privately, Org3 is a channel member that is not
a recipient, Regulator runs the channel's auditor node. Tests run in file order and build on each
other's ledger (each states what it needs); the recovery test comes last because it deletes a
store. Channel `trades` opts out of agreement before commit (`private_agreement = "none"`, the
old path these tests were written for: a tampered recipient is found afterwards by validation);
channel `deals` has the default (every recipient signs before ordering), tested at the end.
The purge test runs last of all: it scans every file of the members for its own canary.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from dltmw.client import GatewayClient
from dltmw.client.audit import audit_network
from dltmw.client.privacy import PrivacyClient
from dltmw.client.purge import approve, purge_body, submit_purge
from dltmw.core.identity import SigningIdentity, reference_bytes, verify_signature
from dltmw.core.privacy import agreement_batch
from dltmw.core.privacy.envelope import PrivacyKey, payload_hash, seal
from dltmw.ops.supervisor import Supervisor
from dltmw.pki.network import init_network
from dltmw.rpc.status import reason_of
from dltmw.rpc.tls import TlsMaterial, secure_channel
from dltmw.runtime.roles.privacy.executor import private_txs
from dltmw.runtime.roles.privacy.hybrid import load_privacy_key
from dltmw.v1 import (
    block_pb2,
    common_pb2,
    errors_pb2,
    privacy_manager_service_pb2_grpc,
    private_agreement_pb2,
    private_payload_pb2,
    transaction_pb2,
)
from dltmw.v1 import (
    privacy_manager_service_pb2 as P,
)
from integration.operations_http import scrape, value

from .cli import dltmw
from .ledgers import blocks as ledger_blocks
from .ledgers import height as ledger_height
from .ledgers import ledger_path

pytestmark = pytest.mark.integration
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
CH = "trades"
TOPOLOGY = """
name = "privacy"
[[orgs]]
id = "Org1"
[[orgs]]
id = "Org2"
[[orgs]]
id = "Org3"
[[orgs]]
id = "Regulator"
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
[[nodes]]
id = "peer0.regulator"
org = "Regulator"
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
id = "user1.regulator"
org = "Regulator"
[[channels]]
id = "trades"
members = ["Org1", "Org2", "Org3", "Regulator"]
orderers = ["orderer0"]
privacy_auditors = ["peer0.regulator"]
contracts = [{ name = "bank" }, { name = "kv" }]
batch = { max_tx_count = 100, max_bytes = 1048576, timeout_ms = 50 }
private_agreement = "none"
[[channels]]
id = "deals"
members = ["Org1", "Org2", "Org3", "Regulator"]
orderers = ["orderer0"]
privacy_auditors = ["peer0.regulator"]
contracts = [{ name = "kv" }]
batch = { max_tx_count = 100, max_bytes = 1048576, timeout_ms = 50 }
"""
MARKER = os.urandom(32)
ORGS = ("org1", "org2", "org3", "regulator")


@contextmanager
def running(tmp: Path) -> Iterator[tuple[Path, Supervisor]]:
    """This module's network, made in `tmp` and up; every node stopped cleanly after (the
    fixture of test_privacy_groups.py and test_privacy_group_remove.py too)."""
    (tmp / "topology.toml").write_text(TOPOLOGY)
    init_network(tmp / "topology.toml", tmp / "net")
    sup = Supervisor(tmp / "net")
    try:
        sup.up(timeout_s=90)
        yield tmp / "net", sup
    finally:
        # the sender first, the orderer last: a node with an open incoming stream (Push from
        # the sender, Deliver from peers) waits out its server's grace on stop (~5 s each;
        # noted in stop 26, not mended yet)
        order = sorted(sup.nodes, key=lambda n: (n != "peer0.org1", n.startswith("orderer")))
        codes = {n: sup.stop(n) for n in order}
        assert all(c == 0 for c in codes.values()), f"unclean stop: {codes}"


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Supervisor]]:
    with running(tmp_path_factory.mktemp("privacy")) as started:
        yield started


async def clients(net: Path) -> dict[str, PrivacyClient]:
    return {o: PrivacyClient(await GatewayClient.connect(net, f"user1.{o}")) for o in ORGS}


async def close(pcs: dict[str, PrivacyClient]) -> None:
    for pc in pcs.values():
        await pc.close()


def private_db(net: Path, org: str) -> sqlite3.Connection:
    path = net / "nodes" / f"peer0.{org}" / "data" / f"{CH}.private.sqlite"
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def pstate(net: Path, org: str) -> dict[tuple[str, str], bytes]:
    db = private_db(net, org)
    try:
        rows = db.execute("SELECT namespace, key, value FROM pstate").fetchall()
        return {(r[0], r[1]): bytes(r[2]) for r in rows}
    finally:
        db.close()


def ptx_status(net: Path, org: str, digest: bytes) -> int | None:
    db = private_db(net, org)
    try:
        row = db.execute("SELECT status FROM ptxs WHERE payload_hash=?", (digest,)).fetchone()
        return None if row is None else int(row[0])
    finally:
        db.close()


def occurrences(paths: list[Path], needle: bytes) -> dict[str, int]:
    found: dict[str, int] = {}
    for path in paths:
        data = path.read_bytes()
        n = data.count(needle) + data.count(needle.hex().encode())
        if n:
            found[str(path)] = n
    return found


def files_under(*roots: Path) -> list[Path]:
    return [p for r in roots if r.exists() for p in sorted(r.rglob("*")) if p.is_file()]


async def until_idle(client: GatewayClient) -> AsyncIterator[bytes]:
    stream = client.events(CH, 0).__aiter__()
    while True:
        try:
            yield (await asyncio.wait_for(stream.__anext__(), 2.0)).SerializeToString()
        except (TimeoutError, StopAsyncIteration):
            return


async def wait_status(net: Path, org: str, digest: bytes, timeout_s: float = 60) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        status = ptx_status(net, org, digest)
        if status is not None:
            return status
        await asyncio.sleep(0.1)
    raise AssertionError(f"{org} did not execute {digest.hex()} in {timeout_s}s")


SENT: list[bytes] = []  # payload hashes of every private tx Org1 sent (for the recovery test)


async def test_confidentiality_canary(net: tuple[Path, Supervisor]) -> None:
    path, _ = net
    pcs = await clients(path)
    try:
        done = await pcs["org1"].submit_private(CH, ["Org2"], "kv", "put", "secret", MARKER)
        SENT.append(done.payload_hash)
        assert done.status.result == VALID
        # recipients and the auditor read it; the private state holds it at recipients only
        for org in ("org1", "org2", "regulator"):
            plaintext = await pcs[org].receive(CH, done.payload_hash)
            assert MARKER in plaintext, org
            assert await wait_status(path, org, done.payload_hash) == P.PRIVATE_TX_STATUS_EXECUTED
            assert pstate(path, org)[("kv", "secret")] == MARKER
        assert await wait_status(path, "org3", done.payload_hash) == P.PRIVATE_TX_STATUS_NOT_HELD
        # the non-recipient: Receive denied, from its own node and from a recipient's node
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await pcs["org3"].receive(CH, done.payload_hash)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        error_replies = [
            denied.value.details().encode(),
            str(denied.value.trailing_metadata()).encode(),
        ]
        foreign = PrivacyClient(await GatewayClient.connect(path, "user1.org3", "peer0.org1"))
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await foreign.receive(CH, done.payload_hash)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        await foreign.client.close()
        # its gRPC replies: events and commit status carry the hash only
        replies = [r async for r in until_idle(pcs["org3"].client)]
        status = await pcs["org3"].client.commit_status(CH, done.tx_id)
        replies += [status.SerializeToString(), *error_replies]
        assert status.result == VALID
        assert not any(MARKER in r or MARKER.hex().encode() in r for r in replies)
        assert len(replies) >= 2
    finally:
        await close(pcs)
    # its files (sqlite incl. -wal/-shm, logs) and every node's block store
    outsider = files_under(path / "nodes" / "peer0.org3") + sorted(
        (path / "run" / "logs").glob("peer0.org3.*")
    )
    assert any(p.name.endswith(".private.sqlite-wal") or p.suffix == ".sqlite" for p in outsider)
    assert occurrences(outsider, MARKER) == {}
    block_stores = [
        p
        for p in files_under(path / "nodes")
        if ".peer.sqlite" in p.name or ".orderer.sqlite" in p.name
    ]
    assert len(block_stores) >= 5
    assert occurrences(block_stores, MARKER) == {}
    assert occurrences(files_under(path / "run" / "logs"), MARKER) == {}
    recipient_files = files_under(path / "nodes" / "peer0.org2" / "data")
    assert occurrences(recipient_files, MARKER)  # the check can find it where it is


def node_stub(
    net: Path, signer_node: str, target: str, sup: Supervisor
) -> tuple[
    privacy_manager_service_pb2_grpc.PrivacyManagerServiceStub, SigningIdentity, grpc.aio.Channel
]:
    home = net / "nodes" / signer_node
    org = {"peer0.org1": "Org1", "peer0.org3": "Org3"}[signer_node]
    signer = SigningIdentity.from_pem(
        org, (home / "identity.pem").read_bytes(), (home / "identity.key").read_bytes()
    )
    tls = TlsMaterial.load(home / "tls.pem", home / "tls.key", net / "tls-roots.pem")
    address = (net / "run" / "endpoints" / target).read_text().strip()
    channel = secure_channel(address, target, tls, 4 * 1024 * 1024)
    return privacy_manager_service_pb2_grpc.PrivacyManagerServiceStub(channel), signer, channel


def payload_count(net: Path, org: str) -> int:
    db = private_db(net, org)
    try:
        return int(db.execute("SELECT COUNT(*) FROM payloads").fetchone()[0])
    finally:
        db.close()


def privacy_key(net: Path, node: str) -> PrivacyKey:
    return load_privacy_key((net / "nodes" / node / "privacy.key").read_bytes())


def org3_sealed_for_org2(net: Path, args: list[bytes]) -> private_payload_pb2.EncryptedPayload:
    """A kv put sealed by Org3's node for Org2's (as its privacy manager would)."""
    invocation = private_payload_pb2.PrivateInvocation(contract="kv", function="put", args=args)
    return seal(
        invocation.SerializeToString(),
        privacy_key(net, "peer0.org3"),
        [privacy_key(net, "peer0.org2").public_key],
        os.urandom(32),
        os.urandom(12),
        [os.urandom(12), os.urandom(12)],
    )


async def test_forged_push_is_refused_and_stores_nothing(net: tuple[Path, Supervisor]) -> None:
    path, sup = net
    stub, signer, channel = node_stub(path, "peer0.org3", "peer0.org2", sup)
    sealed = org3_sealed_for_org2(path, [b"k"])
    good_hash = payload_hash(sealed)

    def request(hashes: list[bytes], sign_over: bytes | None = None) -> P.PushRequest:
        batch = P.PushBatch(
            channel_id=CH, requester=signer.identity_bytes, payloads=[sealed], payload_hashes=hashes
        )
        batch.timestamp.GetCurrentTime()
        data = batch.SerializeToString()
        return P.PushRequest(batch=data, signature=signer.sign(sign_over or data))

    async def push(req: P.PushRequest) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            async for _ in stub.Push(iter([req]), timeout=20):
                pass
        return exc.value

    before = payload_count(path, "org2")
    try:
        bad_sig = await push(request([good_hash], sign_over=b"something else"))
        assert bad_sig.code() == grpc.StatusCode.PERMISSION_DENIED
        assert reason_of(bad_sig) == "BAD_SIGNATURE"
        wrong_hash = await push(request([bytes(32)]))
        assert wrong_hash.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert reason_of(wrong_hash) == "PAYLOAD_HASH_MISMATCH"
        # a valid batch signed by Org1's node but sealed with Org3's key: sender key mismatch
        stub1, signer1, channel1 = node_stub(path, "peer0.org1", "peer0.org2", sup)
        batch = P.PushBatch(
            channel_id=CH,
            requester=signer1.identity_bytes,
            payloads=[sealed],
            payload_hashes=[good_hash],
        )
        batch.timestamp.GetCurrentTime()
        data = batch.SerializeToString()
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            async for _ in stub1.Push(
                iter([P.PushRequest(batch=data, signature=signer1.sign(data))])
            ):
                pass
        assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED
        await channel1.close(None)
        assert payload_count(path, "org2") == before
        # the same payload, honestly pushed by its sender, is stored (the forgeries were the fault)
        async for reply in stub.Push(iter([request([good_hash])]), timeout=20):
            assert reply.stored == 1
        assert payload_count(path, "org2") == before + 1
    finally:
        await channel.close(None)


async def test_private_state_validation_reports_a_mismatch(net: tuple[Path, Supervisor]) -> None:
    path, sup = net
    pcs = await clients(path)
    try:
        opened = await pcs["org1"].submit_private(CH, ["Org2"], "bank", "open", "acct", "100")
        SENT.append(opened.payload_hash)
        same = await pcs["org1"].validate(CH, opened.payload_hash)
        assert not same.mismatch and len(same.parties) == 2
        assert all(p.matches and not p.error for p in same.parties)
        await wait_status(path, "org2", opened.payload_hash)
    finally:
        await close(pcs)
    # Org2's private state diverges (as after a bug or a tampered database)
    sup.stop("peer0.org2")
    db_path = path / "nodes" / "peer0.org2" / "data" / f"{CH}.private.sqlite"
    db = sqlite3.connect(db_path)
    db.execute("UPDATE pstate SET value=? WHERE namespace='bank' AND key='acct'", (b"500",))
    db.commit()
    db.close()
    sup.start("peer0.org2")
    sup.wait_ready("peer0.org2", 60)
    pcs = await clients(path)
    try:
        deposit = await pcs["org1"].submit_private(CH, ["Org2"], "bank", "deposit", "acct", "10")
        SENT.append(deposit.payload_hash)
        assert deposit.status.result == VALID
        seen_by_1 = await pcs["org1"].validate(CH, deposit.payload_hash)
        seen_by_2 = await pcs["org2"].validate(CH, deposit.payload_hash)
        assert seen_by_1.mismatch and seen_by_2.mismatch
        by_node = {p.node_id: p for p in seen_by_1.parties}
        assert not by_node["peer0.org2"].matches and by_node["peer0.regulator"].matches
        assert pstate(path, "org1")[("bank", "acct")] == b"110"
        assert pstate(path, "org2")[("bank", "acct")] == b"510"
    finally:
        await close(pcs)


async def test_send_batch_and_bad_requests_change_nothing(net: tuple[Path, Supervisor]) -> None:
    path, _ = net
    pcs = await clients(path)
    foreign = PrivacyClient(await GatewayClient.connect(path, "user1.org3", "peer0.org1"))
    try:
        items = [(f"batch item {i}".encode() + MARKER, ["Org2"]) for i in range(3)]
        hashes = await pcs["org1"].send_batch(CH, items)
        assert len(set(hashes)) == 3
        for digest, (plaintext, _) in zip(hashes, items, strict=True):
            assert await pcs["org2"].receive(CH, digest) == plaintext
        # concurrent per-payload sends share SendBatch calls; a bad one fails alone
        calls = [pcs["org1"].send_coalesced(CH, b"c%d" % i, ["Org2"]) for i in range(20)]
        calls.append(pcs["org1"].send_coalesced(CH, b"bad", ["NoSuchOrg"]))
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert isinstance(results[-1], grpc.aio.AioRpcError)
        assert results[-1].code() == grpc.StatusCode.INVALID_ARGUMENT
        good = results[:-1]
        assert all(isinstance(r, bytes) for r in good) and len(set(good)) == 20
        assert await pcs["org2"].receive(CH, good[7]) == b"c7"
        # 1 MiB payloads round-trip (the byte-bounded push batching is unit-tested: by_size)
        big = [os.urandom(1024 * 1024) for _ in range(6)]
        sent = await asyncio.gather(*(pcs["org1"].send(CH, b, ["Org2"]) for b in big))
        for reply, plaintext in zip(sent, big, strict=True):
            assert await pcs["org2"].receive(CH, reply.payload_hash) == plaintext
        before = {o: payload_count(path, o) for o in ("org1", "org2")}
        bad = [
            (pcs["org1"].send(CH, b"x", ["NoSuchOrg"]), grpc.StatusCode.INVALID_ARGUMENT),
            (pcs["org1"].send(CH, b"", ["Org2"]), grpc.StatusCode.INVALID_ARGUMENT),
            (pcs["org1"].send("nochannel", b"x", ["Org2"]), grpc.StatusCode.FAILED_PRECONDITION),
            (foreign.send(CH, b"x", ["Org2"]), grpc.StatusCode.PERMISSION_DENIED),
            (pcs["org1"].receive(CH, b"\x01" * 31), grpc.StatusCode.INVALID_ARGUMENT),
            (
                pcs["org1"].send_batch(CH, [(b"x", ["Org2"]), (b"y", ["Nope"])]),
                grpc.StatusCode.INVALID_ARGUMENT,
            ),
        ]
        for call, code in bad:
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await call
            assert exc.value.code() == code, exc.value.details()
        assert {o: payload_count(path, o) for o in ("org1", "org2")} == before
    finally:
        await foreign.client.close()
        await close(pcs)


async def test_adding_a_recipient_rewraps_without_reencrypting(
    net: tuple[Path, Supervisor],
) -> None:
    path, _ = net
    pcs = await clients(path)
    try:
        done = await pcs["org1"].submit_private(CH, ["Org2"], "kv", "put", "shared", "later")
        SENT.append(done.payload_hash)
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await pcs["org3"].receive(CH, done.payload_hash)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        before, boxes = ciphertext(path, "org2", done.payload_hash)
        assert boxes == 3  # Org1, Org2, the auditor
        # only the sending node may add recipients
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await pcs["org2"].add_recipients(CH, done.payload_hash, ["Org3"])
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert await pcs["org1"].add_recipients(CH, done.payload_hash, ["Org3"]) == 4
        plaintext = await pcs["org3"].receive(CH, done.payload_hash)
        assert b"later" in plaintext
        for org in ("org1", "org2", "org3", "regulator"):  # every copy: same ciphertext, 4 boxes
            assert ciphertext(path, org, done.payload_hash) == (before, 4)
        # the new party executes it into its private state when it re-derives
        report = await pcs["org3"].recover(CH)
        assert report.recovered == 0 and report.re_executed == 1
        assert pstate(path, "org3") == {("kv", "shared"): b"later"}
    finally:
        await close(pcs)


def ciphertext(net: Path, org: str, digest: bytes) -> tuple[bytes, int]:
    db = private_db(net, org)
    try:
        data = db.execute("SELECT data FROM payloads WHERE hash=?", (digest,)).fetchone()[0]
    finally:
        db.close()
    payload = private_payload_pb2.EncryptedPayload.FromString(data)
    return payload.ciphertext, len(payload.recipient_boxes)


def stored_hashes(net: Path, org: str) -> set[bytes]:
    db = private_db(net, org)
    try:
        return {bytes(r[0]) for r in db.execute("SELECT hash FROM payloads")}
    finally:
        db.close()


def ledger_private_hashes(net: Path, org: str) -> set[bytes]:
    path = net / "nodes" / f"peer0.{org}" / "data" / f"{CH}.peer.sqlite"
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        blocks = [block_pb2.Block.FromString(r[0]) for r in db.execute("SELECT data FROM blocks")]
    finally:
        db.close()
    return {digest for block in blocks for _, _, digest in private_txs(block)}


def tamper_stored_payload(net: Path, org: str, digest: bytes) -> None:
    db = sqlite3.connect(net / "nodes" / f"peer0.{org}" / "data" / f"{CH}.private.sqlite")
    data = db.execute("SELECT data FROM payloads WHERE hash=?", (digest,)).fetchone()[0]
    payload = private_payload_pb2.EncryptedPayload.FromString(data)
    payload.ciphertext = bytes([payload.ciphertext[0] ^ 1]) + payload.ciphertext[1:]
    db.execute("UPDATE payloads SET data=? WHERE hash=?", (payload.SerializeToString(), digest))
    db.commit()
    db.close()


# --- agreement before commit (channel `deals`, docs/privacy.md) ----------------------------

DEALS = "deals"


def deals_pstate(net: Path, org: str) -> dict[str, bytes]:
    path = net / "nodes" / f"peer0.{org}" / "data" / f"{DEALS}.private.sqlite"
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {r[0]: bytes(r[1]) for r in db.execute("SELECT key, value FROM pstate")}
    finally:
        db.close()


async def wait_deals_state(net: Path, org: str, key: str, value: bytes) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while deals_pstate(net, org).get(key) != value:
        assert loop.time() < deadline, f"{org} did not execute the put of {key}"
        await asyncio.sleep(0.1)


async def order_with(
    pc: PrivacyClient, digest: bytes, agreements: list[private_agreement_pb2.PrivateAgreement]
) -> tuple[str, grpc.aio.AioRpcError | None]:
    """Submit a private tx carrying `agreements` (collected by the caller for a new nonce)."""
    nonce, tx_id = pc.new_nonce()
    envelope, _ = pc.private_envelope(DEALS, digest, agreements, nonce)
    try:
        await pc.client.submit(envelope)
    except grpc.aio.AioRpcError as exc:
        return tx_id, exc
    return tx_id, None


async def test_agreement_before_commit_refuses_what_is_not_agreed(
    net: tuple[Path, Supervisor],
) -> None:
    path, _ = net
    pcs = await clients(path)
    try:
        done = await pcs["org1"].submit_private(DEALS, ["Org2"], "kv", "put", "deal", "v1")
        for org in ORGS:  # every node, recipients or not, records the same code
            status = await pcs[org].client.commit_status(DEALS, done.tx_id)
            assert status.result == VALID, org
        for org in ("org1", "org2", "regulator"):
            await wait_deals_state(path, org, "deal", b"v1")
        # missing, replayed: refused at the gateway, nothing ordered
        invocation = private_payload_pb2.PrivateInvocation(
            contract="kv", function="put", args=[b"deal", b"v2"]
        )
        digest = (
            await pcs["org1"].send(DEALS, invocation.SerializeToString(), ["Org2"])
        ).payload_hash
        _, missing = await order_with(pcs["org1"], digest, [])
        assert missing is not None and reason_of(missing) == "PRIVATE_AGREEMENT_MISSING"
        _, other_tx = pcs["org1"].new_nonce()
        collected = await pcs["org1"].collect_agreements(DEALS, digest, other_tx)
        assert collected.agreed and len(collected.agreements) == 3  # Org1, Org2, the auditor
        _, replayed = await order_with(pcs["org1"], digest, list(collected.agreements))
        assert replayed is not None and reason_of(replayed) == "PRIVATE_AGREEMENT_WRONG_TX"
    finally:
        await close(pcs)


async def test_agree_batch_answers_each_proposal_alone(net: tuple[Path, Supervisor]) -> None:
    """AgreeBatch (what a sending node's gathered asks use): one signed call, a verdict or a
    refusal per proposal, so a payload not held refuses only its own item; the whole batch is
    refused for a bad signature or a malformed item, and a non-recipient gets no verdict."""
    path, sup = net
    A = private_agreement_pb2
    pcs = await clients(path)
    stub, signer, channel = node_stub(path, "peer0.org1", "peer0.org2", sup)
    stub3, signer3, channel3 = node_stub(path, "peer0.org3", "peer0.org2", sup)
    try:
        invocation = private_payload_pb2.PrivateInvocation(
            contract="kv", function="put", args=[b"batched", b"b1"]
        )
        sent = await pcs["org1"].send(DEALS, invocation.SerializeToString(), ["Org2"])
        _, tx_id = pcs["org1"].new_nonce()
        collected = await pcs["org1"].collect_agreements(DEALS, sent.payload_hash, tx_id)
        assert collected.agreed  # asked through AgreeBatch by peer0.org1
        mine = A.PrivateAgreementBody.FromString(collected.agreements[0].body)

        def request(
            who: SigningIdentity, queries: list[A.AgreeQuery], sign_over: bytes | None = None
        ) -> A.AgreeBatchRequest:
            batch = A.AgreeBatchQuery(
                channel_id=DEALS, requester=who.identity_bytes, queries=queries
            )
            batch.timestamp.GetCurrentTime()
            data = batch.SerializeToString()
            return A.AgreeBatchRequest(query=data, signature=who.sign(sign_over or data))

        def proposal(digest: bytes, pre: bytes, delta: bytes, cid: str = "") -> A.AgreeQuery:
            return A.AgreeQuery(
                channel_id=cid,
                payload_hash=digest,
                tx_id=tx_id,
                pre_state_hash=pre,
                delta_hash=delta,
            )

        honest = proposal(sent.payload_hash, mine.pre_state_hash, mine.delta_hash)
        unknown = proposal(os.urandom(32), mine.pre_state_hash, mine.delta_hash)
        wrong = proposal(sent.payload_hash, bytes(32), bytes(32))
        reply = await stub.AgreeBatch(request(signer, [honest, unknown, wrong]), timeout=20)
        assert len(reply.results) == 3
        first, second, third = reply.results
        body = A.PrivateAgreementBody.FromString(first.agreement.body)
        assert body.verdict == A.AGREEMENT_VERDICT_AGREE and body.tx_id == tx_id
        assert (body.pre_state_hash, body.delta_hash) == (mine.pre_state_hash, mine.delta_hash)
        assert not second.HasField("agreement")
        assert second.reason == errors_pb2.ERROR_REASON_PAYLOAD_NOT_HELD  # node to node
        body = A.PrivateAgreementBody.FromString(third.agreement.body)
        assert body.verdict == A.AGREEMENT_VERDICT_DISAGREE  # its own hashes, signed
        assert (body.pre_state_hash, body.delta_hash) == (mine.pre_state_hash, mine.delta_hash)
        # Org3's node is a peer of the channel but no recipient: no verdict for it
        reply = await stub3.AgreeBatch(request(signer3, [honest]), timeout=20)
        assert not reply.results[0].HasField("agreement")
        assert reply.results[0].reason == errors_pb2.ERROR_REASON_NOT_AUTHORIZED
        # refused as a whole: a bad signature, an item naming another channel, no item
        cases = [
            (request(signer, [honest], sign_over=b"else"), "PERMISSION_DENIED", "BAD_SIGNATURE"),
            (
                request(signer, [honest, proposal(sent.payload_hash, b"", b"", CH)]),
                "INVALID_ARGUMENT",
                "INVALID_FIELD",
            ),
            (request(signer, []), "INVALID_ARGUMENT", "MISSING_FIELD"),
        ]
        for bad, code, reason in cases:
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await stub.AgreeBatch(bad, timeout=20)
            assert (exc.value.code().name, reason_of(exc.value)) == (code, reason)
    finally:
        await channel.close(None)
        await channel3.close(None)
        await close(pcs)


async def test_collect_agreements_batch_answers_each_payload_alone(
    net: tuple[Path, Supervisor],
) -> None:
    """CollectAgreementsBatch (what the SDK's concurrent private transactions use): one signed
    call, the agreements or a refusal per payload; refused whole when signed by a client of
    another organisation; the SDK gives a refused item's caller CollectAgreements' own error."""
    path, _ = net
    A = private_agreement_pb2
    pcs = await clients(path)
    try:
        digests = []
        for value in (b"c1", b"c2"):
            invocation = private_payload_pb2.PrivateInvocation(
                contract="kv", function="put", args=[b"collected-" + value, value]
            )
            sent = await pcs["org1"].send(DEALS, invocation.SerializeToString(), ["Org2"])
            digests.append(sent.payload_hash)
        tx_ids = [pcs["org1"].new_nonce()[1] for _ in range(3)]
        stranger = os.urandom(32)  # no payload this node sent

        def request(
            pc: PrivacyClient, items: list[tuple[bytes, str]]
        ) -> A.CollectAgreementsBatchRequest:
            query, signature = pc.client.signed_query(
                A.CollectAgreementsBatchQuery(
                    channel_id=DEALS,
                    queries=[A.CollectAgreementsQuery(payload_hash=d, tx_id=t) for d, t in items],
                )
            )
            return A.CollectAgreementsBatchRequest(query=query, signature=signature)

        items = [(digests[0], tx_ids[0]), (stranger, tx_ids[1]), (digests[1], tx_ids[2])]
        reply = await pcs["org1"].stub.CollectAgreementsBatch(request(pcs["org1"], items))
        first, second, third = reply.results
        for result, tx_id in ((first, tx_ids[0]), (third, tx_ids[2])):
            assert result.response.agreed and len(result.response.agreements) == 3
            bodies = [A.PrivateAgreementBody.FromString(a.body) for a in result.response.agreements]
            assert {b.tx_id for b in bodies} == {tx_id}
        assert not second.HasField("response")
        assert second.reason == errors_pb2.ERROR_REASON_NOT_AUTHORIZED
        # collected together, so signed per batch (the channel's private_agreement_batches):
        # each party signed both payloads' agreements once, each carries its proof
        signatures: dict[bytes, set[bytes]] = {}
        for result in (first, third):
            for a in result.response.agreements:
                assert a.HasField("batch_proof") and a.batch_proof.leaf_count == 2
                signatures.setdefault(a.signer, set()).add(a.signature)
        assert len(signatures) == 3 and all(len(s) == 1 for s in signatures.values())
        # signed by Org2's client (on Org1's TLS connection): the whole batch is refused
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await pcs["org1"].stub.CollectAgreementsBatch(request(pcs["org2"], items))
        assert (exc.value.code(), reason_of(exc.value)) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "TLS_IDENTITY_MISMATCH",
        )
        # through the SDK, concurrently: the good ones collected, the stranger's caller alone
        # gets CollectAgreements' own error
        good, bad = await asyncio.gather(
            pcs["org1"].collect_coalesced(DEALS, digests[0], pcs["org1"].new_nonce()[1]),
            pcs["org1"].collect_coalesced(DEALS, stranger, pcs["org1"].new_nonce()[1]),
            return_exceptions=True,
        )
        assert isinstance(good, A.CollectAgreementsResponse) and good.agreed
        assert isinstance(bad, grpc.aio.AioRpcError) and reason_of(bad) == "NOT_AUTHORIZED"
    finally:
        await close(pcs)


def _private_of(envelope: bytes) -> tuple[str, transaction_pb2.PrivateTransaction]:
    """(tx_id, private transaction data) of a committed envelope ("" for another kind)."""
    payload = common_pb2.Payload.FromString(common_pb2.Envelope.FromString(envelope).payload)
    header = common_pb2.Header.FromString(payload.header)
    if header.type != common_pb2.HEADER_TYPE_PRIVATE_TRANSACTION:
        return "", transaction_pb2.PrivateTransaction()
    return header.tx_id, transaction_pb2.PrivateTransaction.FromString(payload.data)


async def test_concurrent_private_transactions_share_agreement_calls(
    net: tuple[Path, Supervisor],
) -> None:
    """Concurrent private transactions collect their agreements in shared calls: fewer
    SendBatch calls at the sender's node (which collect the agreements too: no
    CollectAgreements(Batch) call at all) than transactions, and no Agree or AgreeBatch call
    at any recipient: each answered its agreements on the Push that delivered the payloads
    (`PushBatch.agree_tx_ids`; the node's own metrics say so), and every transaction commits
    VALID (the pushed answers' signatures hold at every peer) and executes. They are
    submitted on the gateway's Transact stream: no unary Submit or CommitStatus call at the
    gateway."""
    path, sup = net
    rpc = "dltmw_rpc_requests_total"
    svc = "dltmw.v1.PrivacyManagerService"
    gateway = "dltmw.v1.GatewayService"

    def calls(node: str) -> dict[str, float]:
        samples = scrape(sup.operations_address(node) or "")
        out = {
            m: value(samples, rpc, service=svc, method=m, code="OK")
            for m in (
                "SendBatch",
                "CollectAgreements",
                "CollectAgreementsBatch",
                "Agree",
                "AgreeBatch",
            )
        }
        for m in ("Submit", "CommitStatus"):  # unary calls that ended with any code
            out[m] = sum(
                v
                for (name, labels), v in samples.items()
                if name == rpc and {("service", gateway), ("method", m)} <= labels
            )
        return out

    n = 40
    nodes = ("peer0.org1", "peer0.org2", "peer0.regulator")
    before = {node: await asyncio.to_thread(calls, node) for node in nodes}
    pcs = await clients(path)
    try:
        done = await asyncio.gather(
            *(
                pcs["org1"].submit_private(DEALS, ["Org2"], "kv", "put", f"many-{i}", "v")
                for i in range(n)
            )
        )
        assert {d.status.result for d in done} == {VALID}
        await wait_deals_state(path, "org2", f"many-{n - 1}", b"v")
        # their agreements were signed per batch (one signature, a proof each) and hold at
        # every peer: the commit rule of core/privacy/agreement_batch.py on real processes
        for batched in await _batched_agreements_everywhere(path, {d.tx_id for d in done}):
            assert len({a.signature for a in batched}) < len(batched)  # shared signatures
        # ...and their envelopes were signed per Transact request (private_creator_batches):
        # VALID on every peer with a proof, fewer creator signatures than transactions
        for sealed in _creator_batched_everywhere(path, {d.tx_id for d in done}):
            assert len({e.signature for e in sealed}) < len(sealed)
    finally:
        await close(pcs)
    after = {node: await asyncio.to_thread(calls, node) for node in nodes}
    delta = {node: {m: after[node][m] - before[node][m] for m in after[node]} for node in nodes}
    sender = delta["peer0.org1"]
    assert sender["CollectAgreements"] == 0 and sender["CollectAgreementsBatch"] == 0
    assert 1 <= sender["SendBatch"] < n
    for recipient in ("peer0.org2", "peer0.regulator"):
        assert delta[recipient]["Agree"] == 0 and delta[recipient]["AgreeBatch"] == 0, recipient
    assert sender["Submit"] == 0 and sender["CommitStatus"] == 0


async def test_a_push_that_asks_is_answered_with_a_signed_agreement(
    net: tuple[Path, Supervisor],
) -> None:
    """A Push naming a tx_id for its payload (`PushBatch.agree_tx_ids`) is answered, once
    stored, with the recipient's AGREE on its own hashes for that transaction, signed by the
    recipient's identity; agree_tx_ids of another length than the payloads is INVALID_FIELD
    and stores nothing."""
    path, sup = net
    stub, signer, channel = node_stub(path, "peer0.org3", "peer0.org2", sup)
    sealed = org3_sealed_for_org2(path, [b"asked-on-push", b"v"])
    digest = payload_hash(sealed)
    keys = [privacy_key(path, "peer0.org2").public_key, privacy_key(path, "peer0.org3").public_key]

    def request(tx_ids: list[str]) -> P.PushRequest:
        batch = P.PushBatch(
            channel_id=DEALS,
            requester=signer.identity_bytes,
            payloads=[sealed],
            payload_hashes=[digest],
            agree_tx_ids=tx_ids,
        )
        batch.timestamp.GetCurrentTime()
        data = batch.SerializeToString()
        return P.PushRequest(batch=data, signature=signer.sign(data))

    try:
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            async for _ in stub.Push(iter([request(["t1", "t2"])]), timeout=20):
                pass
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert reason_of(bad.value) == "INVALID_FIELD"
        assert stored_payload(path, "org2", digest) is None
        replies = [r async for r in stub.Push(iter([request(["tx-on-push"])]), timeout=20)]
    finally:
        await channel.close(None)
    (reply,) = replies
    assert reply.stored == 1 and len(reply.agreements) == 1
    agreement = reply.agreements[0].agreement
    body = private_agreement_pb2.PrivateAgreementBody.FromString(agreement.body)
    assert (body.channel_id, body.tx_id, body.payload_hash) == (DEALS, "tx-on-push", digest)
    assert body.verdict == private_agreement_pb2.AGREEMENT_VERDICT_AGREE
    assert sorted(body.recipient_keys) == sorted(keys)
    home = path / "nodes" / "peer0.org2"
    org2 = SigningIdentity.from_pem(
        "Org2", (home / "identity.pem").read_bytes(), (home / "identity.key").read_bytes()
    )
    assert agreement.signer == reference_bytes(org2.identity_bytes)  # (identity_references)
    signed = agreement_batch.signed_data(agreement, True)
    assert signed is not None
    cert = x509.load_der_x509_certificate(org2.certificate_der)
    verify_signature(cert.public_key(), signed, agreement.signature)  # type: ignore[arg-type]


def _creator_batched_everywhere(path: Path, ours: set[str]) -> list[list[common_pb2.Envelope]]:
    """Per member peer, the envelopes of the private txs `ours` that carry a creator batch
    proof (`core/creator_batch.py`); every one of `ours` is on each peer (the caller waited)."""
    out = []
    for node in ("peer0.org1", "peer0.org2", "peer0.org3"):
        chain = ledger_blocks(ledger_path(path, node, DEALS))
        found = [
            common_pb2.Envelope.FromString(raw)
            for block in chain[1:]
            for raw in block.data.envelopes
            if _private_of(raw)[0] in ours
        ]
        assert len(found) == len(ours), node
        out.append([e for e in found if e.HasField("batch_proof")])
    return out


def _deals_agreements(
    path: Path, node: str, ours: set[str]
) -> list[tuple[int, private_agreement_pb2.PrivateAgreement]]:
    """(validation code, agreement) of every agreement of the private txs `ours` on `node`."""
    chain = ledger_blocks(ledger_path(path, node, DEALS))
    return [
        (code, a)
        for block in chain[1:]
        for raw, code in zip(block.data.envelopes, block.metadata.validation_codes, strict=True)
        if (tx := _private_of(raw))[0] in ours
        for a in tx[1].agreements
    ]


async def _batched_agreements_everywhere(
    path: Path, ours: set[str]
) -> list[list[private_agreement_pb2.PrivateAgreement]]:
    """Per member peer, the agreements of the private txs `ours` that carry a batch proof, once
    every peer holds what org1's peer (the gateway the statuses came from) holds; every tx's
    agreements are on each peer and VALID there."""
    await _caught_up(path, ledger_height(ledger_path(path, "peer0.org1", DEALS)))
    out = []
    for node in ("peer0.org1", "peer0.org2", "peer0.org3"):
        found = _deals_agreements(path, node, ours)
        assert len(found) >= len(ours) and {code for code, _ in found} == {VALID}
        out.append([a for _, a in found if a.HasField("batch_proof")])
    return out


async def _set_agreement_batches(
    path: Path, tmp: Path, on: bool, what: str = "private-agreement-batches"
) -> None:
    """A config update of `deals` by 3 of its 4 members' admins (the MAJORITY admin policy)
    with the `dltmw channel update` command (`--[no-]<what>`); returns once every member peer
    committed it."""
    net, flag = str(path), f"--{what}" if on else f"--no-{what}"
    upd = str(tmp / f"{what}-{on}.update")
    await asyncio.to_thread(
        dltmw, "channel", "update", net, DEALS, flag, "-o", upd, "-c", "admin.org1"
    )
    for admin in ("admin.org1", "admin.org2", "admin.org3"):
        await asyncio.to_thread(dltmw, "channel", "update", net, DEALS, "--sign", upd, "-c", admin)
    said = await asyncio.to_thread(
        dltmw, "channel", "update", net, DEALS, "--submit", upd, "-c", "admin.org1"
    )
    assert " VALID in block " in said, said
    at = int(said.split(" VALID in block ")[1].split()[0])
    await _caught_up(path, at + 1)  # agreements are signed under the signer's latest config


async def _caught_up(path: Path, height: int) -> None:
    """Until every member peer holds `height` blocks of `deals` (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    for org in ORGS:
        while ledger_height(ledger_path(path, f"peer0.{org}", DEALS)) < height:
            assert loop.time() < deadline, f"peer0.{org} did not reach block {height - 1}"
            await asyncio.sleep(0.1)


async def test_agreement_batches_turned_off_and_on_by_a_config_update(
    net: tuple[Path, Supervisor], tmp_path: Path
) -> None:
    """`dltmw channel update --no-private-agreement-batches` on a running channel: from the
    config block on, parties sign each agreement alone (no batch proof anywhere) and every
    transaction stays VALID on every peer; `--private-agreement-batches` turns batch
    signatures back on (shared signatures again)."""
    path, _ = net
    pcs = await clients(path)
    try:
        for on in (False, True):
            await _set_agreement_batches(path, tmp_path, on)
            done = await asyncio.gather(
                *(
                    pcs["org1"].submit_private(DEALS, ["Org2"], "kv", "put", f"b{on}-{i}", "v")
                    for i in range(30)
                )
            )
            assert {d.status.result for d in done} == {VALID}
            for batched in await _batched_agreements_everywhere(path, {d.tx_id for d in done}):
                if on:
                    assert len({a.signature for a in batched}) < len(batched)
                else:
                    assert batched == []
    finally:
        await close(pcs)


async def test_private_creator_batches_turned_off_refuse_proofs_and_the_sdk_signs_alone(
    net: tuple[Path, Supervisor], tmp_path: Path
) -> None:
    """`dltmw channel update --no-private-creator-batches`: a client that still believes the
    channel takes its private envelopes' batch proofs (it read the genesis config) is refused
    with CREATOR_BATCH_REFUSED before anything is ordered, signs that channel's private
    envelopes alone from then on, and every transaction commits VALID with no proof;
    `--private-creator-batches` turns them back on for a client that connects afterwards."""
    path, _ = net
    try:
        await _set_agreement_batches(path, tmp_path, False, "private-creator-batches")
        pcs = await clients(path)
        try:
            signing = pcs["org1"].client.signing
            assert signing.batches_on(DEALS, private=True)
            done = await asyncio.gather(
                *(
                    pcs["org1"].submit_private(DEALS, ["Org2"], "kv", "put", f"alone-{i}", "v")
                    for i in range(20)
                )
            )
            assert {d.status.result for d in done} == {VALID}
            assert not signing.batches_on(DEALS, private=True)
            assert signing.batches_on(DEALS)  # the endorser transactions' setting stays
            await _caught_up(path, ledger_height(ledger_path(path, "peer0.org1", DEALS)))
            assert _creator_batched_everywhere(path, {d.tx_id for d in done}) == [[], [], []]
        finally:
            await close(pcs)
    finally:
        await _set_agreement_batches(path, tmp_path, True, "private-creator-batches")


async def test_a_tampered_recipient_disagrees_and_the_tx_is_invalid_everywhere(
    net: tuple[Path, Supervisor],
) -> None:
    path, _ = net
    await wait_deals_state(path, "org2", "deal", b"v1")
    # an insider of Org2 rewrites its private state in place, while the node runs
    db = sqlite3.connect(
        path / "nodes" / "peer0.org2" / "data" / f"{DEALS}.private.sqlite", timeout=30
    )
    db.execute("UPDATE pstate SET value=? WHERE key='deal'", (b"forged",))
    db.commit()
    db.close()
    pcs = await clients(path)
    try:
        invocation = private_payload_pb2.PrivateInvocation(
            contract="kv", function="put", args=[b"deal", b"v3"]
        )
        sent = await pcs["org1"].send(DEALS, invocation.SerializeToString(), ["Org2"])
        nonce, tx_id = pcs["org1"].new_nonce()
        collected = await pcs["org1"].collect_agreements(DEALS, sent.payload_hash, tx_id)
        assert not collected.agreed
        envelope, _ = pcs["org1"].private_envelope(
            DEALS, sent.payload_hash, collected.agreements, nonce
        )
        await pcs["org1"].client.submit(envelope)  # a disagreement is ordered, as evidence
        for org in ORGS:
            status = await pcs[org].client.commit_status(DEALS, tx_id)
            assert status.result == transaction_pb2.TX_VALIDATION_CODE_PRIVATE_AGREEMENT_DISAGREED
        # nothing executed: the honest parties keep the agreed value
        assert await pcs["org1"].receive(DEALS, sent.payload_hash)
        for org in ("org1", "regulator"):
            assert deals_pstate(path, org)["deal"] == b"v1"
    finally:
        await close(pcs)


async def test_tamper_detected_and_lost_store_recovered(net: tuple[Path, Supervisor]) -> None:
    path, sup = net
    assert len(SENT) == 4, "runs after the tests above"
    # a payload altered in Org2's store is detected there
    tamper_stored_payload(path, "org2", SENT[0])
    pcs = await clients(path)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await pcs["org2"].receive(CH, SENT[0])
        assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert reason_of(exc.value) == "PAYLOAD_HASH_MISMATCH"
    finally:
        await close(pcs)
    # Org1 loses its private store
    sup.stop("peer0.org1")
    for suffix in ("", "-wal", "-shm"):
        (path / "nodes" / "peer0.org1" / "data" / f"{CH}.private.sqlite{suffix}").unlink(
            missing_ok=True
        )
    sup.start("peer0.org1")
    sup.wait_ready("peer0.org1", 60)
    pcs = await clients(path)
    try:
        report = await pcs["org1"].recover(CH)
        assert report.peers_answered == 3
        # refused: Org2's altered copy of SENT[0] (not the ledger's hash) and the batch items
        for digest in SENT:
            assert ptx_status(path, "org1", digest) == P.PRIVATE_TX_STATUS_EXECUTED
            assert MARKER in await pcs["org1"].receive(CH, SENT[0])
        assert pstate(path, "org1") == pstate(path, "regulator")
        assert pstate(path, "org1")[("kv", "secret")] == pstate(path, "org2")[("kv", "secret")]
        # every payload it now holds is a private transaction on its own ledger (the batch items
        # that were sent but never ordered were offered too, and refused)
        stored = stored_hashes(path, "org1")
        assert set(SENT) <= stored <= ledger_private_hashes(path, "org1")
        assert report.refused >= 1 + 3
        assert pstate(path, "org1")[("bank", "acct")] == b"110"
        check = await pcs["org1"].validate(CH, SENT[2])
        assert {p.node_id: p.matches for p in check.parties} == {
            "peer0.org2": False,
            "peer0.regulator": True,
        }
    finally:
        await close(pcs)


# --- verifiable purge (docs/privacy.md "Purge") ---------------------------------------------

PURGE_CANARY = os.urandom(32)
MEMBERS = ("org1", "org2", "regulator")  # the recipients of the purged payload


def member_files(net: Path) -> list[Path]:
    """Every file of every member node (keys, ledgers, sqlite with -wal/-shm) and its logs."""
    logs = [p for o in MEMBERS for p in sorted((net / "run" / "logs").glob(f"peer0.{o}.*"))]
    return files_under(*(net / "nodes" / f"peer0.{o}" for o in MEMBERS)) + logs


def stored_payload(net: Path, org: str, digest: bytes) -> bytes | None:
    db = private_db(net, org)
    try:
        row = db.execute("SELECT data FROM payloads WHERE hash=?", (digest,)).fetchone()
        return None if row is None else bytes(row[0])
    finally:
        db.close()


async def until_purged(net: Path, needles: list[bytes], timeout_s: float = 30) -> dict[str, int]:
    """Scan every member file until no needle is left (the WAL checkpoint follows the purge's
    commit); returns what is still found at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        found = {k: v for n in needles for k, v in occurrences(member_files(net), n).items()}
        if not found or loop.time() > deadline:
            return found
        await asyncio.sleep(0.2)


async def test_purge_removes_the_canary_from_every_member_file(
    net: tuple[Path, Supervisor],
) -> None:
    path, sup = net
    pcs = await clients(path)
    keys = [
        load_privacy_key((path / "nodes" / f"peer0.{o}" / "privacy.key").read_bytes()).public_key
        for o in MEMBERS
    ]
    try:
        done = await pcs["org1"].submit_private(CH, ["Org2"], "kv", "put", "purgeme", PURGE_CANARY)
        digest = done.payload_hash
        for org in MEMBERS:
            assert await wait_status(path, org, digest) == P.PRIVATE_TX_STATUS_EXECUTED
        raw = stored_payload(path, "org2", digest)
        assert raw is not None
        fragment = private_payload_pb2.EncryptedPayload.FromString(raw).ciphertext[:24]
        (audited,) = await audit_network(path, CH)  # earlier tests left findings on purpose
        # the scan's own control: every member holds both canaries before the purge
        for needle in (PURGE_CANARY, fragment):
            found = occurrences(member_files(path), needle)
            assert {o for o in MEMBERS if any(f"peer0.{o}" in k for k in found)} == set(MEMBERS)

        def purge_for(creator: str, approvers: list[str]) -> tuple[bytes, bytes, list[object]]:
            nonce, tx_id = pcs[creator].new_nonce()
            body = purge_body(CH, tx_id, [digest], [("kv", "purgeme")], keys)
            return nonce, body, [approve(pcs[o].client.signer, body) for o in approvers]

        # a non-member (Org3) cannot purge, alone or besides the recipients: nothing changes
        for approvers in (["org3"], ["org1", "org2", "regulator", "org3"]):
            nonce, body, approvals = purge_for("org3", approvers)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await submit_purge(pcs["org3"], CH, body, approvals, nonce)  # type: ignore[arg-type]
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert reason_of(refused.value) == "PRIVATE_PURGE_NOT_AUTHORIZED"
        assert PURGE_CANARY in await pcs["org2"].receive(CH, digest)
        assert all(pstate(path, o)[("kv", "purgeme")] == PURGE_CANARY for o in MEMBERS)
        # every recipient's organisation approves: purged on every member
        nonce, body, approvals = purge_for("org1", ["org1", "org2", "regulator"])
        status = await submit_purge(pcs["org1"], CH, body, approvals, nonce)  # type: ignore[arg-type]
        assert status.result == VALID
        assert await until_purged(path, [PURGE_CANARY, fragment]) == {}
        for org in MEMBERS:
            assert ("kv", "purgeme") not in pstate(path, org)
            assert stored_payload(path, org, digest) is None
            with pytest.raises(grpc.aio.AioRpcError):
                await pcs[org].receive(CH, digest)
        # `dltmw audit` still verifies every chain and names the purged transaction
        (report,) = await audit_network(path, CH)
        kinds = {(f.node_id, f.what) for f in report.findings}
        assert kinds == {(f.node_id, f.what) for f in audited.findings}  # Org2's tamper only
        assert {n for n, _ in kinds} <= {"peer0.org2"} and report.unreachable == {}
        assert not any(digest.hex()[:16] in f.detail for f in report.findings)
        assert audited.purged == [] and report.purged == [digest.hex()]
        # its sender pushing it again, or a recovery, does not bring it back
        stub, signer, channel = node_stub(path, "peer0.org1", "peer0.org2", sup)
        try:
            batch = P.PushBatch(
                channel_id=CH,
                requester=signer.identity_bytes,
                payloads=[private_payload_pb2.EncryptedPayload.FromString(raw)],
                payload_hashes=[digest],
            )
            batch.timestamp.GetCurrentTime()
            data = batch.SerializeToString()
            async for _ in stub.Push(
                iter([P.PushRequest(batch=data, signature=signer.sign(data))]), timeout=20
            ):
                pass  # acknowledged (the sender needs no retry), not stored
        finally:
            await channel.close(None)
        assert stored_payload(path, "org2", digest) is None
        await pcs["org1"].recover(CH)
        assert stored_payload(path, "org2", digest) is None
        assert stored_payload(path, "org1", digest) is None
        assert await until_purged(path, [PURGE_CANARY, fragment], 0) == {}
    finally:
        await close(pcs)


# --- concurrent private writes to one key (docs/privacy.md "Concurrent private writes") -----


def deals_ptx_statuses(net: Path, org: str) -> dict[bytes, int]:
    path = net / "nodes" / f"peer0.{org}" / "data" / f"{DEALS}.private.sqlite"
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {bytes(r[0]): int(r[1]) for r in db.execute("SELECT payload_hash, status FROM ptxs")}
    finally:
        db.close()


async def test_concurrent_private_puts_on_one_key_are_valid_or_conflict(
    net: tuple[Path, Supervisor],
) -> None:
    path, _ = net
    pcs = await clients(path)
    try:
        done = await asyncio.gather(
            *(
                pcs["org1"].submit_private(DEALS, ["Org2"], "kv", "put", "hot", f"v{i}")
                for i in range(20)
            )
        )
    finally:
        await close(pcs)
    codes = [d.status.result for d in done]
    conflict = transaction_pb2.TX_VALIDATION_CODE_PRIVATE_STATE_CONFLICT
    assert set(codes) <= {VALID, conflict}, codes
    assert VALID in codes
    print(f"20 puts on one key: {codes.count(VALID)} VALID, {codes.count(conflict)} conflict")
    last = max(
        (d for d in done if d.status.result == VALID),
        key=lambda d: (d.status.block_number, d.status.tx_index),
    )
    members = ("org1", "org2", "regulator")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    for org in members:  # every VALID one executed at every recipient; no STALE anywhere
        while True:
            statuses = deals_ptx_statuses(path, org)
            valid = [d for d in done if d.status.result == VALID]  # the others run nowhere
            if all(d.payload_hash in statuses for d in valid) or loop.time() > deadline:
                break
            await asyncio.sleep(0.1)
        for d in done:
            status = statuses.get(d.payload_hash)
            if d.status.result == VALID:
                assert status == P.PRIVATE_TX_STATUS_EXECUTED, (org, d.tx_id, status)
            assert status != P.PRIVATE_TX_STATUS_STALE, (org, d.tx_id)
        await wait_deals_state(path, org, "hot", b"v%d" % done.index(last))
