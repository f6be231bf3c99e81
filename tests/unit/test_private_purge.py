"""Verifiable purge (core/privacy/purge.py, ledger/private_purge.py): the commit rule every node
applies, admission's refusals, what a named node removes (in block order with private
transactions), and that the removed bytes are gone from the sqlite files (main, -wal)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from private_backends import PrivateSite

from dltmw.client.purge import approve, purge_body
from dltmw.contracts import builtin_contract
from dltmw.core.channel import ChannelView, channel_view
from dltmw.core.errors import ClientError
from dltmw.core.hashing import compute_tx_id
from dltmw.core.identity import SigningIdentity
from dltmw.core.privacy import purge as pg
from dltmw.core.privacy.blocks import PrivateBlock, PrivateEffects, PrivateTxRef
from dltmw.core.privacy.envelope import PrivacyKey, payload_hash, recipients_of, seal
from dltmw.core.txcheck import check_envelope, check_transaction
from dltmw.ledger import private_purge
from dltmw.ledger.private_pg import PgPrivateStore
from dltmw.ledger.private_store import NewPayload, PrivateStore
from dltmw.pki.ca import FRESH, issue_cert, make_ca
from dltmw.rpc.status import CODE_OF_REASON
from dltmw.runtime.roles.privacy.executor import BlockExecutor, PrivateExecutor
from dltmw.runtime.roles.privacy.private_channel import PrivateChannel
from dltmw.v1 import common_pb2, config_pb2, private_payload_pb2, private_purge_pb2
from dltmw.v1 import privacy_manager_service_pb2 as P
from dltmw.v1 import transaction_pb2 as C

CHANNEL = "trades"
NOW = datetime.now(UTC)
AT_NOW = replace(FRESH, now=lambda: NOW)  # certificates issued at NOW, whenever a test runs
NONCE = b"n" * 24
HASH = bytes(range(32))
KEYS = [PrivacyKey(bytes([i + 1]) * 32) for i in range(3)]  # peer0 Org1, peer1/peer2 Org2
Net = tuple[ChannelView, SigningIdentity, dict[str, SigningIdentity]]


@pytest.fixture(scope="module")
def net() -> Net:
    cas = {org: make_ca(org, material=AT_NOW) for org in ("Org1", "Org2", "Org3", "OrdererOrg")}
    members = {}
    for org in ("Org1", "Org2", "Org3"):
        cert = issue_cert(cas[org], org, f"admin.{org}", "client", material=AT_NOW)
        members[org] = SigningIdentity.from_pem(org, cert.cert_pem, cert.key_pem)
    orderer = issue_cert(cas["OrdererOrg"], "OrdererOrg", "orderer0", "orderer", material=AT_NOW)
    orderer_id = SigningIdentity.from_pem("OrdererOrg", orderer.cert_pem, orderer.key_pem)
    peers = [
        config_pb2.NodeConfig(node_id=f"peer{i}", org_id=org, privacy_public_key=KEYS[i].public_key)
        for i, org in enumerate(["Org1", "Org2", "Org2"])
    ]
    config = config_pb2.ChannelConfig(
        channel_id=CHANNEL,
        organizations=[
            config_pb2.OrganizationConfig(org_id=o, root_certificate_pem=cas[o].cert_pem)
            for o in ("Org1", "Org2", "Org3")
        ],
        orderer_organizations=[
            config_pb2.OrganizationConfig(
                org_id="OrdererOrg", root_certificate_pem=cas["OrdererOrg"].cert_pem
            )
        ],
        orderers=[
            config_pb2.NodeConfig(
                node_id="orderer0", org_id="OrdererOrg", identity=orderer_id.identity_bytes
            )
        ],
        peers=peers,
        ordering=config_pb2.ORDERING_TYPE_NONE,
        batch=config_pb2.BatchConfig(max_tx_count=10, max_bytes=1 << 20, timeout_ms=200),
    )
    return channel_view(config), members["Org3"], members


def tx_id_of(creator: SigningIdentity) -> str:
    return compute_tx_id(NONCE, creator.identity_bytes)


def envelope(creator: SigningIdentity, data: bytes) -> bytes:
    header = common_pb2.Header(
        type=common_pb2.HEADER_TYPE_PRIVATE_TRANSACTION,
        channel_id=CHANNEL,
        tx_id=tx_id_of(creator),
        creator=creator.identity_bytes,
        nonce=NONCE,
    )
    header.timestamp.FromDatetime(NOW)
    payload = common_pb2.Payload(header=header.SerializeToString(), data=data).SerializeToString()
    return common_pb2.Envelope(payload=payload, signature=creator.sign(payload)).SerializeToString()


def verdicts(n: Net, data: bytes) -> tuple[int, str]:
    """(commit code, admission refusal reason or "admitted") of a purge submitted by Org3."""
    view, creator, _ = n
    env = envelope(creator, data)
    code = check_transaction(env, view).code
    try:
        check_envelope(env, {CHANNEL: view}, NOW, 900)
    except ClientError as exc:
        return code, exc.reason_name
    return code, "admitted"


def purge(n: Net, approvers: list[str], **fields: object) -> bytes:
    """A purge of HASH from peer0 and peer1 (Org1, Org2), approved by `approvers`."""
    _, creator, members = n
    args: dict[str, object] = {
        "channel_id": CHANNEL,
        "tx_id": tx_id_of(creator),
        "payload_hashes": [HASH],
        "keys": [("kv", "canary")],
        "recipient_keys": [KEYS[0].public_key, KEYS[1].public_key],
        **fields,
    }
    body = purge_body(**args)  # type: ignore[arg-type]
    return pg.purge_data(body, [approve(members[o], body) for o in approvers])


def test_every_recipient_org_approving_is_valid_and_admitted(net: Net) -> None:
    assert verdicts(net, purge(net, ["Org1", "Org2"])) == (C.TX_VALIDATION_CODE_VALID, "admitted")


def _forged(n: Net) -> bytes:
    data = C.PrivateTransaction.FromString(purge(n, ["Org1", "Org2"]))
    other = purge(n, ["Org1", "Org2"], payload_hashes=[bytes(32)])
    data.purge.body = C.PrivateTransaction.FromString(other).purge.body
    return data.SerializeToString()


NOT_AUTHORIZED = (C.TX_VALIDATION_CODE_PRIVATE_PURGE_NOT_AUTHORIZED, "PRIVATE_PURGE_NOT_AUTHORIZED")
MALFORMED = (C.TX_VALIDATION_CODE_PRIVATE_PURGE_MALFORMED, "PRIVATE_PURGE_MALFORMED")
BAD_SIGNATURE = (C.TX_VALIDATION_CODE_PRIVATE_PURGE_BAD_SIGNATURE, "PRIVATE_PURGE_BAD_SIGNATURE")


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda n: purge(n, ["Org1"]), NOT_AUTHORIZED),
        (lambda n: purge(n, []), NOT_AUTHORIZED),
        (lambda n: purge(n, ["Org3"]), NOT_AUTHORIZED),  # a member, but owns no purged node
        (lambda n: purge(n, ["Org1", "Org2", "Org3"]), NOT_AUTHORIZED),
        (lambda n: purge(n, ["Org1"], recipient_keys=[KEYS[1].public_key]), NOT_AUTHORIZED),
        (_forged, BAD_SIGNATURE),
        (lambda n: purge(n, ["Org1", "Org2"], tx_id="other"), MALFORMED),
        (lambda n: purge(n, ["Org1", "Org2"], channel_id="other"), MALFORMED),
        (lambda n: purge(n, ["Org1", "Org2"], payload_hashes=[], keys=[]), MALFORMED),
        (lambda n: purge(n, ["Org1", "Org2"], payload_hashes=[b"short"]), MALFORMED),
        (lambda n: purge(n, ["Org1", "Org2"], keys=[("", "k")]), MALFORMED),
        (lambda n: purge(n, ["Org1", "Org2"], recipient_keys=[]), MALFORMED),
        (lambda n: purge(n, ["Org1", "Org2"], recipient_keys=[bytes(32)]), MALFORMED),
        (
            lambda n: purge(n, ["Org1", "Org2"], payload_hashes=[HASH] * (pg.TARGETS_MAX + 1)),
            MALFORMED,
        ),
    ],
    ids=[
        "one-owner-missing",
        "no-approval",
        "an-outsider-alone",
        "an-outsider-besides-the-owners",
        "an-org-that-owns-no-purged-node",
        "approval-over-another-body",
        "another-tx-id-replay",
        "another-channel",
        "names-nothing",
        "hash-not-32-bytes",
        "key-without-namespace",
        "no-recipient-keys",
        "key-of-no-channel-peer",
        "too-many-targets",
    ],
)
def test_refused_purges_get_their_code_and_reason(
    net: Net, make: object, expected: tuple[int, str]
) -> None:
    assert verdicts(net, make(net)) == expected  # type: ignore[operator]


def test_unsorted_recipient_keys_are_malformed(net: Net) -> None:
    _, creator, members = net
    body = private_purge_pb2.PrivatePurgeBody(
        channel_id=CHANNEL,
        tx_id=tx_id_of(creator),
        payload_hashes=[HASH],
        recipient_keys=sorted([KEYS[0].public_key, KEYS[1].public_key], reverse=True),
    ).SerializeToString()
    data = pg.purge_data(body, [approve(members[o], body) for o in ("Org1", "Org2")])
    assert verdicts(net, data) == MALFORMED


def test_a_purge_with_anything_else_in_clear_is_refused(net: Net) -> None:
    tx = C.PrivateTransaction.FromString(purge(net, ["Org1", "Org2"]))
    tx.payload_hash = HASH  # a payload and a purge in one transaction
    code, refused = verdicts(net, tx.SerializeToString())
    assert (code, refused) == (C.TX_VALIDATION_CODE_BAD_PAYLOAD, "INVALID_FIELD")
    assert pg.private_purge(tx.SerializeToString()) is None
    assert pg.private_purge(C.PrivateTransaction(payload_hash=HASH).SerializeToString()) is None


# --- one node's effects -------------------------------------------------------------------


def sealed(sender: PrivacyKey, to: list[PrivacyKey], fn: str, *args: str) -> NewPayload:
    inv = private_payload_pb2.PrivateInvocation(
        contract="bank", function=fn, args=[a.encode() for a in args]
    )
    p = seal(
        inv.SerializeToString(),
        sender,
        [k.public_key for k in to],
        os.urandom(32),
        os.urandom(12),
        [os.urandom(12) for _ in range(len(to) + 1)],
    )
    return NewPayload(payload_hash(p), p.SerializeToString(), tuple(recipients_of(p)))


def executor(store: PrivateStore) -> PrivateExecutor:
    config = config_pb2.ChannelConfig(
        channel_id="c", contracts=[config_pb2.ContractConfig(name="bank")]
    )
    lifecycle = type("L", (), {"deployed": lambda self: {"bank": builtin_contract("bank")}})()
    peer: object = type(
        "Peer", (), {"view": type("V", (), {"config": config})(), "lifecycle": lifecycle}
    )()
    return PrivateExecutor(KEYS[0], peer, store)  # type: ignore[arg-type]


async def execute(
    ex: PrivateExecutor,
    number: int,
    items: list[PrivateTxRef],
    purges: tuple[tuple[int, private_purge_pb2.PrivatePurgeBody], ...] = (),
) -> None:
    """One step of the executor's driver by hand (as in test_privacy_store)."""
    core = ex.core(await ex.store.cursor())

    def step() -> PrivateEffects:
        core.step(PrivateBlock(number, tuple(items), ex.store.view(), {}, purges))
        return core.ready()

    effects = await asyncio.get_running_loop().run_in_executor(ex.store.executor, step)
    await BlockExecutor(ex).apply(effects.decided)


