"""`run_transfer`: one whole two-phase transfer across two channels (the `xfer` contract).

Any party holding the terms may drive it — a broker, a relayer, a new process after a crash —
because every step is a public contract call whose proofs are checked on chain
(docs/cross-channel.md). The driver only sequences:

0. before the deadline, lock on both channels at once; if both commit, go to 2 with their
   tx_ids (the common case: no record read);
1. otherwise read both records (`xfer.record`: state and the tx_id of each step) and lock where
   absent, before the deadline (concurrently);
2. both locked: fetch each lock's commit proof (by the tx_id its record names) from the peers of
   its channel and claim where still locked -> "claimed";
3. a lock is missing: once the deadline has passed, abort where absent (a late lock may win:
   then 2), then refund the locked side with the abort's proof -> "refunded".
Everything it needs is in the records, so after a crash anywhere, calling `run_transfer` again
(any party, any process) resumes where the last run stopped.

A step refused for a reason that may pass (`aio/rpc_errors.classify` says RETRY: the orderer is
down or restarting, a peer is unreachable) is tried again, with the nodes' own capped backoff
(`aio/tasks.backoff_s`), at most STEP_ATTEMPTS times within STEP_BUDGET_S. Before this a lock
refused with UNAVAILABLE while the orderer restarted counted as final: the DvP then sat out its
whole deadline and was refunded. A retried step is always safe: a repeated lock, abort, claim
or refund is a new transaction that the contract refuses once the record moved on (MVCC), and
the driver then reads the record.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from dltmw.aio.clock import utc_now
from dltmw.aio.rpc_errors import Verdict, classify
from dltmw.aio.tasks import backoff_s
from dltmw.client.crosschain import fetch_commit_proof
from dltmw.client.gateway import GatewayClient
from dltmw.v1 import transaction_pb2

CONTRACT = "xfer"
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
ABSENT, LOCKED = "absent", "locked"
STEP_ATTEMPTS = 10  # tries of one step refused with a transient failure (module docstring)
STEP_BUDGET_S = 60.0  # ... and the time they may take together (a restarting orderer: ~1-10 s)
BACKOFF_FIRST_S, BACKOFF_MAX_S = 0.2, 5.0


@dataclass(frozen=True)
class Leg:
    """One channel of a transfer: the gateway that submits there, and the peers (node id,
    connection) whose attestations a proof of it gathers (enough for its commit proof policy)."""

    channel_id: str
    gateway: GatewayClient
    peers: Sequence[tuple[str, grpc.aio.Channel]]


@dataclass(frozen=True)
class TransferOutcome:
    """How a transfer ended: "claimed" on both channels or "refunded" on the one that locked."""

    transfer_id: str
    outcome: str
    tx_ids: tuple[str, ...]


def dvp_terms(legs: dict[str, tuple[str, str, int]], deadline_s: int, nonce: str) -> bytes:
    """Canonical terms: per channel (from account, to account, amount)."""
    body = {
        "deadline_s": deadline_s,
        "legs": {c: {"from": f, "to": t, "amount": a} for c, (f, t, a) in legs.items()},
        "nonce": nonce,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


async def _submit(leg: Leg, function: str, *args: str | bytes) -> str | None:
    """tx_id of a VALID call, or None when refused or not VALID (the record says what is)."""
    return (await _try(leg, function, *args))[0]


async def submit_step(
    gateway: GatewayClient, channel_id: str, contract: str, function: str, *args: str | bytes
) -> tuple[str | None, str]:
    """(tx_id of a VALID call or None, why not): one step of a transfer, tried again while it
    is refused for a reason that may pass (module docstring). Shared with `client/crossflow`."""
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + STEP_BUDGET_S
    for attempt in range(1, STEP_ATTEMPTS + 1):
        try:
            done = await gateway.submit_transaction(channel_id, contract, function, *args)
        except grpc.aio.AioRpcError as exc:
            why = exc.details() or exc.code().name
            delay = backoff_s(attempt, BACKOFF_FIRST_S, BACKOFF_MAX_S)
            final = attempt == STEP_ATTEMPTS or loop.time() + delay > give_up_at
            if classify(exc) is not Verdict.RETRY or final:
                return None, why
            await asyncio.sleep(delay)
            continue
        if done.status.result != VALID:
            return None, transaction_pb2.TxValidationCode.Name(done.status.result)
        return done.tx_id, ""
    raise AssertionError("unreachable: the last attempt returns")


async def _try(leg: Leg, function: str, *args: str | bytes) -> tuple[str | None, str]:
    """(tx_id of a VALID call or None, why not)."""
    return await submit_step(leg.gateway, leg.channel_id, CONTRACT, function, *args)


async def read_record(gateway: GatewayClient, channel_id: str, transfer_id: str) -> dict[str, str]:
    """The transfer's `xfer` record on a channel ({"state": "absent"} when there is none): its
    state and the tx_id of each step. Shared with `client/crossflow`."""
    try:
        reply = await gateway.evaluate(channel_id, CONTRACT, "record", transfer_id)
    except grpc.aio.AioRpcError as exc:
        if "no transfer" in (exc.details() or ""):
            return {"state": "absent"}
        raise
    return dict(json.loads(reply.payload))


async def _record(leg: Leg, transfer_id: str) -> dict[str, str]:
    return await read_record(leg.gateway, leg.channel_id, transfer_id)


async def _records(a: Leg, b: Leg, transfer_id: str) -> tuple[dict[str, str], dict[str, str]]:
    ra, rb = await asyncio.gather(_record(a, transfer_id), _record(b, transfer_id))
    return ra, rb


async def _proof(leg: Leg, tx_id: str) -> bytes:
    proof = await fetch_commit_proof(leg.peers, leg.channel_id, tx_id)
    return proof.SerializeToString()


SETTLED = {"claim": "claimed", "refund": "refunded"}


async def _settle(here: Leg, there: Leg, terms: bytes, function: str, tx_id: str) -> str:
    """Claim or refund on `here` with the proof of `there`'s `tx_id`; the tx_id that settled.
    A refused step may have settled after all (an earlier attempt whose answer was lost: the
    commit-status wait timed out, then the retry is refused because the record moved on), so
    the record decides before anything is called a failure."""
    done, why = await _try(here, function, terms, await _proof(there, tx_id))
    if done is not None:
        return done
    record = await _record(here, hashlib.sha256(terms).hexdigest())
    state = SETTLED[function]
    if record["state"] == state and record.get(f"{state}_tx"):
        return record[f"{state}_tx"]
    raise RuntimeError(f"{function} on {here.channel_id} was refused: {why}")


async def _claim_both(
    a: Leg, b: Leg, terms: bytes, ra: dict[str, str], rb: dict[str, str]
) -> tuple[str, ...]:
    """Claim wherever still locked, each with the other side's lock proof."""
    steps = []  # coroutines
    if ra["state"] == LOCKED:
        steps.append(_settle(a, b, terms, "claim", rb["locked_tx"]))
    if rb["state"] == LOCKED:
        steps.append(_settle(b, a, terms, "claim", ra["locked_tx"]))
    return tuple(await asyncio.gather(*steps))


