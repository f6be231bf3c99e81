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

It resumes after a crash like `run_transfer`, from the public record and, for the private leg
(whose record carries no tx ids: private execution sees no header, and no RPC reads private
state), from a `StepJournal` the caller provides: every private step's nonce and payload hash,
written before it is submitted (`client/step_journal.py`). A new run with the same journal and
the same client identity (the tx_id is the nonce's under the creator) asks the ledger about
each attempt, submits again under the same nonce one that never committed, and goes on from
there; every public step is found done in the record, every private one in the journal. Steps
refused for a transient reason are retried as in `run_transfer` (public steps only; a private
step's Send fails fast while a recipient is down, docs/privacy.md "Known limits").
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable, Sequence

import grpc

from dltmw.aio.clock import utc_now
from dltmw.client.crosschain import fetch_commit_proof
from dltmw.client.private_steps import PrivateLeg, journaled_step, recall
from dltmw.client.step_journal import StepJournal
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


SETTLED = {"claim": "claimed", "refund": "refunded"}


async def _public_settle(
    leg: Leg, terms: bytes, function: str, proof: Callable[[], Awaitable[bytes]]
) -> str | None:
    """Claim or refund the public leg unless its record already says so (an earlier run did);
    the tx_id that settled it, or None. A refused step may have settled after all (its answer
    was lost), so the record decides."""
    transfer_id = hashlib.sha256(terms).hexdigest()
    state = SETTLED[function]
    record = await read_record(leg.gateway, leg.channel_id, transfer_id)
    if record["state"] != state:
        if (done := await _public(leg, function, terms, await proof())) is not None:
            return done
        record = await read_record(leg.gateway, leg.channel_id, transfer_id)
    return record.get(f"{state}_tx") if record["state"] == state else None


async def run_private_transfer(
    public: Leg,
    private: PrivateLeg,
    terms: bytes,
    public_genesis: bytes,
    deadline_s: int,
    wait_max_s: float = 300.0,
    journal: StepJournal | None = None,
) -> TransferOutcome:
    """Drive the DvP of `terms` to its end from whatever state it is in (module docstring);
    `public_genesis` = the public channel's block 0 (serialised), which the private leg's claim
    or refund verifies proofs from; `journal`: the private steps' journal (in memory if None:
    then a crashed run cannot be resumed)."""
    journal = journal if journal is not None else StepJournal()
    transfer_id = hashlib.sha256(terms).hexdigest()

    async def step(function: str, *args: str | bytes) -> str | None:
        return await journaled_step(private, journal, transfer_id, function, *args)

    async def lock_private() -> tuple[str | None, str | None]:
        held = await step("pescrow", terms, private.channel_id, private.details)
        return held, (await step("plock", terms, private.channel_id) if held else None)

    lock_pub = held = plock = None
    if utc_now().timestamp() <= deadline_s:
        lock_pub, (held, plock) = await asyncio.gather(
            _public(public, "lock", terms), lock_private()
        )
    else:  # only what an earlier run did: nothing new is held or locked after the deadline
        held = await recall(private, journal, transfer_id, "pescrow")
        plock = await recall(private, journal, transfer_id, "plock") if held else None
    if lock_pub is None:  # locked by an earlier run or another party?
        record = await read_record(public.gateway, public.channel_id, transfer_id)
        lock_pub = record.get("locked_tx")
    if lock_pub and plock:
        return await _claim(public, private, terms, public_genesis, (lock_pub, plock), step)
    wait_s = deadline_s - utc_now().timestamp() + 1.0
    if wait_s > wait_max_s:
        raise TimeoutError(f"the deadline is {wait_s:.0f} s away (more than {wait_max_s} s)")
    await asyncio.sleep(max(0.0, wait_s))  # a deadline in header time: nothing to poll
    # a private step whose answer was lost (the orderer restarting) may have committed since:
    # a hold left unseen would never be released, a lock unseen never claimed
    held = held or await recall(private, journal, transfer_id, "pescrow")
    plock = plock or (await recall(private, journal, transfer_id, "plock") if held else None)
    if lock_pub and plock:
        return await _claim(public, private, terms, public_genesis, (lock_pub, plock), step)
    return await _unwind(public, private, terms, public_genesis, (lock_pub, held, plock), step)


async def _claim(
    public: Leg,
    private: PrivateLeg,
    terms: bytes,
    public_genesis: bytes,
    locks: tuple[str, str],
    step: Callable[..., Awaitable[str | None]],
) -> TransferOutcome:
    """Both legs locked: claim the public one with the private lock's proof (unless its record
    says claimed already) and the private one with the public lock's proof."""
    transfer_id = hashlib.sha256(terms).hexdigest()
    lock_pub, plock = locks
    claim = await _public_settle(
        public, terms, "claim", lambda: _leg_proof(private, plock, transfer_id, "locked")
    )
    pclaim = await step(
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


async def _unwind(
    public: Leg,
    private: PrivateLeg,
    terms: bytes,
    public_genesis: bytes,
    done: tuple[str | None, str | None, str | None],
    step: Callable[..., Awaitable[str | None]],
) -> TransferOutcome:
    """After the deadline, one side (or none) locked: abort where not locked, refund the side
    that locked with the other's abort proof, release an unlocked hold (each step found done
    if an earlier run did it: the public record, the journal)."""
    transfer_id = hashlib.sha256(terms).hexdigest()
    lock_pub, held, plock = done
    public_abort = None
    if lock_pub is None:
        record = await read_record(public.gateway, public.channel_id, transfer_id)
        if record["state"] == "absent":
            await _public(public, "abort", terms)
            record = await read_record(public.gateway, public.channel_id, transfer_id)
        if record["state"] == "absent":  # the abort did not commit (the orderer down?)
            raise RuntimeError(f"the public abort of {transfer_id} did not commit: run again")
        lock_pub = record.get("locked_tx")
        public_abort = record.get("aborted_tx")
    pabort = None if plock else await step("pabort", terms, private.channel_id)
    steps: list[str] = []
    if lock_pub and pabort:
        proven_abort = pabort
        refunded = await _public_settle(
            public,
            terms,
            "refund",
            lambda: _leg_proof(private, proven_abort, transfer_id, "aborted"),
        )
        if refunded is None:
            raise RuntimeError(f"the public refund of {transfer_id} was refused")
        steps.append(refunded)
    if plock and lock_pub is None and public_abort:
        args = (private.channel_id, private.details, public_genesis)
        proof = await _public_proof(public, public_abort)
        refunded = await step("prefund", terms, *args, proof)
        if refunded is None:
            raise RuntimeError(f"the private refund of {transfer_id} was refused")
        steps.append(refunded)
    if held and pabort:
        released = await step("prelease", terms, private.channel_id, private.details)
        steps.append(released or "")
    return TransferOutcome(transfer_id, "refunded" if steps else "aborted", tuple(steps))