def body_of(hashes: list[bytes], keys: list[tuple[str, str]], to: list[PrivacyKey]) -> object:
    return private_purge_pb2.PrivatePurgeBody(
        channel_id="c",
        tx_id="purge",
        payload_hashes=hashes,
        keys=[private_purge_pb2.PrivateKeyRef(namespace=ns, key=k) for ns, k in keys],
        recipient_keys=sorted(k.public_key for k in to),
    )


async def test_a_purge_removes_payload_and_key_and_the_bytes_are_gone(psite: PrivateSite) -> None:
    store = await psite.open()
    canary = "canary-" + os.urandom(16).hex()
    try:
        mine = sealed(KEYS[1], [KEYS[0]], "open", canary, "100")
        shared = sealed(KEYS[1], [KEYS[0], KEYS[2]], "open", "other", "7")
        assert await store.store_payloads([mine, shared]) == 2
        ex = executor(store)
        await execute(ex, 1, [(0, "t0", mine.payload_hash), (1, "t1", shared.payload_hash)])
        fragment = private_payload_pb2.EncryptedPayload.FromString(mine.data).ciphertext[:24]
        # the scan's own control: both canaries are in the store's files before the purge
        assert psite.files_with(canary.encode()) and psite.files_with(fragment)
        before = await store.audit(b"", 10)
        # a purge of both payloads naming peer0 and peer1 only: `shared` went to peer2 too
        bodies = (
            (
                0,
                body_of(
                    [mine.payload_hash, shared.payload_hash], [("bank", canary)], [KEYS[0], KEYS[1]]
                ),
            ),
        )
        await execute(ex, 2, [], bodies)  # type: ignore[arg-type]
        assert await store.payload(mine.payload_hash) is None
        assert await store.payload(shared.payload_hash) is not None  # not its recipient set
        assert await store.private_state("bank") == {"other": b"7"}
        assert psite.files_with(canary.encode()) == [] and psite.files_with(fragment) == []
        if psite.backend == "sqlite":
            assert (psite.path.parent / (psite.path.name + "-wal")).stat().st_size == 0
        # the records and hash chain stay verifiable; the purged one is reported PURGED
        after = await store.audit(b"", 10)
        assert after.recomputed_state_hash == after.stored_state_hash
        assert after.stored_state_hash != before.stored_state_hash
        assert after.purged == {mine.payload_hash}
        assert (await store.ptx(mine.payload_hash)).status == P.PRIVATE_TX_STATUS_EXECUTED  # type: ignore[union-attr]
        # neither Push nor a deferred copy nor Recover stores it again
        assert await store.store_payloads([mine]) == 0
        await store.defer_payloads([mine])
        assert await store.payload(mine.payload_hash) is None
        await execute(ex, 3, [(0, "t3", mine.payload_hash)])  # its tx committing later
        assert (await store.ptx(mine.payload_hash)).status == P.PRIVATE_TX_STATUS_NOT_HELD  # type: ignore[union-attr]
    finally:
        await store.close()


