"""Notary cluster, end to end: four notary processes (n = 3f+1 = 4, one organisation each) run
PBFT-lite over mTLS gRPC, each with its own sqlite spent-set and record log, and clients accept an
outcome on f+1 matching member answers. 100 concurrent spends of one state; kill -9 of the
primary under a load of conflicting spends; an audit that every replica's spent-set names the
same consumer for every state."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import sqlite3
import time
from pathlib import Path

import grpc
import pytest

from dltmw.client.notary_cluster import ClusterNotaryClient
from dltmw.client.utxo import BatchStreams, NotaryClient, PartyFiles, error_metadata, signed_batch
from dltmw.core.identity import SigningIdentity
from dltmw.core.notary_cluster import Verdict, wrap
from dltmw.core.utxo.build import (
    TxSpec,
    build_transaction,
    cash_output,
    notarisation_payload,
    sign_request,
)
from dltmw.core.utxo.model import Command, Ref, WireTx, read_transaction
from dltmw.ops.supervisor import Supervisor
from dltmw.rpc.status import reason_of
from dltmw.rpc.tls import TlsMaterial, secure_channel
from dltmw.runtime.roles.notary.cluster_attest import ATTEST_WAIT_S
from dltmw.v1 import errors_pb2, notarisation_pb2, replica_pb2, replica_pb2_grpc

from .operations_http import scrape, value

pytestmark = pytest.mark.integration

CLUSTER = "notaries"
MEMBERS = [f"notary{i}" for i in range(4)]
CLIENTS = ["c1.org1", "c2.org1", "c1.org2", "c2.org2"]
PAIRS = 80
NET = (
    'name = "notary-cluster-it"\n'
    + "".join(f'[[orgs]]\nid = "{o}"\n' for o in ["Org1", "Org2", "N0", "N1", "N2", "N3"])
    + "".join(f'[[nodes]]\nid = "notary{i}"\norg = "N{i}"\nroles = ["notary"]\n' for i in range(4))
    + "".join(f'[[clients]]\nid = "{c}"\norg = "Org{c[-1]}"\n' for c in CLIENTS)
    + f'[[notary_clusters]]\nid = "{CLUSTER}"\nmembers = {MEMBERS!r}\n'.replace("'", '"')
)


def stop_one_by_one(sup: Supervisor) -> None:
    """Stop every member with one SIGTERM each and require a clean exit. (Done here rather than
    by the fixture's `stop_all`, which SIGTERMs a node a second time after it may already have
    stopped — a member that stops within milliseconds then dies of that second signal, -15.)"""
    codes = {n: sup.stop(n) for n in list(sup.nodes)}
    assert all(c == 0 for c in codes.values()), f"unclean stop: {codes}"


def tx(owner: SigningIdentity, inputs: list[Ref]) -> WireTx:
    """A cash transaction for the cluster spending `inputs` (fresh nonce: a distinct tx_id)."""
    me = owner.identity_bytes
    spec = TxSpec(
        notary=CLUSTER,
        nonce=secrets.token_bytes(32),
        inputs=inputs,
        outputs=[cash_output(me, me, "JPY", 100)],
        commands=[Command("cash", "move" if inputs else "issue", (me,))],
    )
    return read_transaction(build_transaction(spec))


def request(wire: WireTx, signer: SigningIdentity) -> notarisation_pb2.NotarisationRequest:
    return sign_request(notarisation_payload(wire, signer.identity_bytes), signer)


def spent(net: Path, member: str) -> dict[bytes, str]:
    db = net / "nodes" / member / "data" / "notary.sqlite"
    with sqlite3.connect(db) as conn:
        return {bytes(r): t for r, t in conn.execute("SELECT ref, tx_id FROM spent")}


def wait_for_audit(net: Path, states: dict[bytes, set[str]], timeout_s: float = 60.0) -> None:
    """Every replica's spent-set holds every state in `states`, with one consumer that is
    among the candidates and the same at every replica (polled under a deadline)."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = {m: spent(net, m) for m in MEMBERS}
        complete = all(set(states) <= set(r) for r in rows.values())
        if complete or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for ref, candidates in states.items():
        consumers = {m: rows[m].get(ref) for m in MEMBERS}
        assert len(set(consumers.values())) == 1, f"replicas disagree on {ref.hex()}: {consumers}"
        assert consumers[MEMBERS[0]] in candidates


