"""Scenario (b): one single notary under concurrent spends, crashes and a faulty network.

Network: notary0 (a single, non-validating notary) and four clients of two organisations, who
talk to it with the SDK's `NotaryClient` (unary Notarise). The clients first issue a few states,
then race: several transactions spend each state, and some spend two states at once, sent at
random moments. Every client retries its own transaction — the very same signed request — while
the answer is UNAVAILABLE or DEADLINE_EXCEEDED, and sometimes asks again after it has an answer.

Faults until `HEAL_AT_S`: requests lost before the notary saw them, answers lost after it
decided (its effects are durable, the caller hears UNAVAILABLE), requests duplicated, delays
that reorder concurrent requests, and the notary killed at its store's next job — just before
a batch's transaction (lost) or just after it (durable, nobody answered: the window idempotent
re-notarisation exists for) — and restarted. Then the faults end and every transaction must get
a final answer within `LIVENESS_S`.

Checkers (`sim/notary_checks.py`): no state consumed twice by signed transactions (and signed
means stored), every retry got the stored answer, every transaction was answered; no node
failed for good, no servicer raised.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc
from grpc_status import rpc_status

from dltmw.client.utxo import NotaryClient, PartyFiles
from dltmw.core.errors import ClientError
from dltmw.core.identity import SigningIdentity
from dltmw.core.notary_batch import decode, encode, proof_of_pb
from dltmw.core.utxo.build import (
    TxSpec,
    build_transaction,
    cash_output,
    notarisation_payload,
    sign_request,
)
from dltmw.core.utxo.model import Command, Ref, WireTx, read_transaction
from dltmw.core.utxo.verify import check_notary_signature
from dltmw.rpc.status import reason_of
from dltmw.sim.deployment import Deployment
from dltmw.sim.notary_checks import (
    Answer,
    Attempted,
    check_no_double_spend,
    check_stored_answers,
    read_stored,
)
from dltmw.sim.scenarios.result import ScenarioResult, conclude
from dltmw.v1 import notarisation_pb2

NOTARY = "notary0"
CLIENTS = ("c1.org1", "c2.org1", "c1.org2", "c2.org2")
STATES, RIVALS, PAIRS = 4, 3, 2
SPENDS_FROM_S, SPENDS_UNTIL_S, HEAL_AT_S = 0.05, 1.0, 1.5
LIVENESS_S = 30.0
RETRY_S = 0.1
AGAIN = 0.3  # share of answered transactions asked again
NOTARISE = "/dltmw.v1.NotaryService/Notarise"
TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

TOPOLOGY = """
name = "sim-notary"
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
""" + "".join(
    f'[[clients]]\nid = "{c}"\norg = "{"Org1" if "org1" in c else "Org2"}"\n' for c in CLIENTS
)


@dataclass(frozen=True)
class _Party:
    """One client: its identity and its NotaryClient on a simulated channel."""

    name: str
    signer: SigningIdentity
    notary: NotaryClient


def _parties(dep: Deployment) -> list[_Party]:
    out = []
    for name in CLIENTS:
        files, channel = dep.channel(name, NOTARY)
        out.append(_Party(name, files.signer, NotaryClient(channel, NOTARY)))  # type: ignore[arg-type]
    return out


def _tx(dep: Deployment, owner: SigningIdentity, inputs: list[Ref]) -> WireTx:
    me = owner.identity_bytes
    spec = TxSpec(
        notary=NOTARY,
        nonce=dep.rng.randbytes(32),
        inputs=inputs,
        outputs=[cash_output(me, me, "JPY", 100)],
        commands=[Command("cash", "move" if inputs else "issue", (me,))],
    )
    return read_transaction(build_transaction(spec))


def _answer(reply: notarisation_pb2.NotarisationResponse) -> Answer:
    """A signed answer, kept in the notary's stored form (signature with its batch proof), so the
    checker compares it with the notary's file as it is."""
    signature = reply.notary_signature.signature
    if reply.HasField("batch_proof"):
        return Answer(signature=encode(signature, proof_of_pb(reply.batch_proof)))
    return Answer(signature=signature)


def _refusal(error: grpc.aio.AioRpcError) -> Answer:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    conflicts = []
    for detail in status.details if status is not None else ():
        conflict = notarisation_pb2.NotarisationConflict()
        if detail.Unpack(conflict):
            ref = Ref(conflict.state.tx_id, conflict.state.index)
            conflicts.append((ref, bytes(conflict.consuming_tx_id_hash)))
    return Answer(reason=reason_of(error) or error.code().name, conflicts=tuple(conflicts))


