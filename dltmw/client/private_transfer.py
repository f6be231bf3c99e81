"""`run_private_transfer`: a DvP whose one leg is carried as private payloads
(docs/cross-channel.md "A private leg"), the sibling of `client/transfer.run_transfer`.

The public leg runs `xfer` as always (lock, claim, abort, refund). Every step of the private
leg is a private transaction (`client/privacy.submit_private`: Send to the recipients, collect
every recipient's agreement, submit the hash-only envelope), so its state lives only in the
recipients' private stores — the claim on the private channel is private too:

0. before the deadline, concurrently: lock the public leg; `pescrow` then `plock` the private
   leg (a step counts only if its public code is VALID *and* this node EXECUTED it);
1. both locked: claim the public leg with a `PrivateLegProof` (the plock's commit proof and its
   disclosure, which the client rebuilds from the terms alone: `core/private_leg.py`), and
   `pclaim` the private leg with the public lock's commit proof -> "claimed";
2. otherwise, once the deadline has passed: abort the public leg if it never locked, `pabort`
   the private leg if it never locked; refund whichever side locked with the other side's abort
   proof (`refund` / `prefund`), and `prelease` a hold that was never locked -> "refunded" or
   "aborted".

Unlike `run_transfer` it does not resume from the records after a crash: the private record
carries no tx ids (private execution sees no header), so a new run would need the journal of
the tx_ids this run made (not written yet). Steps refused for a transient reason are retried
as in `run_transfer` (public steps only; a private step's Send fails fast while a recipient is
down, docs/privacy.md "Known limits").
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
from dltmw.client.privacy import PrivacyClient
from dltmw.client.transfer import Leg, TransferOutcome, read_record, submit_step
from dltmw.core.privacy.execution import EXECUTED
from dltmw.core.private_leg import (
    abort_disclosure,
    commitment_of,
    disclosure_bytes,
    lock_disclosure,
)
from dltmw.v1 import private_leg_pb2, transaction_pb2

CONTRACT = "xfer"
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID


@dataclass(frozen=True)
class PrivateLeg:
    """The private leg: a client of a recipient's organisation on its node, the other
    organisations that must hold the leg (the terms' `recipients` besides the sender's), the
    peers a commit proof gathers attestations from, and the leg's details (from, to, amount,
    salt: `core/private_leg.details_bytes`)."""

    channel_id: str
    privacy: PrivacyClient
    other_orgs: Sequence[str]
    peers: Sequence[tuple[str, grpc.aio.Channel]]
    details: bytes


def private_terms(
    public: tuple[str, str, str, int],
    private_channel: str,
    details: bytes,
    recipients: Sequence[str],
    public_genesis_hash: bytes,
    deadline_s: int,
    nonce: str,
) -> bytes:
    """Canonical terms: the public leg (channel, from, to, amount) in clear, the private one
    as a commitment to `details`, its recipient organisations and the public channel's block 0
    (the one the private side verifies proofs against)."""
    channel, source, target, amount = public
    legs = {
        channel: {"from": source, "to": target, "amount": amount},
        private_channel: {
            "private": commitment_of(details),
            "recipients": list(recipients),
            "trust": public_genesis_hash.hex(),
        },
    }
    body = {"deadline_s": deadline_s, "legs": legs, "nonce": nonce}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


async def private_step(leg: PrivateLeg, function: str, *args: str | bytes) -> str | None:
    """tx_id of a private `xfer` call that committed VALID and that this node EXECUTED, or
    None (refused, not VALID, or its contract refused: nothing changed)."""
    try:
        done = await leg.privacy.submit_private(
            leg.channel_id, leg.other_orgs, CONTRACT, function, *args
        )
    except grpc.aio.AioRpcError:
        return None
    if done.status.result != VALID:
        return None
    executed = await leg.privacy.validate(leg.channel_id, done.payload_hash)
    return done.tx_id if executed.status == EXECUTED else None


async def _leg_proof(leg: PrivateLeg, tx_id: str, transfer_id: str, state: str) -> bytes:
    """The PrivateLegProof of the private `plock` or `pabort` with `tx_id`."""
    proof = await fetch_commit_proof(leg.peers, leg.channel_id, tx_id)
    make = lock_disclosure if state == "locked" else abort_disclosure
    disclosure = disclosure_bytes(make(leg.channel_id, transfer_id))
    return private_leg_pb2.PrivateLegProof(
        commit_proof=proof, disclosure=disclosure
    ).SerializeToString()


async def _public(leg: Leg, function: str, *args: str | bytes) -> str | None:
    return (await submit_step(leg.gateway, leg.channel_id, CONTRACT, function, *args))[0]


async def _public_proof(leg: Leg, tx_id: str) -> bytes:
    return (await fetch_commit_proof(leg.peers, leg.channel_id, tx_id)).SerializeToString()


async def _lock_private(leg: PrivateLeg, terms: bytes) -> tuple[str | None, str | None]:
    """(pescrow tx_id, plock tx_id), None where that step did not happen."""
    held = await private_step(leg, "pescrow", terms, leg.channel_id, leg.details)
    locked = await private_step(leg, "plock", terms, leg.channel_id) if held else None
    return held, locked


async def run_private_transfer(
    public: Leg,
    private: PrivateLeg,
    terms: bytes,
    public_genesis: bytes,
    deadline_s: int,
    wait_max_s: float = 300.0,
) -> TransferOutcome:
    """Drive the DvP of `terms` (module docstring); `public_genesis` = the public channel's
    block 0 (serialised), which the private leg's claim or refund verifies proofs from."""
    transfer_id = hashlib.sha256(terms).hexdigest()
    lock_pub = held = plock = None
    if utc_now().timestamp() <= deadline_s:
        lock_pub, (held, plock) = await asyncio.gather(
            _public(public, "lock", terms), _lock_private(private, terms)
        )
    if lock_pub is None:  # locked by an earlier run or another party?
        record = await read_record(public.gateway, public.channel_id, transfer_id)
        lock_pub = record.get("locked_tx")
    if lock_pub and plock:
        claim = await _public(
            public, "claim", terms, await _leg_proof(private, plock, transfer_id, "locked")
        )
        pclaim = await private_step(
            private,
            "pclaim",
            terms,
            private.channel_id,
            private.details,
            public_genesis,
            await _public_proof(public, lock_pub),
        )
        if claim is None or pclaim is None:
            raise RuntimeError(f"a claim of {transfer_id} was refused ({claim}, {pclaim})")
        return TransferOutcome(transfer_id, "claimed", (lock_pub, plock, claim, pclaim))
    wait_s = deadline_s - utc_now().timestamp() + 1.0
    if wait_s > wait_max_s:
        raise TimeoutError(f"the deadline is {wait_s:.0f} s away (more than {wait_max_s} s)")
    await asyncio.sleep(max(0.0, wait_s))  # a deadline in header time: nothing to poll
    return await _unwind(public, private, terms, public_genesis, (lock_pub, held, plock))


