"""REMOVE of a privacy group member, and the group-id namespace, on real node processes
(docs/privacy.md "Privacy groups").

test_privacy.py's network, channel `deals` (every recipient agrees before commit); Regulator's
node is the auditor (a recipient of every group transaction). Tests run in file order and build
on each other: group `r` of Org1, Org2 and Org3 makes calls, Org3 is removed (it receives and
executes the REMOVE), then Org1 and Org2 go on alone with VALID transactions and equal group
state hashes while Org3's copy stays at the REMOVE and none of its files holds a canary sent
after it; a call agreed before the REMOVE and ordered after it is PRIVATE_STATE_CONFLICT; the
removed organisation's calls, a REMOVE of the last member and recipients naming Org3 are
refused at Send with nothing changed; a CREATE of an id another set of organisations uses is
refused at Send (PRIVACY_GROUP_ID_TAKEN), and one agreed before the id was taken conflicts;
finally Org3 is added again and catches up (share_history + Recover) to the members' state.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from dltmw.client.groups import (
    add_to_group,
    change_invocation,
    create_group,
    group_call,
    remove_from_group,
    share_history,
)
from dltmw.client.privacy import PrivacyClient
from dltmw.core.privacy.groups import MEMBERS_KEY, scoped
from dltmw.ops.supervisor import Supervisor
from dltmw.rpc.status import reason_of
from dltmw.v1 import common_pb2, private_payload_pb2, transaction_pb2
from dltmw.v1 import privacy_manager_service_pb2 as P
from dltmw.v1 import private_group_pb2 as G

from .cli import DLTMW
from .test_privacy import ORGS, clients, close, files_under, occurrences, running
from .test_privacy_groups import (
    CH,
    executed_at,
    group_hash,
    held,
    pstate,
    rows,
    status_at,
    until,
)

pytestmark = pytest.mark.integration
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
CONFLICT = transaction_pb2.TX_VALIDATION_CODE_PRIVATE_STATE_CONFLICT
NOT_HELD = P.PRIVATE_TX_STATUS_NOT_HELD
CANARY = os.urandom(24).hex().encode()
REST = ("org1", "org2", "regulator")  # the group's recipients after Org3 left
AT_REMOVE: dict[str, bytes] = {}  # the group's state hash right after the REMOVE
SENT_AFTER: dict[str, list[bytes]] = {"org1": [], "org2": []}  # r payloads Org3 did not get


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Supervisor]]:
    with running(tmp_path_factory.mktemp("group-remove")) as started:  # test_privacy.py's network
        yield started


def members_at(net: Path, org: str, group: str) -> tuple[str, ...] | None:
    """The group's members as the org's node stores them (None: it holds no such group)."""
    found = pstate(net, org).get((scoped(group, ""), MEMBERS_KEY))
    return None if found is None else tuple(G.PrivateGroupMembers.FromString(found).organizations)


async def agreed_call(
    pc: PrivacyClient, group: str, value: str
) -> tuple[common_pb2.Envelope, str, bytes]:
    """Send a group call and collect every agreement, without ordering it: (envelope, tx_id,
    payload hash), to be submitted later."""
    invocation = private_payload_pb2.PrivateInvocation(
        contract="kv", function="put", args=[b"k", value.encode()], group=group
    )
    sent = await pc.send(CH, invocation.SerializeToString(), [])
    nonce, tx_id = pc.new_nonce()
    collected = await pc.collect_agreements(CH, sent.payload_hash, tx_id)
    assert collected.agreed, "every recipient agreed"
    envelope, _ = pc.private_envelope(CH, sent.payload_hash, collected.agreements, nonce)
    return envelope, tx_id, sent.payload_hash


async def submit_later(
    pcs: dict[str, PrivacyClient], sender: str, envelope: common_pb2.Envelope, tx_id: str
) -> dict[str, int]:
    """Order an envelope agreed earlier; its code at every node."""
    await pcs[sender].client.submit(envelope)
    return {o: (await pcs[o].client.commit_status(CH, tx_id)).result for o in ORGS}


async def test_after_a_remove_the_rest_go_on_and_the_removed_copy_stops(
    net: tuple[Path, Supervisor],
) -> None:
    path, _ = net
    pcs = await clients(path)
    try:
        made = await create_group(pcs["org1"], CH, "r", ["Org1", "Org2", "Org3"])
        assert made.status.result == VALID
        await executed_at(path, ORGS, made.payload_hash)  # Org3's node knows the group now
        before = await group_call(pcs["org3"], CH, "r", "kv", "put", "k", "by-org3")
        assert before.status.result == VALID
        await executed_at(path, ORGS, before.payload_hash)
        # agreed by all four while Org3 is a member, ordered only after the REMOVE
        stale_envelope, stale_tx, _ = await agreed_call(pcs["org2"], "r", "agreed-before")

        removed = await remove_from_group(pcs["org1"], CH, "r", ["Org3"])
        assert removed.status.result == VALID
        # Org3 is a recipient of its own removal: it learns it and its copy records it
        await executed_at(path, ORGS, removed.payload_hash)
        for org in ORGS:
            assert members_at(path, org, "r") == ("Org1", "Org2"), org
        AT_REMOVE.update({o: group_hash(path, o, "r") for o in ORGS})
        assert len(set(AT_REMOVE.values())) == 1

        # the call agreed under the old membership read its record: conflict, nothing runs
        codes = await submit_later(pcs, "org2", stale_envelope, stale_tx)
        assert set(codes.values()) == {CONFLICT}, codes

        # the rest go on without Org3: sealed for Org1, Org2 and the auditor only
        one = await group_call(pcs["org1"], CH, "r", "kv", "put", "k", CANARY.decode())
        two = await group_call(pcs["org2"], CH, "r", "kv", "put", "j", "by-org2")
        SENT_AFTER["org1"].append(one.payload_hash)
        SENT_AFTER["org2"].append(two.payload_hash)
        for done in (one, two):
            assert done.status.result == VALID
            await executed_at(path, REST, done.payload_hash)
            await until(lambda d=done: status_at(path, "org3", d.payload_hash) is not None, "ran")
            assert status_at(path, "org3", done.payload_hash) == NOT_HELD  # the hash only
            count = rows(
                path, "org3", "SELECT COUNT(*) FROM payloads WHERE hash=?", done.payload_hash
            )
            assert count == [(0,)]
        hashes = {o: group_hash(path, o, "r") for o in ORGS}
        assert len({hashes[o] for o in REST}) == 1
        assert hashes["org1"] != AT_REMOVE["org1"]
        assert hashes["org3"] == AT_REMOVE["org3"]  # Org3 holds the group as of the REMOVE
        assert pstate(path, "org3")[(scoped("r", "kv"), "k")] == b"by-org3"
        assert pstate(path, "org2")[(scoped("r", "kv"), "k")] == CANARY

        # no file of Org3's node (stores with -wal, keys, ledgers) nor its logs holds the
        # canary sent after the REMOVE; the scan's control: Org1's node does
        logs = sorted((path / "run" / "logs").glob("peer0.org3.*"))
        assert occurrences(files_under(path / "nodes" / "peer0.org1"), CANARY)
        assert occurrences(files_under(path / "nodes" / "peer0.org3") + logs, CANARY) == {}
    finally:
        await close(pcs)


async def test_the_removed_member_and_bad_removes_are_refused_at_send(
    net: tuple[Path, Supervisor],
) -> None:
    path, _ = net
    pcs = await clients(path)
    call = private_payload_pb2.PrivateInvocation(
        contract="kv", function="put", args=[b"k", b"bad"], group="r"
    )
    remove = G.PRIVATE_GROUP_CHANGE_KIND_REMOVE
    cases = [
        # Org3's own node holds the REMOVE: it refuses its call
        ("org3", call, [], grpc.StatusCode.PERMISSION_DENIED, "PRIVACY_GROUP_NOT_MEMBER"),
        ("org3", change_invocation("r", remove, ["Org1"]), [], grpc.StatusCode.PERMISSION_DENIED,
         "PRIVACY_GROUP_NOT_MEMBER"),
        # a member may not seal a group payload for the removed organisation
        ("org1", call, ["Org2", "Org3"], grpc.StatusCode.INVALID_ARGUMENT,
         "PRIVACY_GROUP_RECIPIENTS_MISMATCH"),
        ("org1", change_invocation("r", remove, ["Org3"]), [], grpc.StatusCode.INVALID_ARGUMENT,
         "PRIVACY_GROUP_INVALID"),
        ("org1", change_invocation("r", remove, ["Org1", "Org2"]), [],
         grpc.StatusCode.FAILED_PRECONDITION, "PRIVACY_GROUP_LAST_MEMBER"),
    ]  # fmt: skip
    try:
        before = {o: (held(path, o), pstate(path, o)) for o in ORGS}
        for org, invocation, orgs, code, reason in cases:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await pcs[org].send(CH, invocation.SerializeToString(), orgs)
            assert (refused.value.code(), reason_of(refused.value)) == (code, reason), reason
        # the CLI names the refusal too, and nothing was sent
        argv = ["private", "group", "remove", str(path), CH, "r", "Org1", "Org2"]
        refused_cli = await asyncio.to_thread(
            subprocess.run,
            [str(DLTMW), *argv, "-c", "user1.org1"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert refused_cli.returncode != 0, refused_cli.stdout
        assert "PRIVACY_GROUP_LAST_MEMBER" in refused_cli.stderr, refused_cli.stderr
        assert {o: (held(path, o), pstate(path, o)) for o in ORGS} == before
    finally:
        await close(pcs)


async def test_a_member_leaves_by_the_cli_and_the_last_one_stays(
    net: tuple[Path, Supervisor],
) -> None:
    path, _ = net
    argv = ["private", "group", "remove", str(path), CH, "r", "Org2", "-c", "user1.org2"]
    done = await asyncio.to_thread(
        subprocess.run,
        [str(DLTMW), *argv, "--json"],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "TX_VALIDATION_CODE_VALID" in done.stdout
    SENT_AFTER["org2"].append(bytes.fromhex(json.loads(done.stdout)["payload_hash"]))
    await until(lambda: members_at(path, "org1", "r") == ("Org1",), "Org2 left")
    await until(lambda: members_at(path, "org2", "r") == ("Org1",), "Org2 saw it")
    assert members_at(path, "org3", "r") == ("Org1", "Org2")  # not a recipient any more
    pcs = await clients(path)
    try:
        alone = await group_call(pcs["org1"], CH, "r", "kv", "put", "k", "alone")
        assert alone.status.result == VALID
        await executed_at(path, ("org1", "regulator"), alone.payload_hash)
        SENT_AFTER["org1"].append(alone.payload_hash)
        assert group_hash(path, "org1", "r") == group_hash(path, "regulator", "r")
    finally:
        await close(pcs)


async def test_a_group_id_taken_on_the_channel_is_refused_or_conflicts(
    net: tuple[Path, Supervisor],
) -> None:
    path, _ = net
    pcs = await clients(path)
    try:
        # Org2 and Org3 agree a CREATE of `race` before Org1 alone creates it: first come,
        # first served, the second CREATE read the id as free and conflicts (68)
        create = change_invocation("race", G.PRIVATE_GROUP_CHANGE_KIND_CREATE, ["Org2", "Org3"])
        sent = await pcs["org2"].send(CH, create.SerializeToString(), [])
        nonce, tx_id = pcs["org2"].new_nonce()
        collected = await pcs["org2"].collect_agreements(CH, sent.payload_hash, tx_id)
        assert collected.agreed
        envelope, _ = pcs["org2"].private_envelope(
            CH, sent.payload_hash, collected.agreements, nonce
        )
        first = await create_group(pcs["org1"], CH, "race", ["Org1"])
        assert first.status.result == VALID
        codes = await submit_later(pcs, "org2", envelope, tx_id)
        assert set(codes.values()) == {CONFLICT}, codes
        assert members_at(path, "org2", "race") is None
        assert members_at(path, "org1", "race") == ("Org1",)
        # from then on the same CREATE is refused at Send: Org2's node does not hold `race`,
        # but the id's public hash is in its world state; nothing is sealed or stored
        before = {o: held(path, o) for o in ORGS}
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await pcs["org2"].send(CH, create.SerializeToString(), [])
        assert (refused.value.code(), reason_of(refused.value)) == (
            grpc.StatusCode.ALREADY_EXISTS,
            "PRIVACY_GROUP_ID_TAKEN",
        )
        assert {o: held(path, o) for o in ORGS} == before
        # a member of the group gets the old answer (it holds it), another id is free
        with pytest.raises(grpc.aio.AioRpcError) as exists:
            await pcs["org1"].send(
                CH,
                change_invocation(
                    "race", G.PRIVATE_GROUP_CHANGE_KIND_CREATE, ["Org1"]
                ).SerializeToString(),
                [],
            )
        assert reason_of(exists.value) == "PRIVACY_GROUP_EXISTS"
        other = await create_group(pcs["org2"], CH, "org2.race", ["Org2", "Org3"])
        assert other.status.result == VALID
    finally:
        await close(pcs)


async def test_a_removed_member_added_again_catches_up(net: tuple[Path, Supervisor]) -> None:
    """Org3 (removed) is added again by Org1, the only member left: the senders re-wrap for it
    what it missed (share_history), it Recovers, and reaches the members' group state."""
    path, _ = net
    pcs = await clients(path)
    try:
        added = await add_to_group(pcs["org1"], CH, "r", ["Org3"])
        assert added.status.result == VALID
        await executed_at(path, ("org1", "regulator"), added.payload_hash)
        SENT_AFTER["org1"].append(added.payload_hash)
        for org, sent in SENT_AFTER.items():
            assert await share_history(pcs[org], CH, sent, ["Org3"]) == len(sent)
        await pcs["org3"].recover(CH)
        members_hash = group_hash(path, "org1", "r")
        await until(lambda: group_hash(path, "org3", "r") == members_hash, "org3 caught up")
        assert members_at(path, "org3", "r") == ("Org1", "Org3")
        assert pstate(path, "org3")[(scoped("r", "kv"), "k")] == b"alone"
        done = await group_call(pcs["org3"], CH, "r", "kv", "put", "k", "org3-again")
        assert done.status.result == VALID
        await executed_at(path, ("org1", "org3", "regulator"), done.payload_hash)
        assert len({group_hash(path, o, "r") for o in ("org1", "org3", "regulator")}) == 1
    finally:
        await close(pcs)