async def test_100_concurrent_spends_exactly_one_notarised(network: object) -> None:
    net, sup = network(NET)  # type: ignore[operator]
    parties = [PartyFiles.load(net, c) for c in CLIENTS]
    clients = [ClusterNotaryClient(p, CLUSTER) for p in parties]
    try:
        issue = tx(parties[0].signer, [])
        issued = await clients[0].notarise(request(issue, parties[0].signer))
        assert issued.signed and len(issued.signatures) >= 2
        state = issue.out_ref(0)
        attempts = [tx(parties[i % 4].signer, [state]) for i in range(100)]
        outcomes = await asyncio.gather(
            *(
                clients[i % 4].notarise(request(attempts[i], parties[i % 4].signer))
                for i in range(100)
            )
        )
    finally:
        for c in clients:
            await c.close()
    won = [i for i, o in enumerate(outcomes) if o.signed]
    assert len(won) == 1, f"{len(won)} notarised"
    winner = attempts[won[0]].tx_id
    assert len(outcomes[won[0]].signatures) >= 2  # f+1 distinct members, each verified
    expected = hashlib.sha256(winner.encode()).digest()
    for outcome in outcomes:
        if not outcome.signed:
            assert outcome.reason == errors_pb2.ERROR_REASON_INPUT_CONSUMED
            assert outcome.conflict_hashes == (expected,)
    wait_for_audit(net, {state.key: {winner}})
    # on the wire each member refuses a loser with ABORTED and only the winner's hash
    loser = next(i for i, o in enumerate(outcomes) if not o.signed)
    party = parties[loser % 4]
    for member in MEMBERS:
        async with await NotaryClient.connect(party, member) as one:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await one.notarise(request(attempts[loser], party.signer))
        assert caught.value.code() == grpc.StatusCode.ABORTED
        assert reason_of(caught.value) == "INPUT_CONSUMED"
        assert error_metadata(caught.value)["consuming_tx_id_hash"] == expected.hex()
        assert winner not in (caught.value.details() or "")
    stop_one_by_one(sup)


async def _spend_pair(
    client: ClusterNotaryClient, party: PartyFiles, state: Ref
) -> tuple[WireTx, WireTx, Verdict, Verdict]:
    """Two conflicting spends of `state` at once: exactly one may win."""
    a, b = tx(party.signer, [state]), tx(party.signer, [state])
    va, vb = await asyncio.gather(
        client.notarise(request(a, party.signer)), client.notarise(request(b, party.signer))
    )
    return a, b, va, vb


async def test_kill_9_of_the_primary_under_load(network: object) -> None:
    """Conflicting pairs of spends run on four clients; after 8 pairs the primary of view 0 is
    killed (-9). Every pair still gets exactly one notarisation, pairs keep completing after the
    kill (a view change happened), and after a restart all four spent-sets agree."""
    net, sup = network(NET)  # type: ignore[operator]
    assert isinstance(sup, Supervisor)
    parties = [PartyFiles.load(net, c) for c in CLIENTS]
    clients = [ClusterNotaryClient(p, CLUSTER) for p in parties]
    states: dict[bytes, set[str]] = {}
    done_before_kill, killed = asyncio.Event(), asyncio.Event()
    after_kill = 0
    try:
        issues = [tx(parties[i % 4].signer, []) for i in range(PAIRS)]
        verdicts = await asyncio.gather(
            *(
                clients[i % 4].notarise(request(w, parties[i % 4].signer))
                for i, w in enumerate(issues)
            )
        )
        assert all(v.signed for v in verdicts)
        pairs: list[tuple[WireTx, WireTx, Verdict, Verdict]] = []

        async def load(k: int) -> None:
            nonlocal after_kill
            for j in range(k, PAIRS, 4):
                pairs.append(await _spend_pair(clients[k], parties[k], issues[j].out_ref(0)))
                after_kill += killed.is_set()
                if len(pairs) >= 8:
                    done_before_kill.set()

        running = asyncio.gather(*(load(k) for k in range(4)))
        await asyncio.wait_for(done_before_kill.wait(), 60)
        sup.kill(MEMBERS[0])  # kill -9 of the primary of view 0
        killed.set()
        await asyncio.wait_for(running, 120)
        assert after_kill >= PAIRS // 2, f"only {after_kill} pairs decided after the kill"
        for a, b, va, vb in pairs:
            assert [va.signed, vb.signed].count(True) == 1, "a state was notarised twice or never"
            states[a.inputs[0].key] = {a.tx_id, b.tx_id}
    finally:
        for c in clients:
            await c.close()
    sup.start(MEMBERS[0])
    sup.wait_ready(MEMBERS[0], timeout_s=60)
    wait_for_audit(net, states)
    # re-notarising after the restart returns the very signatures given before (stored ones)
    a, b, va, vb = pairs[0]
    wire, first = (a, va) if va.signed else (b, vb)
    party = parties[0]
    async with ClusterNotaryClient(party, CLUSTER) as client:
        for _ in range(4):  # rotates over every member, the restarted one included
            again = await client.notarise(request(wire, party.signer))
            assert again.signed
            for member, signature in again.signatures.items():
                assert first.signatures.get(member, signature) == signature
    stop_one_by_one(sup)


