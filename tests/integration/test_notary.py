"""Single notary, end to end: a real notary process over mTLS gRPC with real signatures and a
real sqlite spent-set. 100 concurrent spends of one state, tampered requests, kill -9 between
the durable commit and the reply, and an audit that no state is ever consumed twice."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from dltmw.client.utxo import NotaryClient, PartyFiles
from dltmw.core.identity import SigningIdentity
from dltmw.core.notary_batch import encode, proof_of_pb, signed_message
from dltmw.core.utxo.build import (
    TxSpec,
    build_transaction,
    cash_output,
    notarisation_payload,
    sign_request,
    state_ref,
)
from dltmw.core.utxo.model import Command, Ref, Window, WireTx, read_transaction, to_ns
from dltmw.ledger.notary_store import resolve
from dltmw.ops.supervisor import Supervisor
from dltmw.runtime.roles.notary.single import EXIT_HOOK_ENV
from dltmw.v1 import errors_pb2, notarisation_pb2

from .operations_http import scrape, value

pytestmark = pytest.mark.integration

NOTARY_NET = """
name = "notary-it"
[[orgs]]
id = "Org1"
[[orgs]]
id = "Org2"
[[orgs]]
id = "NotaryOrg"
[[nodes]]
id = "notary0"
org = "NotaryOrg"
roles = ["notary"]
[[clients]]
id = "c1.org1"
org = "Org1"
[[clients]]
id = "c2.org1"
org = "Org1"
[[clients]]
id = "c1.org2"
org = "Org2"
[[clients]]
id = "c2.org2"
org = "Org2"
"""
ANY_TIME = Window()
CLIENTS = ["c1.org1", "c2.org1", "c1.org2", "c2.org2"]
Start = Callable[..., tuple[Path, Supervisor]]


def make_tx(
    owner: SigningIdentity, inputs: list[Ref], window: Window = ANY_TIME, **kw: object
) -> tuple[bytes, WireTx]:
    """A cash transaction for notary0 spending `inputs` (contents do not matter to a
    non-validating notary, only the visible components and the hashes)."""
    me = owner.identity_bytes
    spec = TxSpec(
        notary="notary0",
        nonce=secrets.token_bytes(32),
        inputs=inputs,
        outputs=[cash_output(me, me, "JPY", 100)],
        commands=[Command("cash", "move" if inputs else "issue", (me,))],
        window=window,
        **kw,  # type: ignore[arg-type]
    )
    raw = build_transaction(spec)
    return raw, read_transaction(raw)


def request_for(wire: WireTx, signer: SigningIdentity) -> notarisation_pb2.NotarisationRequest:
    return sign_request(notarisation_payload(wire, signer.identity_bytes), signer)


def error_info(err: grpc.aio.AioRpcError) -> tuple[str, dict[str, str]]:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason, dict(info.metadata)
    raise AssertionError("no ErrorInfo")


def spent_rows(net: Path) -> list[tuple[bytes, str]]:
    db = net / "nodes" / "notary0" / "data" / "notary.sqlite"
    with sqlite3.connect(db) as conn:
        return [(bytes(r), t) for r, t in conn.execute("SELECT ref, tx_id FROM spent")]


def notarised_rows(net: Path) -> dict[str, tuple[bytes, int]]:
    """tx_id -> (stored attestation, inputs): batch references resolved as the notary does."""
    db = net / "nodes" / "notary0" / "data" / "notary.sqlite"
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT tx_id, signature, inputs FROM notarised").fetchall()
        stored = resolve(conn, {t: bytes(s) for t, s, _ in rows})
    return {t: (stored[t], n) for t, _, n in rows}


def attestation(reply: notarisation_pb2.NotarisationResponse) -> bytes:
    """The answer's signature with its batch proof, in the notary's stored form."""
    assert reply.HasField("batch_proof")
    return encode(reply.notary_signature.signature, proof_of_pb(reply.batch_proof))


async def issue(client: NotaryClient, party: PartyFiles) -> Ref:
    _, wire = make_tx(party.signer, [])
    reply = await client.notarise(request_for(wire, party.signer))
    assert reply.notary_signature.signature
    return wire.out_ref(0)


async def test_100_concurrent_spends_of_one_state_exactly_one_wins(network: Start) -> None:
    net, sup = network(NOTARY_NET)
    parties = [PartyFiles.load(net, c) for c in CLIENTS]
    clients = [await NotaryClient.connect(p, "notary0") for p in parties]
    try:
        state = await issue(clients[0], parties[0])
        attempts = [make_tx(parties[i % 4].signer, [state]) for i in range(100)]

        async def spend(i: int) -> notarisation_pb2.NotarisationResponse | grpc.aio.AioRpcError:
            party, client = parties[i % 4], clients[i % 4]
            try:
                return await client.notarise(request_for(attempts[i][1], party.signer))
            except grpc.aio.AioRpcError as err:
                return err

        outcomes = await asyncio.gather(*(spend(i) for i in range(100)))
    finally:
        for c in clients:
            await c.close()
    won = [i for i, o in enumerate(outcomes) if not isinstance(o, grpc.aio.AioRpcError)]
    assert len(won) == 1
    winner = attempts[won[0]][1].tx_id
    reply = outcomes[won[0]]
    assert isinstance(reply, notarisation_pb2.NotarisationResponse)
    notary = parties[0].netmap.identity_of("notary0")
    assert reply.notary_signature.signer == notary
    parties[0].netmap.membership().verify(
        notary,
        signed_message(winner, proof_of_pb(reply.batch_proof)),
        reply.notary_signature.signature,
        datetime.now(UTC),
    )
    expected_hash = hashlib.sha256(winner.encode()).hexdigest()
    for o in outcomes:
        if isinstance(o, grpc.aio.AioRpcError):
            assert o.code() == grpc.StatusCode.ABORTED
            reason, meta = error_info(o)
            assert reason == "INPUT_CONSUMED"
            assert meta["consuming_tx_id_hash"] == expected_hash
            assert winner not in (o.details() or "")
    assert [t for r, t in spent_rows(net) if r == state.key] == [winner]
    # The notary's metrics say the same (docs/operations.md): 2 signed (issue, winner), 99
    # refused, one consumed input state each; the boundary saw 99 calls end ABORTED.
    samples = await asyncio.to_thread(scrape, sup.operations_address("notary0") or "")
    decided = "dltmw_notary_decisions_total"
    assert value(samples, decided, notary="single", outcome="SIGNED") == 2
    assert value(samples, decided, notary="single", outcome="INPUT_CONSUMED") == 99
    assert value(samples, "dltmw_notary_conflicts_total", notary="single") == 99
    rpc = {"service": "dltmw.v1.NotaryService", "method": "Notarise"}
    assert value(samples, "dltmw_rpc_requests_total", **rpc, code="ABORTED") == 99
    assert value(samples, "dltmw_rpc_requests_total", **rpc, code="OK") == 2


def _tamper_cases(
    me: SigningIdentity, other: SigningIdentity, inputs: list[Ref], consumed: Ref
) -> dict[str, tuple[notarisation_pb2.NotarisationRequest, grpc.StatusCode, str]]:
    _, wire = make_tx(me, inputs)
    good = notarisation_payload(wire, me.identity_bytes)
    cases = {}
    cases["wrong-signer"] = (
        notarisation_pb2.NotarisationRequest(
            payload=good.SerializeToString(), signature=other.sign(good.SerializeToString())
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "BAD_SIGNATURE",
    )
    signed = sign_request(good, me)
    changed = notarisation_pb2.NotarisationPayload.FromString(signed.payload)
    changed.inputs.append(state_ref(Ref("ee" * 32, 0)))
    cases["inputs-changed-after-signing"] = (
        notarisation_pb2.NotarisationRequest(
            payload=changed.SerializeToString(), signature=signed.signature
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "BAD_SIGNATURE",
    )
    other_inputs = notarisation_pb2.NotarisationPayload()
    other_inputs.CopyFrom(good)
    del other_inputs.inputs[-1]
    cases["other-inputs-than-the-tx"] = (
        sign_request(other_inputs, me),
        grpc.StatusCode.INVALID_ARGUMENT,
        "TX_ID_MISMATCH",
    )
    wrong_id = notarisation_pb2.NotarisationPayload()
    wrong_id.CopyFrom(good)
    wrong_id.tx_id = hashlib.sha256(b"another").hexdigest()
    cases["wrong-tx-id"] = (
        sign_request(wrong_id, me),
        grpc.StatusCode.INVALID_ARGUMENT,
        "TX_ID_MISMATCH",
    )
    _, with_ref = make_tx(me, inputs, references=[consumed])
    cases["consumed-reference"] = (
        request_for(with_ref, me),
        grpc.StatusCode.ABORTED,
        "INPUT_CONSUMED",
    )
    now = to_ns(datetime.now(UTC))
    _, late = make_tx(me, inputs, window=Window(None, now - 10**9))
    _, early = make_tx(me, inputs, window=Window(now + 3600 * 10**9, None))
    for name, w in (("window-closed", late), ("window-not-open", early)):
        cases[name] = (
            request_for(w, me),
            grpc.StatusCode.FAILED_PRECONDITION,
            "TIME_WINDOW_INVALID",
        )
    return cases


async def test_tampered_requests_are_refused_and_record_nothing(network: Start) -> None:
    net, _ = network(NOTARY_NET)
    me, other = PartyFiles.load(net, "c1.org1"), PartyFiles.load(net, "c1.org2")
    async with await NotaryClient.connect(me, "notary0") as client:
        consumed = await issue(client, me)
        _, spend = make_tx(me.signer, [consumed])
        await client.notarise(request_for(spend, me.signer))
        targets = [await issue(client, me), await issue(client, me)]
        before_spent, before_signed = spent_rows(net), notarised_rows(net)
        cases = _tamper_cases(me.signer, other.signer, targets, consumed)
        for name, (req, code, reason) in cases.items():
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await client.notarise(req)
            assert (err.value.code(), error_info(err.value)[0]) == (code, reason), name
        assert spent_rows(net) == before_spent and notarised_rows(net) == before_signed
        # nothing was consumed: the honest transaction spending the same states still succeeds
        _, honest = make_tx(
            me.signer, targets, window=Window(None, to_ns(datetime.now(UTC) + timedelta(hours=1)))
        )
        reply = await client.notarise(request_for(honest, me.signer))
        assert reply.notary_signature.signature


async def test_requester_must_match_the_tls_organisation(network: Start) -> None:
    net, _ = network(NOTARY_NET)
    org1, org2 = PartyFiles.load(net, "c1.org1"), PartyFiles.load(net, "c1.org2")
    async with await NotaryClient.connect(org1, "notary0") as client:
        _, wire = make_tx(org2.signer, [])
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.notarise(request_for(wire, org2.signer))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_info(err.value)[0] == "TLS_IDENTITY_MISMATCH"
    assert notarised_rows(net) == {}


async def test_kill_between_commit_and_reply_then_retry_gets_the_same_signature(
    network: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    net, sup = network(NOTARY_NET)
    me = PartyFiles.load(net, "c1.org1")
    async with await NotaryClient.connect(me, "notary0") as client:
        state = await issue(client, me)
    _, wire = make_tx(me.signer, [state])
    request = request_for(wire, me.signer)
    assert sup.stop("notary0") == 0
    monkeypatch.setenv(EXIT_HOOK_ENV, "1")
    crashing = sup.start("notary0")
    sup.wait_ready("notary0", timeout_s=60)
    monkeypatch.delenv(EXIT_HOOK_ENV)
    async with await NotaryClient.connect(me, "notary0") as client:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.notarise(request)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert crashing.process.wait(30) == 70  # the hook's exit: after the commit, before the reply
    stored = notarised_rows(net)[wire.tx_id][0]
    sup.start("notary0")
    sup.wait_ready("notary0", timeout_s=60)
    async with await NotaryClient.connect(me, "notary0") as client:
        first = await client.notarise(request)
        again = await client.notarise(request)
        _, rival = make_tx(me.signer, [state])
        with pytest.raises(grpc.aio.AioRpcError) as conflict:
            await client.notarise(request_for(rival, me.signer))
    assert attestation(first) == stored == attestation(again)
    assert (
        error_info(conflict.value)[1]["consuming_tx_id_hash"]
        == hashlib.sha256(wire.tx_id.encode()).hexdigest()
    )
    audit(net, {wire.tx_id: [state]})


def audit(net: Path, inputs_of: dict[str, list[Ref]]) -> None:
    """Every notarised tx consumed exactly its inputs; no state has two consumers."""
    spent = spent_rows(net)
    assert len({r for r, _ in spent}) == len(spent)
    by_tx: dict[str, set[bytes]] = {}
    for ref, tx in spent:
        by_tx.setdefault(tx, set()).add(ref)
    for tx_id, (_, n_inputs) in notarised_rows(net).items():
        assert len(by_tx.get(tx_id, set())) == n_inputs
        if tx_id in inputs_of:
            assert by_tx[tx_id] == {r.key for r in inputs_of[tx_id]}


async def test_stream_batches_answer_each_request_in_order(network: Start) -> None:
    net, _ = network(NOTARY_NET)
    me = PartyFiles.load(net, "c1.org1")
    states = [Ref(secrets.token_hex(32), 0) for _ in range(3)]
    txs = [make_tx(me.signer, [s])[1] for s in states]
    rival = make_tx(me.signer, [states[0]])[1]
    tampered = request_for(txs[2], me.signer)
    tampered.signature = PartyFiles.load(net, "c2.org1").signer.sign(tampered.payload)
    batch = [
        request_for(txs[0], me.signer),
        request_for(rival, me.signer),  # same state as the first, later in the batch
        tampered,
        request_for(txs[1], me.signer),
        request_for(txs[0], me.signer),  # the first again: same signature
    ]

    async def batches() -> AsyncIterator[list[notarisation_pb2.NotarisationRequest]]:
        yield batch
        yield [request_for(txs[2], me.signer)]

    async with await NotaryClient.connect(me, "notary0") as client:
        replies = [r async for r in client.notarise_batches(batches())]
    first, second = replies
    assert [r.reason for r in first] == [
        0,
        errors_pb2.ERROR_REASON_INPUT_CONSUMED,
        errors_pb2.ERROR_REASON_BAD_SIGNATURE,
        0,
        0,
    ]
    sig = first[0].response.notary_signature.signature
    assert sig and first[4].response.notary_signature.signature == sig
    assert (
        first[1].response.conflicts[0].consuming_tx_id_hash
        == hashlib.sha256(txs[0].tx_id.encode()).digest()
    )
    assert second[0].reason == 0 and second[0].response.tx_id == txs[2].tx_id
    audit(net, {t.tx_id: [s] for t, s in zip(txs, states, strict=True)})


async def test_kill_9_under_load_then_retry_everything(network: Start) -> None:
    """Spends (pairs competing for each state) stream in; the notary is killed with SIGKILL
    mid-run and restarted; every request is retried. Whatever a client was told before the
    crash is told again, byte for byte, and each state has exactly one consumer."""
    net, sup = network(NOTARY_NET)
    me = PartyFiles.load(net, "c1.org1")
    states = [Ref(secrets.token_hex(32), 0) for _ in range(400)]
    txs = [make_tx(me.signer, [s])[1] for s in states for _ in range(2)]
    requests = [request_for(t, me.signer) for t in txs]
    told: dict[str, bytes] = {}

    async def send(reqs: list[notarisation_pb2.NotarisationRequest]) -> None:
        async def batches() -> AsyncIterator[list[notarisation_pb2.NotarisationRequest]]:
            for i in range(0, len(reqs), 20):
                yield reqs[i : i + 20]

        async with await NotaryClient.connect(me, "notary0") as client:
            async for results in client.notarise_batches(batches()):
                for r in results:
                    if r.reason == 0:
                        told[r.response.tx_id] = attestation(r.response)

    sender = asyncio.create_task(send(requests))
    deadline = asyncio.get_running_loop().time() + 60
    while len(told) < 50 and not sender.done():
        assert asyncio.get_running_loop().time() < deadline, "no progress before the kill"
        await asyncio.sleep(0.01)
    sup.kill("notary0")
    with pytest.raises(grpc.aio.AioRpcError):
        await sender
    before = dict(told)
    assert before and len(before) < len(states)
    sup.start("notary0")
    sup.wait_ready("notary0", timeout_s=60)
    told.clear()
    await send(requests)
    assert all(told[t] == sig for t, sig in before.items())
    assert len(told) == len(states)  # exactly one of each competing pair
    audit(
        net, {t.tx_id: [s] for t, s in zip(txs, [s for s in states for _ in range(2)], strict=True)}
    )
