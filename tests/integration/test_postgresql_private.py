"""A peer's private state in PostgreSQL on real node processes (`state = "postgresql"`).

Org1 and Org2 trade privately (the two-org network of `conftest.TWO_ORG`); both their peers keep
ledger AND private store in one real PostgreSQL server (`tests/pg_server.py`), each in its own
schemas. Checked: a private transaction commits, both recipients
execute it and agree (ValidatePrivateState, the per-transaction state hash in each schema,
`dltmw audit` without findings), the private state is in the server (its `private_state` view)
and no private sqlite file exists on either PostgreSQL peer; a restarted PostgreSQL peer resumes
executing where it stopped; a purge removes the payload and key from both schemas and the
canary from the cluster's table files (with the scan's own control before it).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pg_server
import psycopg
import pytest
from psycopg import sql

from dltmw.client import GatewayClient
from dltmw.client.privacy import PrivacyClient
from dltmw.client.purge import approve, purge_body, submit_purge
from dltmw.ops.supervisor import Supervisor
from dltmw.runtime.config import peer_schema
from dltmw.runtime.roles.privacy.hybrid import load_privacy_key
from dltmw.v1 import privacy_manager_service_pb2 as P
from dltmw.v1 import transaction_pb2

from .conftest import TWO_ORG
from .test_audit import _settled
from .wire import edit_node_toml, started_network

pytestmark = pytest.mark.integration
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
CH = "trades"
PG_ORGS = ("org1", "org2")  # the recipients, on PostgreSQL
CANARY = b"pg-private-canary-" + os.urandom(8).hex().encode()
Net = tuple[Path, Supervisor, pg_server.PgServer]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    starting = ThreadPoolExecutor(1).submit(pg_server.start)  # beside `dltmw init`'s work
    server: pg_server.PgServer | None = None

    def on_postgresql(net: Path) -> None:
        nonlocal server
        server = starting.result()
        for org in PG_ORGS:
            ledger = {"state": "postgresql", "postgresql_dsn": server.dsn}
            edit_node_toml(net, f"peer0.{org}", {"ledger": ledger})

    try:
        topology = TWO_ORG.replace("BATCH_MS", "50")
        with started_network(tmp_path_factory.mktemp("pgp"), topology, on_postgresql) as (p, s):
            assert server is not None
            yield p, s, server
    finally:
        starting.result().stop()


def _rows(dsn: str, org: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    """`query` ({} = the peer's private schema) on the server, as a reporting user would."""
    schema = sql.Identifier(peer_schema(f"peer0.{org}", CH, "private"))
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql.SQL(query).format(schema), args).fetchall()  # type: ignore[arg-type]