async def test_bad_input_is_refused_with_a_specific_status_and_changes_nothing(
    network: object,
) -> None:
    net, sup = network(NET)  # type: ignore[operator]
    party, other = PartyFiles.load(net, CLIENTS[0]), PartyFiles.load(net, CLIENTS[2])
    async with ClusterNotaryClient(party, CLUSTER) as cluster:
        issue = tx(party.signer, [])
        assert (await cluster.notarise(request(issue, party.signer))).signed
        state = issue.out_ref(0)
        wrong_notary = TxSpec(
            notary=MEMBERS[1],  # a member's node id is not the cluster's notary name
            nonce=secrets.token_bytes(32),
            inputs=[state],
            outputs=[],
            commands=[Command("cash", "move", (party.signer.identity_bytes,))],
        )
        stray = read_transaction(build_transaction(wrong_notary))
        good = notarisation_payload(tx(party.signer, [state]), party.signer.identity_bytes)
        forged = notarisation_pb2.NotarisationRequest(
            payload=good.SerializeToString(), signature=other.signer.sign(good.SerializeToString())
        )
        cases = [
            (request(stray, party.signer), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD"),
            (forged, grpc.StatusCode.PERMISSION_DENIED, "BAD_SIGNATURE"),
        ]
        for bad, code, reason in cases:
            for member in MEMBERS:
                async with await NotaryClient.connect(party, member) as one:
                    with pytest.raises(grpc.aio.AioRpcError) as caught:
                        await one.notarise(bad)
                assert caught.value.code() == code
                assert reason_of(caught.value) == reason
        # the PBFT exchange refuses a caller that is not a cluster member
        channel = await party.channel_to(MEMBERS[0])
        try:
            stub = replica_pb2_grpc.ReplicaServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Exchange(replica_pb2.ExchangeRequest(channel_id=CLUSTER), timeout=10)
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        finally:
            await channel.close(None)
    assert all(spent(net, m) == {} for m in MEMBERS)
    stop_one_by_one(sup)


async def test_a_member_asked_to_attest_answers_from_the_ordering_members_decision(
    network: object,
) -> None:
    """One member orders a batch-signed request, another is asked to attest it
    (`ordered_elsewhere`): both sign the same tx_id with their own keys, and the attesting one
    answers from the decision it made through the other's wrap — well before its bound for
    ordering the request itself (`ATTEST_WAIT_S`), which it would wait out if decisions did
    not reach its waiters."""
    net, sup = network(NET)  # type: ignore[operator]
    party = PartyFiles.load(net, CLIENTS[0])
    wire = tx(party.signer, [Ref(secrets.token_hex(32), 0)])
    payload = notarisation_payload(wire, party.signer.identity_bytes)
    order = signed_batch([payload], party.signer)
    attest = signed_batch([payload], party.signer)
    attest.ordered_elsewhere = True
    async with (
        await NotaryClient.connect(party, MEMBERS[0]) as first,
        await NotaryClient.connect(party, MEMBERS[1]) as second,
    ):
        streams = [BatchStreams(first), BatchStreams(second)]
        started = time.monotonic()
        try:
            (ordered,), (attested,) = await asyncio.gather(
                streams[0].exchange(order), streams[1].exchange(attest)
            )
        finally:
            for s in streams:
                s.close()
        elapsed = time.monotonic() - started
    assert ordered.reason == 0 and attested.reason == 0
    assert ordered.response.tx_id == attested.response.tx_id == wire.tx_id
    mine, theirs = (r.response.notary_signature for r in (ordered, attested))
    assert mine.signature and theirs.signature and mine.signer != theirs.signer
    assert elapsed < ATTEST_WAIT_S, f"attested after {elapsed:.1f} s: it waited out its bound"
    stop_one_by_one(sup)


async def test_the_sdk_has_each_notarisation_ordered_once_and_attested_by_f_members(
    network: object,
) -> None:
    """`ClusterNotaryClient` asks the first of its f+1 members to order a request and the other
    to attest it (`NotariseRequest.ordered_elsewhere`): across the members' metrics, each of the
    notarisations was answered from another member's wrap once (f = 1), none waited out the
    attesters' bound to be ordered again, and every verdict holds f+1 distinct signatures."""
    net, sup = network(NET)  # type: ignore[operator]
    party = PartyFiles.load(net, CLIENTS[0])
    count = 8
    started = time.monotonic()
    async with ClusterNotaryClient(party, CLUSTER) as cluster:
        verdicts = [
            await cluster.notarise(request(tx(party.signer, []), party.signer))
            for _ in range(count)
        ]
    elapsed = time.monotonic() - started
    assert all(v.signed and len(v.signatures) == 2 for v in verdicts)
    assert elapsed < ATTEST_WAIT_S, f"{count} notarisations took {elapsed:.1f} s"
    attested = "dltmw_notary_attested_total"
    answered = ordered_here = 0.0
    for member in MEMBERS:
        samples = await asyncio.to_thread(scrape, sup.operations_address(member) or "")
        answered += value(samples, attested, notary=CLUSTER, outcome="answered")
        ordered_here += value(samples, attested, notary=CLUSTER, outcome="ordered_here")
    assert (answered, ordered_here) == (count, 0)
    stop_one_by_one(sup)


async def test_a_member_forwarding_a_future_stamp_cannot_stall_the_cluster(
    network: object,
) -> None:
    """Replica 1's key signs a forwarded wrap stamped an hour ahead and sends it to the primary.
    Honest replicas refuse such stamps in pre-prepares, so a primary that proposed it would be
    replaced, and again at the next primary; the primary must drop it on arrival instead: the
    cluster keeps notarising and stays in view 0."""
    net, sup = network(NET)  # type: ignore[operator]
    party = PartyFiles.load(net, CLIENTS[0])
    home = net / "nodes" / MEMBERS[1]
    signer = SigningIdentity.from_pem(
        "N1", (home / "identity.pem").read_bytes(), (home / "identity.key").read_bytes()
    )
    tls = TlsMaterial.load(home / "tls.pem", home / "tls.key", net / "tls-roots.pem")
    future = time.time_ns() + 3600 * 10**9
    poison = wrap([request(tx(party.signer, []), party.signer).SerializeToString()], future, 1)
    body = replica_pb2.ReplicaMessage(forwarded=replica_pb2.ForwardedRequests(requests=[poison]))
    payload = body.SerializeToString()
    envelope = replica_pb2.SignedReplicaMessage(
        payload=payload, replica=1, signature=signer.sign(payload)
    )
    address = await party.addresses.resolve(MEMBERS[0], 10)
    assert address is not None
    channel = secure_channel(address, MEMBERS[0], tls, 4 << 20)
    try:
        stub = replica_pb2_grpc.ReplicaServiceStub(channel)
        sent = replica_pb2.ExchangeRequest(channel_id=CLUSTER, messages=[envelope])
        assert (await stub.Exchange(sent, timeout=10)).accepted == 1
    finally:
        await channel.close(None)
    async with ClusterNotaryClient(party, CLUSTER) as cluster:
        for _ in range(5):
            assert (await cluster.notarise(request(tx(party.signer, []), party.signer))).signed
        await asyncio.sleep(3.0)  # longer than the request timeout (2 s): a view change would show
        assert (await cluster.notarise(request(tx(party.signer, []), party.signer))).signed
    for member in MEMBERS:
        db = net / "nodes" / member / "data" / "notary-pbft.sqlite"
        with sqlite3.connect(db) as conn:
            views = conn.execute("SELECT count(*) FROM records WHERE kind='view'").fetchone()
        assert views == (0,), f"{member} changed view"
    stop_one_by_one(sup)
