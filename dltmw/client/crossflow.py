"""`run_crossflow`: one cross-flow DvP — securities on a channel, cash in a notarised UTXO escrow.

Issue 19 item 3 (docs/cross-channel.md "Across flows"). The buyer first puts the cash into an
escrow (`open_escrow`: an ordinary notarised transaction, `core/utxo/escrow.py`); whoever holds
the terms and that notarisation (the buyer, the seller, a relayer, a new process after a crash)
then drives the rest, because every step is checked by the channel's `xfer` or by the escrow
contract, never by the driver:

1. read the channel's record of the transfer (`client/transfer.read_record`);
2. absent and before the deadline: `xfer.deliver(terms, notarisation)` (the seller's securities
   move to the buyer, the record becomes `claimed`);
3. still absent: once the deadline passed, `xfer.abort` (the record becomes `aborted`);
4. fetch the commit proof of the step the record names and pay the escrow out with it
   (`pay_out`: to the payee if `claimed`, back to the payer if `aborted`). A notary that reports
   the escrow already consumed means an earlier run paid it out: exactly one payout exists.

Channel steps refused for a transient reason are retried (`client/transfer.submit_step`). The
escrow needs a validating notary (it runs the escrow contract before it signs; a non-validating
one would let anyone consume the escrow into a payout no verifier accepts).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import timedelta

import grpc

from dltmw.aio.clock import utc_now
from dltmw.aio.rpc_errors import reason_of
from dltmw.client.crosschain import fetch_commit_proof
from dltmw.client.transfer import CONTRACT, Leg, read_record, submit_step
from dltmw.client.utxo import NotaryClient
from dltmw.core.identity import SigningIdentity
from dltmw.core.utxo.build import TxSpec, build_transaction, cash_output, sign_transaction
from dltmw.core.utxo.contracts import cash_state
from dltmw.core.utxo.escrow import CONTRACT as ESCROW
from dltmw.core.utxo.escrow import UTXO_LEG, escrow_state, fingerprint
from dltmw.core.utxo.model import Command, Output, Ref, Window, read_transaction, to_ns
from dltmw.core.utxo.verify import read_signed
from dltmw.v1 import escrow_pb2, utxo_pb2

PAYOUT_WINDOW = timedelta(minutes=5)  # within escrow.PAYOUT_WINDOW_MAX_NS
CLOCK_SLACK = timedelta(seconds=5)  # the window opens a little before "now" (clock skew)


class EscrowConsumed(Exception):
    """The notary reports an input of the transaction already consumed."""


@dataclass(frozen=True)
class Escrow:
    """The cash side of a cross-flow DvP's terms."""

    payer: bytes  # serialised Identity of the buyer
    payee: bytes  # ... of the seller
    issuer: bytes
    currency: str
    amount: int


@dataclass(frozen=True)
class CrossflowOutcome:
    """How it ended: "claimed" (securities delivered, escrow paid to the payee) or "aborted"
    (escrow paid back to the payer); `payout` is the notarised payout of this run, or b"" when
    an earlier run had paid it out."""

    transfer_id: str
    outcome: str
    payout: bytes