async def test_without_the_physical_removal_the_bytes_stay(
    psite: PrivateSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Negative control of the scan above: without the zeroing pragma (sqlite) or the table
    rewrite after a purge (PostgreSQL) the canary survives the purge in the store's files."""
    if psite.backend == "sqlite":
        monkeypatch.setattr(private_purge, "setup", _setup_without_secure_delete)
    else:
        monkeypatch.setattr(PgPrivateStore, "checkpoint", _no_rewrite)
    store = await psite.open()
    canary = "canary-" + os.urandom(16).hex()
    try:
        mine = sealed(KEYS[1], [KEYS[0]], "open", canary, "100")
        await store.store_payloads([mine])
        ex = executor(store)
        await execute(ex, 1, [(0, "t0", mine.payload_hash)])
        bodies = ((0, body_of([mine.payload_hash], [("bank", canary)], [KEYS[0], KEYS[1]])),)
        await execute(ex, 2, [], bodies)  # type: ignore[arg-type]
        assert await store.private_state("bank") == {}
        found = psite.files_with(canary.encode())
        assert found == [psite.path.name] if psite.backend == "sqlite" else found
    finally:
        await store.close()


def _setup_without_secure_delete(conn: object) -> None:
    conn.execute("PRAGMA secure_delete=OFF")  # type: ignore[attr-defined]
    conn.executescript(private_purge.PURGE_SCHEMA)  # type: ignore[attr-defined]


async def _no_rewrite(self: PgPrivateStore) -> bool:
    return True


async def test_purges_run_in_block_order_with_private_transactions(psite: PrivateSite) -> None:
    store = await psite.open()
    try:
        first = sealed(KEYS[1], [KEYS[0]], "open", "a", "1")
        later = sealed(KEYS[1], [KEYS[0]], "open", "a", "2")
        gone = sealed(KEYS[1], [KEYS[0]], "open", "g", "3")
        await store.store_payloads([first, later, gone])
        ex = executor(store)
        purge_a = body_of([], [("bank", "a"), ("bank", "b")], [KEYS[0], KEYS[1]])
        # index 0 opens a; the purge at 1 deletes it; a opened again at 2 survives the purge
        items = [(0, "t0", first.payload_hash), (2, "t2", later.payload_hash)]
        await execute(ex, 1, items, ((1, purge_a),))  # type: ignore[arg-type]
        assert await store.private_state("bank") == {"a": b"2"}
        # a payload purged earlier in the same block is not held for a later transaction
        purge_g = body_of([gone.payload_hash], [], [KEYS[0], KEYS[1]])
        await execute(ex, 2, [(1, "t1", gone.payload_hash)], ((0, purge_g),))  # type: ignore[arg-type]
        assert (await store.ptx(gone.payload_hash)).status == P.PRIVATE_TX_STATUS_NOT_HELD  # type: ignore[union-attr]
        assert await store.private_state("bank") == {"a": b"2"}
        # a purge that does not name this node changes nothing here
        other = body_of([later.payload_hash], [("bank", "a")], [KEYS[1], KEYS[2]])
        await execute(ex, 3, [], ((0, other),))  # type: ignore[arg-type]
        assert await store.private_state("bank") == {"a": b"2"}
        assert await store.payload(later.payload_hash) is not None
    finally:
        await store.close()


def test_setup_turns_secure_delete_on_whatever_the_build_default(tmp_path: Path) -> None:
    """This machine's sqlite is built with SECURE_DELETE on; another build's default is off,
    and the store must not depend on it."""
    conn = sqlite3.connect(tmp_path / "x.sqlite")
    try:
        conn.execute("PRAGMA secure_delete=OFF")
        private_purge.setup(conn)
        assert conn.execute("PRAGMA secure_delete").fetchone()[0] == 1
    finally:
        conn.close()


async def test_receive_of_a_purged_payload_says_purged_not_not_held(psite: PrivateSite) -> None:
    """`Receive` (`PrivateChannel.receive`) of a payload a purge removed here answers
    PAYLOAD_PURGED with the purge's tx id and block (`PrivateStore.payload_or_purge`), also for one
    this node was owed and never got (queued delivery); anything else not held stays
    NOT_AUTHORIZED ("not held": a payload owed may still come). Red when `receive` skips the
    purge record (every case answers NOT_AUTHORIZED, and a bus subscription waits for ever)."""
    store = await psite.open()
    try:
        mine = sealed(KEYS[1], [KEYS[0]], "open", "m", "1")
        owed = sealed(KEYS[1], [KEYS[0]], "open", "o", "2")  # never delivered here
        kept = sealed(KEYS[1], [KEYS[0]], "open", "k", "3")
        await store.store_payloads([mine, kept])
        ex = executor(store)
        refs = [(0, "t0", mine.payload_hash), (1, "t1", owed.payload_hash)]
        await execute(ex, 1, [*refs, (2, "t2", kept.payload_hash)])
        bodies = ((0, body_of([mine.payload_hash, owed.payload_hash], [], [KEYS[0], KEYS[1]])),)
        await execute(ex, 2, [], bodies)  # type: ignore[arg-type]
        record = private_purge.PurgeRecord("purge", 2)
        assert await store.payload_or_purge(mine.payload_hash) == record
        assert await store.payload_or_purge(owed.payload_hash) == record
        assert await store.payload_or_purge(kept.payload_hash) == kept.data
        assert await store.payload_or_purge(HASH) is None
        ctx: Any = SimpleNamespace(limits=SimpleNamespace(queue_max=4))
        peer: Any = SimpleNamespace(view=SimpleNamespace(channel_id="c"))
        channel = PrivateChannel(ctx, KEYS[0], peer, store, {})
        for digest in (mine.payload_hash, owed.payload_hash):
            with pytest.raises(ClientError) as purged:
                await channel.receive(digest)
            assert purged.value.reason_name == "PAYLOAD_PURGED"
            assert purged.value.metadata == {"purge_tx_id": "purge", "block_number": "2"}
            assert CODE_OF_REASON[purged.value.reason] == grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(ClientError) as not_held:
            await channel.receive(HASH)
        assert not_held.value.reason_name == "NOT_AUTHORIZED"
        assert b"k" in await channel.receive(kept.payload_hash)
    finally:
        await store.close()