async def run_transfer(
    a: Leg, b: Leg, terms: bytes, deadline_s: int, wait_max_s: float = 300.0
) -> TransferOutcome:
    """Drive the transfer of `terms` to its end from whatever state it is in (see the module
    docstring); the records on both channels say what is done, so a crashed run resumes."""
    transfer_id = hashlib.sha256(terms).hexdigest()
    if utc_now().timestamp() <= deadline_s:  # the common case first: both locks commit
        lock_a, lock_b = await asyncio.gather(_submit(a, "lock", terms), _submit(b, "lock", terms))
        if lock_a and lock_b:
            fresh = {"state": LOCKED}
            steps = await _claim_both(
                a, b, terms, {**fresh, "locked_tx": lock_a}, {**fresh, "locked_tx": lock_b}
            )
            return TransferOutcome(transfer_id, "claimed", (lock_a, lock_b, *steps))
    ra, rb = await _records(a, b, transfer_id)  # resume from what the records say
    if utc_now().timestamp() <= deadline_s:
        await asyncio.gather(
            *(_submit(leg, "lock", terms) for leg, r in ((a, ra), (b, rb)) if r["state"] == ABSENT)
        )
        ra, rb = await _records(a, b, transfer_id)
    if "locked_tx" in ra and "locked_tx" in rb:  # both locked (some may be claimed already)
        steps = await _claim_both(a, b, terms, ra, rb)
        return TransferOutcome(transfer_id, "claimed", (ra["locked_tx"], rb["locked_tx"], *steps))
    wait_s = deadline_s - utc_now().timestamp() + 1.0
    if wait_s > wait_max_s:
        raise TimeoutError(f"the deadline is {wait_s:.0f} s away (more than {wait_max_s} s)")
    await asyncio.sleep(max(0.0, wait_s))  # a deadline in header time: nothing to poll
    await asyncio.gather(
        *(_submit(leg, "abort", terms) for leg, r in ((a, ra), (b, rb)) if r["state"] == ABSENT)
    )
    ra, rb = await _records(a, b, transfer_id)
    if "locked_tx" in ra and "locked_tx" in rb:  # a late lock won against our abort
        steps = await _claim_both(a, b, terms, ra, rb)
        return TransferOutcome(transfer_id, "claimed", (ra["locked_tx"], rb["locked_tx"], *steps))
    refunds: list[str] = []
    for here, there, mine, theirs in ((a, b, ra, rb), (b, a, rb, ra)):
        if mine["state"] == LOCKED and "aborted_tx" in theirs:
            refunds.append(await _settle(here, there, terms, "refund", theirs["aborted_tx"]))
    states = {ra["state"], rb["state"]} | ({"refunded"} if refunds else set())
    outcome = "refunded" if "refunded" in states else "aborted"
    return TransferOutcome(transfer_id, outcome, tuple(refunds))
