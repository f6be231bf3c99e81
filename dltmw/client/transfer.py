"""`run_transfer`: one whole two-phase transfer across two channels (the `xfer` contract).

Any party holding the terms may drive it — a broker, a relayer, a new process after a crash —
because every step is a public contract call whose proofs are checked on chain
(docs/cross-channel.md). The driver only sequences:

1. lock on both channels (concurrently);
2. both locked: fetch each lock's commit proof from the peers of its channel and claim on the
   other channel (concurrently) -> "claimed";
3. a lock did not commit: once the deadline has passed, abort on that channel (if it locked
   after all, the abort is refused and we go back to 2), then refund the other side with the
   abort's proof -> "refunded".
A crash anywhere leaves a state from which calling `run_transfer` again (or any party doing the
same calls) finishes it: the contract refuses what is already done.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from dltmw.aio.clock import utc_now
from dltmw.client.crosschain import fetch_commit_proof
from dltmw.client.gateway import GatewayClient
from dltmw.v1 import transaction_pb2

CONTRACT = "xfer"
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID


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
    """tx_id of a VALID call, or None when refused or not VALID."""
    try:
        done = await leg.gateway.submit_transaction(leg.channel_id, CONTRACT, function, *args)
    except grpc.aio.AioRpcError:
        return None
    return done.tx_id if done.status.result == VALID else None


async def _status(leg: Leg, transfer_id: str) -> str:
    reply = await leg.gateway.evaluate(leg.channel_id, CONTRACT, "status", transfer_id)
    return reply.payload.decode()


async def _proof(leg: Leg, tx_id: str) -> bytes:
    proof = await fetch_commit_proof(leg.peers, leg.channel_id, tx_id)
    return proof.SerializeToString()


async def _settle(here: Leg, there: Leg, terms: bytes, function: str, tx_id: str) -> str:
    done = await _submit(here, function, terms, await _proof(there, tx_id))
    if done is None:
        raise RuntimeError(f"{function} on {here.channel_id} was refused")
    return done


async def run_transfer(
    a: Leg, b: Leg, terms: bytes, deadline_s: int, wait_max_s: float = 300.0
) -> TransferOutcome:
    """Drive the transfer of `terms` to its end (see the module docstring)."""
    transfer_id = hashlib.sha256(terms).hexdigest()
    locks = await asyncio.gather(_submit(a, "lock", terms), _submit(b, "lock", terms))
    lock_a, lock_b = locks
    if lock_a and lock_b:
        claims = await asyncio.gather(
            _settle(a, b, terms, "claim", lock_b), _settle(b, a, terms, "claim", lock_a)
        )
        return TransferOutcome(transfer_id, "claimed", (lock_a, lock_b, *claims))
    wait_s = deadline_s - utc_now().timestamp() + 1.0
    if wait_s > wait_max_s:
        raise TimeoutError(f"the deadline is {wait_s:.0f} s away (more than {wait_max_s} s)")
    await asyncio.sleep(max(0.0, wait_s))  # a deadline in header time: nothing to poll
    locked, unlocked = (a, b) if lock_a else (b, a)
    lock_tx = lock_a or lock_b
    abort_tx = await _submit(unlocked, "abort", terms)
    if abort_tx is None:
        raise RuntimeError(
            f"abort on {unlocked.channel_id} refused: the transfer is "
            f"{await _status(unlocked, transfer_id)} there (call run_transfer again)"
        )
    if lock_tx is None:
        other_abort = await _submit(locked, "abort", terms)
        return TransferOutcome(transfer_id, "aborted", (abort_tx, other_abort or ""))
    refund = await _settle(locked, unlocked, terms, "refund", abort_tx)
    return TransferOutcome(transfer_id, "refunded", (lock_tx, abort_tx, refund))