def crossflow_terms(
    channel_id: str, securities: tuple[str, str, int], cash: Escrow, deadline_s: int, nonce: str
) -> bytes:
    """Canonical terms: the channel leg (from account, to account, amount) and the UTXO leg
    (parties by `fingerprint`), as `xfer.deliver` reads them."""
    src, dst, amount = securities
    body = {
        "deadline_s": deadline_s,
        "legs": {
            channel_id: {"from": src, "to": dst, "amount": amount},
            UTXO_LEG: {
                "payer": fingerprint(cash.payer),
                "payee": fingerprint(cash.payee),
                "issuer": fingerprint(cash.issuer),
                "currency": cash.currency,
                "amount": cash.amount,
            },
        },
        "nonce": nonce,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def escrow_output(
    terms: bytes, cash: Escrow, channel_id: str, genesis_hash: bytes, deadline_s: int
) -> Output:
    """The escrow output that holds `cash` for `terms` on `channel_id` (block 0 `genesis_hash`)."""
    state = escrow_pb2.EscrowState(
        transfer_id=hashlib.sha256(terms).hexdigest(),
        payer=cash.payer,
        payee=cash.payee,
        issuer=cash.issuer,
        currency=cash.currency,
        amount=cash.amount,
        channel_id=channel_id,
        genesis_hash=genesis_hash,
        deadline_s=deadline_s,
    )
    return Output(ESCROW, state.SerializeToString(), (cash.payer, cash.payee))


async def notarise(
    notary: NotaryClient, requester: SigningIdentity, stx: bytes, dependencies: list[bytes]
) -> bytes:
    """`stx` with the (validating) notary's signature; EscrowConsumed when an input is already
    consumed; a refusal raises grpc.aio.AioRpcError."""
    wire = read_transaction(utxo_pb2.SignedUtxoTransaction.FromString(stx).transaction)
    try:
        reply = await notary.notarise_wire(wire, requester, stx, dependencies)
    except grpc.aio.AioRpcError as exc:
        if reason_of(exc) == "INPUT_CONSUMED":
            raise EscrowConsumed(f"{wire.tx_id}: an input is already consumed") from exc
        raise
    if reply.conflicts or not reply.HasField("notary_signature"):
        raise EscrowConsumed(f"{wire.tx_id}: an input is already consumed")
    out = utxo_pb2.SignedUtxoTransaction.FromString(stx)
    out.notary_signature.CopyFrom(reply.notary_signature)
    if reply.HasField("batch_proof"):
        out.notary_batch_proof.CopyFrom(reply.batch_proof)
    return out.SerializeToString()


async def open_escrow(
    notary: NotaryClient,
    payer: SigningIdentity,
    funding: bytes,
    index: int,
    escrow: Output,
    nonce: bytes,
) -> bytes:
    """Move the payer's cash state (output `index` of the notarised `funding`) into `escrow`,
    the change back to the payer; returns the notarised escrow transaction."""
    funded = read_signed(funding).wire
    cash = cash_state(funded.outputs[index])
    held = escrow_state(escrow).amount
    outputs = [escrow]
    if cash.amount > held:
        outputs.append(
            cash_output(cash.issuer, payer.identity_bytes, cash.currency, cash.amount - held)
        )
    raw = build_transaction(
        TxSpec(
            notary=notary.notary_id,
            nonce=nonce,
            inputs=[funded.out_ref(index)],
            outputs=outputs,
            commands=[
                Command("cash", "move", (payer.identity_bytes,)),
                Command(ESCROW, "open", (payer.identity_bytes,)),
            ],
        )
    )
    stx = sign_transaction(raw, read_transaction(raw).tx_id, [payer]).SerializeToString()
    return await notarise(notary, payer, stx, [funding])


def _escrow_of(escrow_tx: bytes, transfer_id: str) -> tuple[Ref, escrow_pb2.EscrowState]:
    wire = read_signed(escrow_tx).wire
    for i, output in enumerate(wire.outputs):
        if output.contract == ESCROW and escrow_state(output).transfer_id == transfer_id:
            return wire.out_ref(i), escrow_state(output)
    raise ValueError(f"{wire.tx_id} holds no escrow of transfer {transfer_id}")


async def pay_out(
    notary: NotaryClient,
    requester: SigningIdentity,
    escrow_tx: bytes,
    transfer_id: str,
    genesis: bytes,
    proof: bytes,
    to_payee: bool,
    nonce: bytes,
) -> bytes:
    """Pay the escrow of `transfer_id` in the notarised `escrow_tx` to its payee (or back to
    its payer) with `proof` of the channel record; returns the notarised payout."""
    ref, state = _escrow_of(escrow_tx, transfer_id)
    to = state.payee if to_payee else state.payer
    start = utc_now() - CLOCK_SLACK
    data = escrow_pb2.EscrowPayout(genesis=genesis, commit_proof=proof)
    raw = build_transaction(
        TxSpec(
            notary=notary.notary_id,
            nonce=nonce,
            inputs=[ref],
            outputs=[cash_output(state.issuer, to, state.currency, state.amount)],
            commands=[
                Command("cash", "move", ()),
                Command(ESCROW, "payout", (), data.SerializeToString()),
            ],
            window=Window(to_ns(start), to_ns(start + PAYOUT_WINDOW)),
        )
    )
    stx = sign_transaction(raw, read_transaction(raw).tx_id, []).SerializeToString()
    return await notarise(notary, requester, stx, [escrow_tx])


async def run_crossflow(
    channel: Leg,
    notary: NotaryClient,
    requester: SigningIdentity,
    terms: bytes,
    escrow_tx: bytes,
    genesis: bytes,
    deadline_s: int,
    wait_max_s: float = 300.0,
) -> CrossflowOutcome:
    """Drive the DvP of `terms`, whose cash `escrow_tx` holds, to its end from whatever state
    it is in (module docstring); `genesis` is the channel's block 0 (the escrow's trust root)."""
    transfer_id = hashlib.sha256(terms).hexdigest()
    gw, cid = channel.gateway, channel.channel_id
    record = await read_record(gw, cid, transfer_id)
    if record["state"] == "absent" and utc_now().timestamp() <= deadline_s:
        await submit_step(gw, cid, CONTRACT, "deliver", terms, escrow_tx)
        record = await read_record(gw, cid, transfer_id)
    if record["state"] == "absent":
        wait_s = deadline_s - utc_now().timestamp() + 1.0
        if wait_s > wait_max_s:
            raise TimeoutError(f"the deadline is {wait_s:.0f} s away (more than {wait_max_s} s)")
        await asyncio.sleep(max(0.0, wait_s))  # a deadline in header time: nothing to poll
        await submit_step(gw, cid, CONTRACT, "abort", terms)
        record = await read_record(gw, cid, transfer_id)
    state = record["state"]
    if state not in ("claimed", "aborted"):
        raise RuntimeError(f"transfer {transfer_id} is {state!r} on {cid}: not a cross-flow DvP")
    proof = await fetch_commit_proof(channel.peers, cid, record[state + "_tx"])
    try:
        paid = await pay_out(
            notary,
            requester,
            escrow_tx,
            transfer_id,
            genesis,
            proof.SerializeToString(),
            state == "claimed",
            secrets.token_bytes(32),
        )
    except EscrowConsumed:  # an earlier run paid it out (there is only one payout)
        paid = b""
    return CrossflowOutcome(transfer_id, state, paid)