async def _unwind(
    public: Leg,
    private: PrivateLeg,
    terms: bytes,
    public_genesis: bytes,
    done: tuple[str | None, str | None, str | None],
) -> TransferOutcome:
    """After the deadline, one side (or none) locked: abort where not locked, refund the side
    that locked with the other's abort proof, release an unlocked hold."""
    transfer_id = hashlib.sha256(terms).hexdigest()
    lock_pub, held, plock = done
    public_abort = None
    if lock_pub is None:
        record = await read_record(public.gateway, public.channel_id, transfer_id)
        if record["state"] == "absent":
            await _public(public, "abort", terms)
            record = await read_record(public.gateway, public.channel_id, transfer_id)
        lock_pub = record.get("locked_tx")
        public_abort = record.get("aborted_tx")
    pabort = None if plock else await private_step(private, "pabort", terms, private.channel_id)
    steps: list[str] = []
    if lock_pub and pabort:
        proof = await _leg_proof(private, pabort, transfer_id, "aborted")
        refunded = await _public(public, "refund", terms, proof)
        if refunded is None:
            raise RuntimeError(f"the public refund of {transfer_id} was refused")
        steps.append(refunded)
    if plock and lock_pub is None and public_abort:
        args = (private.channel_id, private.details, public_genesis)
        proof = await _public_proof(public, public_abort)
        refunded = await private_step(private, "prefund", terms, *args, proof)
        if refunded is None:
            raise RuntimeError(f"the private refund of {transfer_id} was refused")
        steps.append(refunded)
    if held and pabort:
        released = await private_step(
            private, "prelease", terms, private.channel_id, private.details
        )
        steps.append(released or "")
    return TransferOutcome(transfer_id, "refunded" if steps else "aborted", tuple(steps))
