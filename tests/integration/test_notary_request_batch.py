"""Requester batch signatures end to end (docs/utxo.md "Requester batch signatures"): real
notary processes over mTLS gRPC with real signatures and sqlite. A batch-signed NotariseStream
message is decided like per-request signed ones (conflicts, duplicates, retries with the same
answer); a forged batch signature or a request added after signing refuses every request and
consumes nothing; old per-request messages keep working on the same stream. The cluster splits
a large signed batch over several PBFT requests and every member still checks it."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import grpc

from dltmw.client.notary_cluster import ClusterNotaryClient
from dltmw.client.utxo import BatchStreams, NotaryClient, PartyFiles, signed_batch
from dltmw.core.identity import SigningIdentity
from dltmw.core.notary_batch import proof_of_pb, signed_message
from dltmw.core.utxo.build import notarisation_payload
from dltmw.core.utxo.model import Ref, WireTx
from dltmw.ops.supervisor import Supervisor
from dltmw.v1 import errors_pb2, notarisation_pb2, notary_service_pb2

from .test_notary import NOTARY_NET, Start, audit, make_tx, request_for, spent_rows
from .test_notary_cluster import (
    CLIENTS,
    CLUSTER,
    MEMBERS,
    NET,
    spent,
    stop_one_by_one,
    tx,
    wait_for_audit,
)
from .test_notary_cluster import request as cluster_request

Message = notary_service_pb2.NotariseStreamRequest
Result = notarisation_pb2.NotarisationResult
BAD_BATCH = errors_pb2.ERROR_REASON_NOTARY_BATCH_SIGNATURE_INVALID
BAD_REQUEST = errors_pb2.ERROR_REASON_NOTARY_BATCH_REQUEST_INVALID


def payloads(wires: Sequence[WireTx], signer: SigningIdentity) -> list[bytes]:
    return [notarisation_payload(w, signer.identity_bytes).SerializeToString() for w in wires]


async def send(client: NotaryClient, *messages: Message) -> list[list[Result]]:
    async def stream() -> AsyncIterator[Message]:
        for m in messages:
            yield m

    return [r async for r in client.notarise_batches(stream())]


async def test_a_batch_signed_stream_message_is_decided_like_signed_requests(
    network: Start,
) -> None:
    net, _ = network(NOTARY_NET)
    me, other = PartyFiles.load(net, "c1.org1"), PartyFiles.load(net, "c2.org1")
    states = [Ref(secrets.token_hex(32), 0) for _ in range(4)]
    wires = [make_tx(me.signer, [s])[1] for s in states]
    rival = make_tx(me.signer, [states[0]])[1]
    others = make_tx(other.signer, [Ref(secrets.token_hex(32), 0)])[1]
    raw = payloads([wires[0], rival, wires[1], wires[0]], me.signer)
    good = signed_batch(raw, me.signer)
    mixed = signed_batch(
        [*payloads([wires[2]], me.signer), *payloads([others], other.signer)], me.signer
    )
    async with await NotaryClient.connect(me, "notary0") as client:
        first, second, old = await send(
            client, good, mixed, Message(requests=[request_for(wires[3], me.signer)])
        )
        (retried,) = await send(client, good)  # the same signed batch again
    assert [r.reason for r in first] == [0, errors_pb2.ERROR_REASON_INPUT_CONSUMED, 0, 0]
    sig = first[0].response.notary_signature
    assert first[3].response.notary_signature.signature == sig.signature
    notary_identity = sig.signer
    membership = me.netmap.membership()
    for r in (first[0], first[2]):
        proof = proof_of_pb(r.response.batch_proof)
        message = signed_message(r.response.tx_id, proof)
        signature = r.response.notary_signature.signature
        membership.verify(notary_identity, message, signature, datetime.now(UTC))
    assert [r.reason for r in second] == [0, BAD_REQUEST]  # the request naming another requester
    assert old[0].reason == 0  # a per-request signed message on the same stream
    assert [r.reason for r in retried] == [r.reason for r in first]
    assert [r.response.notary_signature.signature for r in retried] == [
        r.response.notary_signature.signature for r in first
    ]
    audit(
        net,
        {wires[i].tx_id: [states[i]] for i in range(4)},
    )
    assert others.tx_id not in {t for _, t in spent_rows(net)}


async def test_a_forged_or_extended_batch_is_refused_and_consumes_nothing(
    network: Start,
) -> None:
    net, _ = network(NOTARY_NET)
    me, other = PartyFiles.load(net, "c1.org1"), PartyFiles.load(net, "c2.org1")
    states = [Ref(secrets.token_hex(32), 0) for _ in range(3)]
    wires = [make_tx(me.signer, [s])[1] for s in states]
    good = signed_batch(payloads(wires[:2], me.signer), me.signer)
    by_other = Message()
    by_other.CopyFrom(good)
    by_other.batch_signature.signature = other.signer.sign(b"anything else")
    extended = Message()
    extended.CopyFrom(good)  # a request added after the requester signed
    extended.requests.add(payload=payloads(wires[2:], me.signer)[0])
    async with await NotaryClient.connect(me, "notary0") as client:
        refused_other, refused_extended = await send(client, by_other, extended)
        assert [r.reason for r in refused_other] == [BAD_BATCH] * 2
        assert [r.reason for r in refused_extended] == [BAD_BATCH] * 3
        assert not any(r.response.notary_signature.signature for r in refused_extended)
        assert spent_rows(net) == []  # nothing consumed
        (accepted,) = await send(client, signed_batch(payloads(wires, me.signer), me.signer))
    assert [r.reason for r in accepted] == [0, 0, 0]
    audit(net, {w.tx_id: [s] for w, s in zip(wires, states, strict=True)})


async def test_batch_streams_answer_each_batch_with_its_own_results_and_reopen_after_a_failure(
    network: Start,
) -> None:
    net, _ = network(NOTARY_NET)
    me = PartyFiles.load(net, "c1.org1")
    batches = [
        [make_tx(me.signer, [Ref(secrets.token_hex(32), 0)])[1] for _ in range(n)]
        for n in (3, 1, 4, 2, 5, 2, 3)
    ]

    def message(wires: Sequence[WireTx]) -> Message:
        return signed_batch(payloads(wires, me.signer), me.signer)

    async with await NotaryClient.connect(me, "notary0") as client:
        streams = BatchStreams(client)
        concurrent = await asyncio.gather(*(streams.exchange(message(b)) for b in batches[:3]))
        assert streams.opened == 3  # one stream per batch in flight
        one_by_one = [await streams.exchange(message(b)) for b in batches[3:5]]
        assert streams.opened == 3  # idle streams are reused
        too_many = Message(requests=[notarisation_pb2.NotarisationRequest()] * 1001)
        try:
            await streams.exchange(too_many)  # the notary ends this stream with a status
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        else:
            raise AssertionError("a message over the notary's entry bound was answered")
        after = [await streams.exchange(message(b)) for b in batches[5:]]
        streams.close()
    for wires, results in zip(batches, [*concurrent, *one_by_one, *after], strict=True):
        assert [r.reason for r in results] == [0] * len(wires)
        assert [r.response.tx_id for r in results] == [w.tx_id for w in wires]
    audit(net, {w.tx_id: list(w.inputs) for b in batches for w in b})


async def test_the_cluster_checks_a_split_signed_batch_and_refuses_a_forged_one(
    network: object,
) -> None:
    net, sup = network(NET)  # type: ignore[operator]
    assert isinstance(sup, Supervisor) and isinstance(net, Path)
    party = PartyFiles.load(net, CLIENTS[0])
    other = PartyFiles.load(net, CLIENTS[1])
    wires = [tx(party.signer, [Ref(secrets.token_hex(32), 0)]) for _ in range(250)]
    raw = payloads(wires, party.signer)  # ~250 KB: split over several PBFT requests
    good = signed_batch(raw, party.signer)
    bad = Message()
    bad.CopyFrom(good)
    bad.batch_signature.signature = other.signer.sign(b"anything else")
    try:
        for member in MEMBERS[:2]:  # f+1 members
            async with await NotaryClient.connect(party, member) as client:
                (refused,) = await send(client, bad)
                assert {r.reason for r in refused} == {BAD_BATCH}
        for member in MEMBERS:
            assert spent(net, member) == {}  # nothing consumed anywhere
        answers = []
        for member in MEMBERS[:2]:
            async with await NotaryClient.connect(party, member) as client:
                (results,) = await send(client, good)
                answers.append(results)
        for results in answers:
            assert [r.reason for r in results] == [0] * len(wires)
            assert all(r.response.notary_signature.signature for r in results)
        # a per-request signed request through the cluster client still works
        cluster = ClusterNotaryClient(party, CLUSTER)
        try:
            single = tx(party.signer, [Ref(secrets.token_hex(32), 0)])
            verdict = await cluster.notarise(cluster_request(single, party.signer))
            assert verdict.signed
        finally:
            await cluster.close()
        wait_for_audit(net, {w.inputs[0].key: {w.tx_id} for w in wires})
    finally:
        stop_one_by_one(sup)
