"""Privacy groups on real node processes (docs/privacy.md "Privacy groups").

test_privacy.py's network, channel `deals` (every recipient agrees before commit): two groups,
`g1` (Org1, Org2) and `g2` (Org2, Org3), besides the no-group state; Regulator's node is the
channel's auditor (a recipient of everything, so of every group). Tests run in file order and
build on each other: the groups keep separate states (equal hashes within a group, different
across), the rules refuse bad group transactions at Send with nothing changed, Org3 joins g1
later and catches up to the same group state hash (AddRecipients + Recover), a purge of a g1
key by the group removes the canary from every member's store files (one naming other nodes
than the group's is kept), and a member whose group state was tampered makes a g1 transaction
invalid everywhere.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from dltmw.client.audit import audit_network
from dltmw.client.groups import (
    add_to_group,
    change_invocation,
    create_group,
    group_call,
    share_history,
)
from dltmw.client.purge import approve, purge_body, submit_purge
from dltmw.core.privacy.groups import scoped
from dltmw.ledger.private_groups import group_ids, group_state_hash
from dltmw.ops.supervisor import Supervisor
from dltmw.rpc.status import reason_of
from dltmw.runtime.roles.privacy.hybrid import load_privacy_key
from dltmw.v1 import privacy_manager_service_pb2 as P
from dltmw.v1 import private_group_pb2 as G
from dltmw.v1 import private_payload_pb2, transaction_pb2

from .cli import DLTMW, dltmw
from .test_privacy import DEALS, ORGS, clients, close, files_under, occurrences, running

pytestmark = pytest.mark.integration
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
CH = DEALS  # the channel of test_privacy.py's topology that requires agreements
CANARY = os.urandom(24).hex().encode()
G1_SENT: dict[str, list[bytes]] = {"org1": [], "org2": []}  # g1 payloads each member's node sent


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Supervisor]]:
    with running(tmp_path_factory.mktemp("groups")) as started:  # test_privacy.py's network
        yield started


def db_path(net: Path, org: str) -> Path:
    return net / "nodes" / f"peer0.{org}" / "data" / f"{CH}.private.sqlite"


def read_db(net: Path, org: str) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db_path(net, org)}?mode=ro", uri=True)


def rows(net: Path, org: str, sql: str, *args: object) -> list[tuple[Any, ...]]:
    """The rows of one read-only query of the org's private store."""
    db = read_db(net, org)
    try:
        return list(db.execute(sql, args).fetchall())
    finally:
        db.close()


def pstate(net: Path, org: str) -> dict[tuple[str, str], bytes]:
    found = rows(net, org, "SELECT namespace, key, value FROM pstate")
    return {(str(r[0]), str(r[1])): bytes(r[2]) for r in found}


def group_hash(net: Path, org: str, group: str) -> bytes:
    db = read_db(net, org)
    try:
        return group_state_hash(db, group)
    finally:
        db.close()


def held(net: Path, org: str) -> tuple[Any, ...]:
    """(payloads stored, private transactions recorded) at the org's node."""
    return rows(net, org, "SELECT (SELECT COUNT(*) FROM payloads), (SELECT COUNT(*) FROM ptxs)")[0]


def status_at(net: Path, org: str, digest: bytes) -> object:
    found = rows(net, org, "SELECT status FROM ptxs WHERE payload_hash=?", digest)
    return found[0][0] if found else None


def cursor(net: Path, org: str) -> int:
    """The org's private executor cursor: every block below it has been looked at."""
    found = rows(net, org, "SELECT value FROM meta WHERE name='cursor'")
    return int(found[0][0]) if found else 0