async def rows(dsn: str, org: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    return await asyncio.to_thread(_rows, dsn, org, query, *args)


async def wait_record(
    dsn: str, org: str, digest: bytes, timeout_s: float = 60
) -> tuple[int, bytes]:
    """(status, state hash) of the private tx once `org`'s peer executed it (bounded wait)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    query = "SELECT status, state_hash FROM {}.ptxs WHERE payload_hash = %s"
    while loop.time() < deadline:
        found = await rows(dsn, org, query, digest)
        if found:
            return int(found[0][0]), bytes(found[0][1])
        await asyncio.sleep(0.1)
    raise AssertionError(f"{org} did not execute {digest.hex()} in {timeout_s}s")


def private_sqlite_files(net: Path, org: str) -> list[Path]:
    return sorted((net / "nodes" / f"peer0.{org}").rglob("*.private.sqlite*"))


def table_files_with(server: pg_server.PgServer, needle: bytes) -> list[Path]:
    """The cluster's table files holding `needle` (after a CHECKPOINT writes buffers out)."""
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    base = server.root / "data" / "base"
    return [p for p in base.rglob("*") if p.is_file() and needle in p.read_bytes()]


def held_by(server: pg_server.PgServer, files: list[Path]) -> dict[str, Any]:
    """What a failed purge check needs to be diagnosed: the relations those table files are
    (pg_class by relfilenode), and the sessions open now with their state, start and locks."""
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        nodes = [int(f.name.split(".")[0].split("_")[0]) for f in files]
        relations = conn.execute(
            "SELECT relfilenode, relnamespace::regnamespace::text, relname FROM pg_class"
            " WHERE relfilenode = ANY(%s)",
            (nodes,),
        ).fetchall()
        sessions = conn.execute(
            "SELECT a.pid, a.state, a.xact_start, a.backend_xmin::text, left(a.query, 80),"
            " array_agg(DISTINCT l.mode || ' ' || coalesce(l.relation::regclass::text, ''))"
            " FROM pg_stat_activity a LEFT JOIN pg_locks l ON l.pid = a.pid"
            " WHERE a.pid <> pg_backend_pid() AND a.backend_type = 'client backend'"
            " GROUP BY 1, 2, 3, 4, 5"
        ).fetchall()
    return {"relations": relations, "sessions": sessions}


async def clients(net: Path) -> dict[str, PrivacyClient]:
    return {o: PrivacyClient(await GatewayClient.connect(net, f"user1.{o}")) for o in PG_ORGS}


async def close(pcs: dict[str, PrivacyClient]) -> None:
    for pc in pcs.values():
        await pc.close()


SENT: list[bytes] = []


async def test_a_private_transaction_commits_and_the_recipients_agree_in_postgresql(
    net: Net,
) -> None:
    path, _, server = net
    pcs = await clients(path)
    try:
        done = await pcs["org1"].submit_private(CH, ["Org2"], "kv", "put", "deal", CANARY)
        assert done.status.result == VALID
        SENT.append(done.payload_hash)
        records = [await wait_record(server.dsn, o, done.payload_hash) for o in PG_ORGS]
        assert records[0] == records[1] and records[0][0] == P.PRIVATE_TX_STATUS_EXECUTED
        checked = await pcs["org1"].validate(CH, done.payload_hash)
        assert not checked.mismatch and [p.node_id for p in checked.parties] == ["peer0.org2"]
        assert all(p.matches and not p.error for p in checked.parties)
        assert CANARY in await pcs["org2"].receive(CH, done.payload_hash)
    finally:
        await close(pcs)
    view = "SELECT namespace, key, value_text FROM {}.private_state"
    for org in PG_ORGS:  # in the server, readable through the reporting view
        assert await rows(server.dsn, org, view) == [("kv", "deal", CANARY.decode())]
        assert private_sqlite_files(path, org) == [], f"peer0.{org} wrote a private sqlite file"
    report = await _settled(path)  # every node at one height, so every height is compared
    assert report.findings == [] and report.unreachable == {}, report


async def test_a_restarted_postgresql_peer_resumes_private_execution(net: Net) -> None:
    path, sup, server = net
    assert sup.stop("peer0.org2") == 0
    sup.start("peer0.org2")
    await asyncio.to_thread(sup.wait_ready, "peer0.org2", 60)
    pcs = await clients(path)
    try:
        done = await pcs["org1"].submit_private(CH, ["Org2"], "kv", "put", "after", b"restart")
        assert done.status.result == VALID
        SENT.append(done.payload_hash)
        records = [await wait_record(server.dsn, o, done.payload_hash) for o in PG_ORGS]
        assert records[0] == records[1] and records[0][0] == P.PRIVATE_TX_STATUS_EXECUTED
        assert not (await pcs["org2"].validate(CH, done.payload_hash)).mismatch
    finally:
        await close(pcs)
    count = "SELECT count(*) FROM {}.ptxs"
    assert [await rows(server.dsn, o, count) for o in PG_ORGS] == [[(2,)], [(2,)]]


async def test_a_purge_removes_payload_and_key_from_both_schemas_and_table_files(
    net: Net,
) -> None:
    path, _, server = net
    (digest,) = SENT[:1]  # the first test's: the canary
    # the scan's own control: the canary is in the cluster's table files before the purge
    assert await asyncio.to_thread(table_files_with, server, CANARY), "control: canary not found"
    keys = [
        load_privacy_key((path / "nodes" / f"peer0.{o}" / "privacy.key").read_bytes()).public_key
        for o in PG_ORGS
    ]
    pcs = await clients(path)
    try:
        nonce, tx_id = pcs["org1"].new_nonce()
        body = purge_body(CH, tx_id, [digest], [("kv", "deal")], keys)
        approvals = [approve(pcs[o].client.signer, body) for o in PG_ORGS]
        status = await submit_purge(pcs["org1"], CH, body, approvals, nonce)  # type: ignore[arg-type]
        assert status.result == VALID
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        purged = "SELECT count(*) FROM {}.purged WHERE hash = %s"
        while [await rows(server.dsn, o, purged, digest) for o in PG_ORGS] != [[(1,)]] * 2:
            assert loop.time() < deadline, "the purge did not reach both PostgreSQL peers"
            await asyncio.sleep(0.1)
    finally:
        await close(pcs)
    for org in PG_ORGS:
        assert (
            await rows(server.dsn, org, "SELECT 1 FROM {}.payloads WHERE hash = %s", digest) == []
        )
        keys_left = await rows(server.dsn, org, "SELECT key FROM {}.private_state")
        assert keys_left == [("after",)], (org, keys_left)
        listed = "SELECT purged FROM {}.private_transactions WHERE payload_hash = %s"
        assert await rows(server.dsn, org, listed, digest.hex()) == [(True,)]
    # the executor rewrites the purged tables after the block's transaction: bounded wait
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while found := await asyncio.to_thread(table_files_with, server, CANARY):
        if loop.time() >= deadline:  # seen once under a loaded full run: say which relation
            diagnosis = await asyncio.to_thread(held_by, server, found)
            pytest.fail(f"canary still in {found}: {diagnosis}")
        await asyncio.sleep(0.2)
    report = await _settled(path)
    assert report.findings == [] and report.purged == [digest.hex()], report
