"""`dltmw audit` on real node processes: a clean network under load audits clean, and edits made
to a peer's sqlite files behind its back are named (node, channel, height, what).

One network for the module (three peer organisations, so a majority exists at every height, and
a solo orderer); tests run in file order and each tampers with a different peer.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from dltmw.client import GatewayClient
from dltmw.client.audit import ChannelReport, audit_network
from dltmw.client.files import ClientFiles
from dltmw.client.privacy import PrivacyClient
from dltmw.core.audit import (
    PRIVATE_RECOMPUTED_DIFFERS,
    RECOMPUTED_DIFFERS,
    STATE_HASH_DIFFERS,
)
from dltmw.core.rwset import Version
from dltmw.core.statehash import accumulate
from dltmw.ops.supervisor import Supervisor
from dltmw.pki.network import init_network
from dltmw.rpc.status import reason_of
from dltmw.rpc.tls import secure_channel
from dltmw.v1 import admin_service_pb2 as A
from dltmw.v1 import admin_service_pb2_grpc, transaction_pb2
from dltmw.v1 import privacy_manager_service_pb2 as P

pytestmark = pytest.mark.integration
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
CH = "trades"
PEERS = ["peer0.org1", "peer0.org2", "peer0.org3"]
S = grpc.StatusCode
TOPOLOGY = (
    """
name = "audit-it"
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
"""
    + "".join(
        f'[[nodes]]\nid = "peer0.org{i}"\norg = "Org{i}"\nroles = ["peer", "gateway"]\n'
        f'[[clients]]\nid = "user1.org{i}"\norg = "Org{i}"\n'
        for i in (1, 2, 3)
    )
    + """
[[channels]]
id = "trades"
members = ["Org1", "Org2", "Org3"]
orderers = ["orderer0"]
contracts = [{ name = "kv", endorsement_policy = "OR(Org1.peer, Org2.peer, Org3.peer)" }]
batch = { max_tx_count = 50, max_bytes = 1048576, timeout_ms = 50 }
"""
)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Supervisor]]:
    tmp = tmp_path_factory.mktemp("audit")
    (tmp / "topology.toml").write_text(TOPOLOGY)
    init_network(tmp / "topology.toml", tmp / "net")
    sup = Supervisor(tmp / "net")
    try:
        sup.up(timeout_s=90)
        yield tmp / "net", sup
    finally:
        codes = {n: sup.stop(n) for n in list(sup.nodes)}
        assert all(c == 0 for c in codes.values()), f"unclean stop: {codes}"


def _db(net: Path, node: str, kind: str = "peer") -> sqlite3.Connection:
    return sqlite3.connect(net / "nodes" / node / "data" / f"{CH}.{kind}.sqlite")


async def _restart_after(sup: Supervisor, node: str, edit) -> None:  # type: ignore[no-untyped-def]
    """Stop `node` cleanly, apply `edit` to its files, start it again."""
    assert sup.stop(node) == 0
    edit()
    sup.start(node)
    await asyncio.to_thread(sup.wait_ready, node, 60)


async def _settled(net: Path) -> ChannelReport:
    """Audit until every node is at the same height (bounded), so all heights are compared."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while True:
        (report,) = await audit_network(net, CH)
        heights = {v.height for v in report.views}
        if len(heights) == 1 or loop.time() > deadline:
            return report
        await asyncio.sleep(0.2)