async def until(check: object, what: str, timeout_s: float = 60) -> None:
    """Poll `check()` (bounded) until it is true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():  # type: ignore[operator]
        assert loop.time() < deadline, f"not reached in {timeout_s}s: {what}"
        await asyncio.sleep(0.1)


async def executed_at(net: Path, orgs: tuple[str, ...], digest: bytes) -> None:
    for org in orgs:
        await until(lambda o=org: status_at(net, o, digest) is not None, f"{org} ran the tx")
        assert status_at(net, org, digest) == P.PRIVATE_TX_STATUS_EXECUTED, org


def privacy_key(net: Path, org: str) -> bytes:
    raw = (net / "nodes" / f"peer0.{org}" / "privacy.key").read_bytes()
    return load_privacy_key(raw).public_key


G1 = ("org1", "org2", "regulator")
G2 = ("org2", "org3", "regulator")


async def test_two_groups_keep_separate_states(net: tuple[Path, Supervisor]) -> None:
    path, _ = net
    pcs = await clients(path)
    try:
        made = await create_group(pcs["org1"], CH, "g1", ["Org1", "Org2"])
        assert made.status.result == VALID
        G1_SENT["org1"].append(made.payload_hash)
        assert (await create_group(pcs["org3"], CH, "g2", ["Org2", "Org3"])).status.result == VALID
        one = await group_call(pcs["org1"], CH, "g1", "kv", "put", "k", "in-g1")
        two = await group_call(pcs["org2"], CH, "g2", "kv", "put", "k", "in-g2")
        mine = await group_call(pcs["org2"], CH, "g1", "kv", "put", "j", "org2-in-g1")
        plain = await pcs["org1"].submit_private(CH, ["Org2"], "kv", "put", "k", "no-group")
        G1_SENT["org1"].append(one.payload_hash)
        G1_SENT["org2"].append(mine.payload_hash)
        for done in (one, two, mine, plain):
            for org in ORGS:  # every node, member or not, records the same public code
                assert (await pcs[org].client.commit_status(CH, done.tx_id)).result == VALID
        await executed_at(path, G1, one.payload_hash)
        await executed_at(path, G1, mine.payload_hash)
        await executed_at(path, G2, two.payload_hash)
        await executed_at(path, ("org1", "org2", "regulator"), plain.payload_hash)
        # one key name, three states: each holder sees only the states it is a party to
        assert pstate(path, "org1")[(scoped("g1", "kv"), "k")] == b"in-g1"
        assert pstate(path, "org2")[(scoped("g2", "kv"), "k")] == b"in-g2"
        assert pstate(path, "org2")[("kv", "k")] == b"no-group"
        assert (scoped("g2", "kv"), "k") not in pstate(path, "org1")
        assert (scoped("g1", "kv"), "k") not in pstate(path, "org3")
        # a group's state hash: equal at its members, different across groups
        g1 = {group_hash(path, o, "g1") for o in G1}
        g2 = {group_hash(path, o, "g2") for o in G2}
        assert len(g1) == 1 and len(g2) == 1 and g1 != g2
        db = read_db(path, "regulator")
        try:
            assert group_ids(db) == ["g1", "g2"]
        finally:
            db.close()
    finally:
        await close(pcs)


async def test_bad_group_transactions_are_refused_and_change_nothing(
    net: tuple[Path, Supervisor],
) -> None:
    path, _ = net
    pcs = await clients(path)
    call = private_payload_pb2.PrivateInvocation(
        contract="kv", function="put", args=[b"k", b"bad"], group="g1"
    )
    create = change_invocation("g1", G.PRIVATE_GROUP_CHANGE_KIND_CREATE, ["Org1"])
    bad_id = private_payload_pb2.PrivateInvocation()
    bad_id.CopyFrom(create)
    bad_id.group = "no spaces allowed"
    unknown = private_payload_pb2.PrivateInvocation()
    unknown.CopyFrom(call)
    unknown.group = "nope"
    cases = [
        # the auditor holds g1's state but is not a member; Org3's node does not know g1
        ("regulator", call, [], grpc.StatusCode.PERMISSION_DENIED, "PRIVACY_GROUP_NOT_MEMBER"),
        ("org3", call, [], grpc.StatusCode.FAILED_PRECONDITION, "PRIVACY_GROUP_UNKNOWN"),
        ("org1", create, [], grpc.StatusCode.ALREADY_EXISTS, "PRIVACY_GROUP_EXISTS"),
        ("org1", unknown, [], grpc.StatusCode.FAILED_PRECONDITION, "PRIVACY_GROUP_UNKNOWN"),
        (
            "org1",
            call,
            ["Org2", "Org3"],
            grpc.StatusCode.INVALID_ARGUMENT,
            "PRIVACY_GROUP_RECIPIENTS_MISMATCH",
        ),
        ("org1", bad_id, [], grpc.StatusCode.INVALID_ARGUMENT, "PRIVACY_GROUP_INVALID"),
    ]
    try:
        before = {o: (held(path, o), pstate(path, o)) for o in ORGS}
        for org, invocation, orgs, code, reason in cases:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await pcs[org].send(CH, invocation.SerializeToString(), orgs)
            assert (refused.value.code(), reason_of(refused.value)) == (code, reason), reason
        assert {o: (held(path, o), pstate(path, o)) for o in ORGS} == before
    finally:
        await close(pcs)


def test_the_cli_creates_and_calls_a_group_and_names_a_refusal(
    net: tuple[Path, Supervisor],
) -> None:
    path, _ = net
    base = [str(path), CH, "g3"]
    create = ["private", "group", "create", *base, "Org1", "-c", "user1.org1"]
    made = json.loads(dltmw(*create, "--json"))
    assert made["validation_code"] == "TX_VALIDATION_CODE_VALID"
    argv = ["private", "group", "call", *base, "kv", "put", "x", "y", "-c", "user1.org1"]
    done = json.loads(dltmw(*argv, "--json"))
    assert done["validation_code"] == "TX_VALIDATION_CODE_VALID"
    refused = subprocess.run(
        [str(DLTMW), *create],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode != 0 and "PRIVACY_GROUP_EXISTS" in refused.stderr, refused.stderr


async def test_a_late_member_catches_up_to_the_same_group_state(
    net: tuple[Path, Supervisor],
) -> None:
    path, _ = net
    pcs = await clients(path)
    try:
        added = await add_to_group(pcs["org1"], CH, "g1", ["Org3"])
        assert added.status.result == VALID
        G1_SENT["org1"].append(added.payload_hash)
        await executed_at(path, G1, added.payload_hash)
        # Org3 is not a recipient of the ADD (decided by the current members): hash only; wait
        # for its executor to reach the block first (a check right away races it)
        await until(lambda: status_at(path, "org3", added.payload_hash) is not None, "org3 ran")
        assert status_at(path, "org3", added.payload_hash) == P.PRIVATE_TX_STATUS_NOT_HELD
        # each member re-wraps the g1 payloads its node sent for Org3; Org3 recovers
        for org, sent in G1_SENT.items():
            assert await share_history(pcs[org], CH, sent, ["Org3"]) == len(sent)
        await pcs["org3"].recover(CH)
        members_hash = group_hash(path, "org1", "g1")
        await until(lambda: group_hash(path, "org3", "g1") == members_hash, "org3 caught up")
        assert pstate(path, "org3")[(scoped("g1", "kv"), "k")] == b"in-g1"
        assert group_hash(path, "org3", "g2") == group_hash(path, "org2", "g2")  # g2 intact
        # now a full member: its own call needs (and gets) every member's agreement
        done = await group_call(pcs["org3"], CH, "g1", "kv", "put", "k", "by-org3")
        assert done.status.result == VALID
        await executed_at(path, ("org1", "org2", "org3", "regulator"), done.payload_hash)
        assert len({group_hash(path, o, "g1") for o in ORGS}) == 1
        assert pstate(path, "org2")[(scoped("g2", "kv"), "k")] == b"in-g2"
    finally:
        await close(pcs)


async def test_a_purge_by_the_group_removes_the_canary_from_every_member(
    net: tuple[Path, Supervisor],
) -> None:
    path, _ = net
    pcs = await clients(path)
    members = ("org1", "org2", "org3", "regulator")
    try:
        done = await group_call(pcs["org1"], CH, "g1", "kv", "put", "secret", CANARY)
        assert done.status.result == VALID
        await executed_at(path, members, done.payload_hash)

        raw = rows(path, "org2", "SELECT data FROM payloads WHERE hash=?", done.payload_hash)
        fragment = private_payload_pb2.EncryptedPayload.FromString(raw[0][0]).ciphertext[:24]
        logs = [p for o in members for p in sorted((path / "run" / "logs").glob(f"peer0.{o}.*"))]

        def canaries() -> dict[str, int]:
            """Every file of every member node (keys, ledgers, sqlite with -wal/-shm) and its
            logs holding the plaintext canary or a fragment of its payload's ciphertext."""
            files = files_under(*(path / "nodes" / f"peer0.{o}" for o in members)) + logs
            return {k: v for n in (CANARY, fragment) for k, v in occurrences(files, n).items()}

        # the scan's own control: every member holds the canary before the purge
        assert {k.split("peer0.")[1].split("/")[0] for k in canaries()} == set(members)

        async def purge(approvers: tuple[str, ...]) -> int:
            """Order a purge of the canary approved by `approvers`' organisations and naming
            their nodes; returns its code once each named node's executor ran its block (one
            not named records nothing for it, so its cursor need not move)."""
            nonce, tx_id = pcs["org1"].new_nonce()
            keys = [privacy_key(path, o) for o in approvers]
            body = purge_body(CH, tx_id, [done.payload_hash], [("kv", "secret")], keys, "g1")
            approvals = [approve(pcs[o].client.signer, body) for o in approvers]
            status = await submit_purge(pcs["org1"], CH, body, approvals, nonce)
            for org in approvers:
                await until(lambda o=org: cursor(path, o) > status.block_number, f"{org} ran")
            return status.result

        # approved by the owners of the named nodes but they are not the group's: kept
        assert await purge(("org1", "org2", "regulator")) == VALID
        for org in members:
            assert pstate(path, org)[(scoped("g1", "kv"), "secret")] == CANARY
        # the group's member organisations (and the auditor's) approve: gone everywhere
        assert await purge(members) == VALID

        async def gone() -> None:
            await until(lambda: not canaries(), "the canary left every member file", 30)

        await gone()
        for org in members:
            assert (scoped("g1", "kv"), "secret") not in pstate(path, org)
        assert len({group_hash(path, o, "g1") for o in members}) == 1
        # `dltmw audit` still verifies every chain (group rows included) and names the purge
        (report,) = await audit_network(path, CH)
        assert report.findings == [] and report.unreachable == {}
        assert report.purged == [done.payload_hash.hex()]
    finally:
        await close(pcs)