async def _ask(dep: Deployment, party: _Party, tx: Attempted, wire: WireTx) -> None:
    """Send the same signed request until a final answer; maybe once more after it."""
    request = sign_request(notarisation_payload(wire, party.signer.identity_bytes), party.signer)
    final = 0
    while final < 2:
        try:
            answer = _answer(await party.notary.notarise(request))
        except grpc.aio.AioRpcError as exc:
            if exc.code() in TRANSIENT:
                dep.net.count("client-retried")
                await asyncio.sleep(RETRY_S)
                continue
            answer = _refusal(exc)
        tx.answers.append(answer)
        dep.log(f"{party.name} {tx.tx_id[:8]}: {answer}{' (again)' if final else ''}")
        final += 1
        if final == 1 and dep.rng.random() >= AGAIN:
            return
        if final == 1:
            dep.net.count("client-asked-again")


async def _issue(dep: Deployment, parties: list[_Party]) -> list[Ref]:
    states = []
    for k in range(STATES):
        party = parties[k % len(parties)]
        wire = _tx(dep, party.signer, [])
        request = sign_request(
            notarisation_payload(wire, party.signer.identity_bytes), party.signer
        )
        await party.notary.notarise(request)
        states.append(wire.out_ref(0))
    dep.log(f"issued {STATES} states")
    return states


def _plan(dep: Deployment, parties: list[_Party], states: list[Ref]) -> list[tuple[_Party, WireTx]]:
    """The racing transactions: RIVALS per state, and PAIRS spending two states each."""
    rng, plan = dep.rng, []
    for state in states:
        for _ in range(RIVALS):
            party = rng.choice(parties)
            plan.append((party, _tx(dep, party.signer, [state])))
    for _ in range(PAIRS):
        party = rng.choice(parties)
        plan.append((party, _tx(dep, party.signer, rng.sample(states, 2))))
    return plan


def _faults(dep: Deployment) -> None:
    rng, faults = dep.rng, dep.net.faults
    faults.delay_max_s = rng.choice((0.002, 0.01, 0.03))
    faults.lose_rate, faults.duplicate_rate = 0.3, 0.3
    faults.unary_methods = frozenset({NOTARISE})
    # killed between a batch's commit and its replies, later killed once more (either side)
    _crash_later(dep, after=True, start=rng.uniform(SPENDS_FROM_S, SPENDS_UNTIL_S / 2), then=1)


def _crash_later(dep: Deployment, after: bool, start: float, then: int) -> None:
    """Kill the notary at its store's next job after `start`; restart it soon after; then arm
    `then` more such crashes, one after the other (a node has one armed kill at a time)."""
    rng = dep.rng
    down_s = rng.uniform(0.05, 0.3)

    async def restart() -> None:
        await dep.restart(NOTARY)
        if then:
            next_start = dep.now + rng.uniform(0.05, 0.3)
            _crash_later(dep, rng.random() < 0.5, next_start, then - 1)

    def killed() -> None:
        dep.at(min(HEAL_AT_S, dep.now + down_s), restart)

    if start < HEAL_AT_S:  # after the heal, nothing fails any more
        dep.at(start, lambda: dep.kill_at(NOTARY, "notary", after, killed))


async def run(seed: int, trace: bool = False) -> ScenarioResult:
    """One seeded run of `notary` (see the module docstring)."""
    dep = Deployment(TOPOLOGY, trace)
    attempts: list[Attempted] = []
    lacking: list[str] = []
    try:
        await dep.start()
        parties = _parties(dep)
        states = await _issue(dep, parties)
        _faults(dep)
        dep.at(HEAL_AT_S, dep.heal)
        jobs = []
        for party, wire in _plan(dep, parties, states):
            tx = Attempted(wire.tx_id, wire.inputs)
            attempts.append(tx)
            jobs.append(_later(dep, party, tx, wire))
        try:
            await asyncio.wait_for(asyncio.gather(*jobs), HEAL_AT_S + LIVENESS_S)
        except TimeoutError:
            lacking.append(f"liveness: transactions unanswered {LIVENESS_S}s after the heal")
    finally:
        await dep.stop()
    signed = sum(1 for a in attempts if any(x.signature for x in a.answers))
    summary = {"transactions": len(attempts), "signed": signed}
    return conclude(dep, "notary", seed, lacking, lambda: _check(dep, attempts), summary)


async def _later(dep: Deployment, party: _Party, tx: Attempted, wire: WireTx) -> None:
    await asyncio.sleep(dep.rng.uniform(SPENDS_FROM_S, SPENDS_UNTIL_S))
    await _ask(dep, party, tx, wire)


def _check(dep: Deployment, attempts: list[Attempted]) -> list[str]:
    stored = read_stored(dep.data(NOTARY) / "notary.sqlite")
    files = PartyFiles.load(dep.root, CLIENTS[0])
    notary, membership = files.netmap.identity_of(NOTARY), files.netmap.membership()

    def verify(tx_id: str, attestation: bytes) -> bool:
        signature, proof = decode(attestation)
        try:
            check_notary_signature(
                tx_id, notary, signature, proof, membership, dep.loop.wall_clock()
            )
        except ClientError:
            return False
        return True

    return check_no_double_spend(attempts, stored, verify) + check_stored_answers(attempts, stored)
