"""Private `xfer` steps that a later run can find done: each attempt is journaled (its nonce and
payload hash, `client/step_journal.py`) before it is submitted, so a run after a crash learns
from the ledger what an earlier one did instead of repeating it (a repeated `plock` would be
refused by the contract and leave the driver blind: it could neither prove the lock nor abort).

A step counts as done when its envelope committed VALID and the client's node EXECUTED it
(`ValidatePrivateState`), as `client/private_transfer.private_step` decides for one without a
journal.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from dltmw.aio.rpc_errors import reason_of
from dltmw.client.privacy import PrivacyClient
from dltmw.client.step_journal import Attempt, StepJournal
from dltmw.core.hashing import compute_tx_id
from dltmw.core.privacy.execution import EXECUTED
from dltmw.v1 import private_payload_pb2, transaction_pb2

CONTRACT = "xfer"
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
PROBE_S = 3.0  # how long a resumed run waits for a journaled attempt's commit before resubmitting


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


async def _code(leg: PrivateLeg, tx_id: str, wait_s: float) -> int | None:
    """The validation code of `tx_id` on the gateway's peer; None if not committed in `wait_s`."""
    try:
        status = await asyncio.wait_for(
            leg.privacy.client.commit_status(leg.channel_id, tx_id),
            wait_s,
        )
    except (TimeoutError, grpc.aio.AioRpcError):
        return None
    return int(status.result)


async def _submit(leg: PrivateLeg, attempt: Attempt, tx_id: str) -> int | None:
    """Collect every recipient's agreement for the attempt's tx_id, submit, wait for the code;
    None when refused. Submitted again under the same nonce it is the same transaction: the
    gateway refuses it once on the ledger (DUPLICATE_TX_ID), the ledger marks a second copy
    DUPLICATE_TXID and never executes it, so the earlier copy's code decides."""
    privacy, channel = leg.privacy, leg.channel_id
    try:
        collected = await privacy.collect_agreements(channel, attempt.payload_hash, tx_id)
        envelope, _ = privacy.private_envelope(
            channel, attempt.payload_hash, collected.agreements, attempt.nonce
        )
        await privacy.client.submit(envelope)
    except grpc.aio.AioRpcError as exc:
        if reason_of(exc) != "DUPLICATE_TX_ID":
            return await _code(leg, tx_id, PROBE_S)  # refused, unless it committed meanwhile
    return await _code(leg, tx_id, 60.0)


async def _executed(leg: PrivateLeg, attempt: Attempt, code: int | None) -> bool:
    if code != VALID:
        return False
    try:
        reply = await leg.privacy.validate(leg.channel_id, attempt.payload_hash)
    except grpc.aio.AioRpcError:
        return False
    return bool(reply.status == EXECUTED)


async def recall(
    leg: PrivateLeg, journal: StepJournal, transfer_id: str, function: str
) -> str | None:
    """tx_id of a journaled attempt of `function` that is done, or None; an attempt that never
    committed is submitted again (same nonce: module docstring) and then judged."""
    creator = leg.privacy.client.signer.identity_bytes
    for attempt in journal.attempts(transfer_id, function):
        tx_id = compute_tx_id(attempt.nonce, creator)
        code = await _code(leg, tx_id, PROBE_S)
        if code is None:
            code = await _submit(leg, attempt, tx_id)
        if await _executed(leg, attempt, code):
            return tx_id
    return None


async def journaled_step(
    leg: PrivateLeg, journal: StepJournal, transfer_id: str, function: str, *args: str | bytes
) -> str | None:
    """tx_id of `function(*args)` done privately on the leg: a journaled attempt found done
    (`recall`), else one new attempt, journaled before it is submitted; None if not done."""
    done = await recall(leg, journal, transfer_id, function)
    if done is not None:
        return done
    privacy = leg.privacy
    invocation = private_payload_pb2.PrivateInvocation(
        contract=CONTRACT,
        function=function,
        args=[a.encode() if isinstance(a, str) else a for a in args],
    )
    try:
        digest = await privacy.send_coalesced(
            leg.channel_id, invocation.SerializeToString(), leg.other_orgs
        )
    except grpc.aio.AioRpcError:
        return None
    nonce, tx_id = privacy.new_nonce()
    attempt = Attempt(function, nonce, digest)
    journal.write(transfer_id, attempt)
    return tx_id if await _executed(leg, attempt, await _submit(leg, attempt, tx_id)) else None