async def test_a_tampered_member_makes_the_group_tx_invalid_everywhere(
    net: tuple[Path, Supervisor],
) -> None:
    path, _ = net
    db = sqlite3.connect(db_path(path, "org2"), timeout=30)
    db.execute(
        "UPDATE pstate SET value=? WHERE namespace=? AND key='k'", (b"forged", scoped("g1", "kv"))
    )
    db.commit()
    db.close()
    pcs = await clients(path)
    try:
        invocation = private_payload_pb2.PrivateInvocation(
            contract="kv", function="put", args=[b"k", b"v9"], group="g1"
        )
        sent = await pcs["org1"].send(CH, invocation.SerializeToString(), [])
        nonce, tx_id = pcs["org1"].new_nonce()
        collected = await pcs["org1"].collect_agreements(CH, sent.payload_hash, tx_id)
        assert not collected.agreed and len(collected.agreements) == 4
        envelope, _ = pcs["org1"].private_envelope(
            CH, sent.payload_hash, collected.agreements, nonce
        )
        await pcs["org1"].client.submit(envelope)
        for org in ORGS:
            status = await pcs[org].client.commit_status(CH, tx_id)
            assert status.result == transaction_pb2.TX_VALIDATION_CODE_PRIVATE_AGREEMENT_DISAGREED
        for org in ("org1", "org3", "regulator"):
            assert pstate(path, org)[(scoped("g1", "kv"), "k")] == b"by-org3"
    finally:
        await close(pcs)