def _cli(net: Path, *args: str) -> subprocess.CompletedProcess[str]:
    dltmw = Path(sys.executable).with_name("dltmw")
    return subprocess.run(
        [str(dltmw), "audit", str(net), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def _load(net: Path, rounds: int) -> list[str]:
    """kv puts through every gateway and private puts between Org1 and Org2, concurrently."""
    gateways = [await GatewayClient.connect(net, f"user1.org{i}") for i in (1, 2, 3)]
    private = PrivacyClient(await GatewayClient.connect(net, "user1.org1"))
    acked: list[str] = []
    try:

        async def put(i: int) -> None:
            done = await gateways[i % 3].submit_transaction(CH, "kv", "put", f"k{i % 40}", f"v{i}")
            assert done.status.result == VALID
            acked.append(done.tx_id)

        async def private_put(i: int) -> None:
            # one key per transaction: with agreement before commit, concurrent private writes
            # to one key conflict like MVCC (docs/privacy.md), which is not what this audits
            done = await private.submit_private(CH, ["Org2"], "kv", "put", f"p{i}", f"s{i}")
            assert done.status.result == VALID

        await asyncio.gather(
            *(put(i) for i in range(rounds)), *(private_put(i) for i in range(rounds // 10))
        )
    finally:
        for c in gateways:
            await c.close()
        await private.close()
    return acked


async def test_a_clean_network_under_load_audits_clean(net: tuple[Path, Supervisor]) -> None:
    path, _ = net
    load = asyncio.create_task(_load(path, 300))
    during: list[ChannelReport] = []
    while not load.done():
        during += await audit_network(path, CH)
    await load
    assert during, "no audit ran during the load"
    for report in during:
        assert report.findings == [] and report.unreachable == {}, report
        assert len(report.views) == 4
    report = await _settled(path)
    assert report.findings == [] and report.unreachable == {}
    assert report.common_height > 5
    peers = [v for v in report.views if v.has_state]
    assert len({v.stored_state_hash for v in peers}) == 1
    executed = {
        v.node_id
        for v in report.views
        for t in v.private_txs
        if t.status == P.PRIVATE_TX_STATUS_EXECUTED
    }
    assert executed == {"peer0.org1", "peer0.org2"}  # the recipients, compared with each other
    done = await asyncio.to_thread(_cli, path, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)[0]["divergences"] == []


async def test_an_edited_state_row_is_named(net: tuple[Path, Supervisor]) -> None:
    path, sup = net

    def edit() -> None:
        with _db(path, "peer0.org2") as db:
            changed = db.execute("UPDATE state SET value=? WHERE key='k7'", (b"forged",))
            assert changed.rowcount == 1

    await _restart_after(sup, "peer0.org2", edit)
    report = await _settled(path)
    assert report.findings, "audit named nothing"
    first = report.findings[0]
    assert (first.node_id, first.channel_id, first.what) == ("peer0.org2", CH, RECOMPUTED_DIFFERS)
    assert first.height == report.views[0].height - 1
    assert {f.node_id for f in report.findings} == {"peer0.org2"}
    done = await asyncio.to_thread(_cli, path)
    assert done.returncode == 1
    text = " ".join(done.stdout.split())
    assert f"node peer0.org2, channel {CH}" in text and RECOMPUTED_DIFFERS in text


async def test_a_fixed_up_stored_hash_is_named_as_diverging(net: tuple[Path, Supervisor]) -> None:
    """The attacker edits a value AND rewrites the stored hash to match the edited table: the
    node agrees with itself, but not with the other peers at that height."""
    path, sup = net
    victim = "peer0.org3"

    def edit() -> None:
        with _db(path, victim) as db:
            db.execute("UPDATE state SET value=? WHERE key='k8'", (b"forged",))
            rows = db.execute("SELECT namespace, key, value, block_number, tx_index FROM state")
            acc = accumulate((r[0], r[1], bytes(r[2]), Version(r[3], r[4])) for r in rows)
            (last,) = db.execute("SELECT MAX(block_number) FROM state_hashes").fetchone()
            db.execute(
                "UPDATE state_hashes SET state_hash=? WHERE block_number=?", (acc.digest(), last)
            )
            db.execute("UPDATE state_acc SET acc=?", (acc.to_bytes(),))
        edited_at.append(last)

    edited_at: list[int] = []
    await _restart_after(sup, victim, edit)
    report = await _settled(path)
    mine = [f for f in report.findings if f.node_id == victim]
    assert [(f.what, f.height, f.channel_id) for f in mine] == [
        (STATE_HASH_DIFFERS, edited_at[0], CH)
    ], report.findings
    assert "differs from peer0.org1" in mine[0].detail  # the majority (peer0.org2 is edited too)


async def test_an_edited_private_state_row_is_named(net: tuple[Path, Supervisor]) -> None:
    path, sup = net

    def edit() -> None:
        with _db(path, "peer0.org1", "private") as db:
            assert db.execute("UPDATE pstate SET value=? WHERE key='p1'", (b"x",)).rowcount == 1

    await _restart_after(sup, "peer0.org1", edit)
    report = await _settled(path)
    mine = [f for f in report.findings if f.node_id == "peer0.org1"]
    assert [f.what for f in mine] == [PRIVATE_RECOMPUTED_DIFFERS], report.findings


async def _audit_call(
    net: Path, node: str, who: str, query: A.AuditQuery | None, raw: bytes | None = None
) -> grpc.aio.AioRpcError | A.AuditResponse:
    files = ClientFiles.load(net, who)
    address = files.addresses.lookup(node)
    assert address is not None
    channel = secure_channel(address, node, files.tls, 4 * 1024 * 1024)
    try:
        if query is not None:
            query.requester = files.signer.identity_bytes
            query.timestamp.FromDatetime(datetime.now(UTC))
            raw = query.SerializeToString()
        assert raw is not None
        request = A.AuditRequest(query=raw, signature=files.signer.sign(raw))
        return await admin_service_pb2_grpc.AdminServiceStub(channel).Audit(request, timeout=30)
    except grpc.aio.AioRpcError as exc:
        return exc
    finally:
        await channel.close(None)


@pytest.mark.parametrize(
    ("who", "query", "raw", "code", "reason"),
    [
        (
            "admin.org1",
            A.AuditQuery(channel_id="nope"),
            None,
            S.FAILED_PRECONDITION,
            "CHANNEL_NOT_FOUND",
        ),
        ("user1.org1", A.AuditQuery(channel_id=CH), None, S.PERMISSION_DENIED, "NOT_AUTHORIZED"),
        (
            "admin.ordererorg",
            A.AuditQuery(channel_id=CH),
            None,
            S.PERMISSION_DENIED,
            "NOT_A_MEMBER",
        ),
        (
            "admin.org1",
            A.AuditQuery(channel_id=CH, block_numbers=range(1025)),
            None,
            S.INVALID_ARGUMENT,
            "INVALID_FIELD",
        ),
        ("admin.org1", None, b"\xff\xff", S.INVALID_ARGUMENT, "MALFORMED"),
        ("admin.org1", A.AuditQuery(), None, S.INVALID_ARGUMENT, "MISSING_FIELD"),
    ],
    ids=[
        "unknown-channel",
        "not-an-admin",
        "admin-of-a-non-member-org",
        "too-many-heights",
        "undecodable",
        "no-channel",
    ],
)
async def test_audit_refuses_bad_requests_with_a_specific_status(
    net: tuple[Path, Supervisor],
    who: str,
    query: A.AuditQuery | None,
    raw: bytes | None,
    code: grpc.StatusCode,
    reason: str,
) -> None:
    path, _ = net
    got = await _audit_call(path, "peer0.org2", who, query, raw)
    assert isinstance(got, grpc.aio.AioRpcError), got
    assert (got.code(), reason_of(got)) == (code, reason), got.details()


async def test_an_admin_of_a_member_org_audits_another_orgs_node(
    net: tuple[Path, Supervisor],
) -> None:
    path, _ = net
    huge = A.AuditQuery(channel_id=CH, block_numbers=[0, 2**64 - 1], state_chain_from=2**64 - 1)
    got = await _audit_call(path, "peer0.org2", "admin.org1", huge)
    assert isinstance(got, A.AuditResponse), got
    assert got.node_id == "peer0.org2" and [p.block_number for p in got.points] == [0]
