"""The UTXO escrow of a cross-flow DvP: cash held until a channel's `xfer` record decides.

Issue 19 item 3 (docs/cross-channel.md "Across flows"): securities on a channel, cash as a
notarised UTXO state. The buyer's cash first goes into an escrow output (contract "escrow",
data `EscrowState`: transfer id, payer, payee, issuer, currency, amount, the securities channel
and the hash of its block 0, the deadline) by an ordinary notarised transaction. The channel's
`xfer.deliver` accepts the notarisation of that transaction as proof that the cash is held, moves
the securities and writes the record `claimed`; or, after the deadline, `xfer.abort` writes
`aborted`. The escrow is then paid out by a transaction carrying a commit proof of that record:
`claimed` pays the payee, `aborted` pays the payer back. Exactly one payout: it consumes the
escrow state (the notary's double-spend check), and the record is never both (xfer's MVCC).

The payout's evidence is checked here, purely, by whoever verifies the transaction (a validating
notary, the parties): block 0 from the payout must hash to the escrow's `genesis_hash` (the trust
root the payer and payee agreed on when the escrow was made), the channel's later config blocks
are taken by a light client, and the proof must show a VALID `xfer` transaction writing the
record of this transfer on this channel (`core/proven_write.py`). Certificates are judged at the
start of the payout's time window, which must be present and at most PAYOUT_WINDOW_MAX_NS wide:
the notary refuses a window that does not hold, so that time is "now" within the window.

Why the escrow needs a validating notary: nobody signs a payout (the proof authorises it), and a
non-validating notary runs no contract, so it would let anyone consume the escrow into a
transaction no verifier accepts (the cash would be stuck: denial of state). `escrow` therefore
states that it is notarised by a validating notary; docs/cross-channel.md says so.

This module checks the escrow's own rules and returns what the transaction must do; the cash
accounting (escrow states count as cash of their issuer and currency, so `cash.move` conserves
value into and out of an escrow) is in `contracts.py`, which calls it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime

from google.protobuf.message import DecodeError

from dltmw.core.block import block_hash
from dltmw.core.errors import ClientError
from dltmw.core.light_client import advance, track
from dltmw.core.proven_write import proven_write
from dltmw.core.utxo.model import Output, Window, is_tx_id
from dltmw.v1 import block_pb2, escrow_pb2

CONTRACT = "escrow"
XFER = "xfer"  # the channel contract whose record decides (contracts/transfer.py)
CLAIMED, ABORTED = "claimed", "aborted"
PAYOUT_WINDOW_MAX_NS = 10 * 60 * 1_000_000_000
CONFIG_BLOCKS_MAX = 64
AMOUNT_MAX = 10**15
UTXO_LEG = "utxo"  # the name of a cross-flow DvP's escrowed cash leg in `xfer` terms


def fingerprint(identity: bytes) -> str:
    """How `xfer` terms name a UTXO party (payer, payee, issuer): the hex SHA-256 of its
    serialised Identity (an Identity holds a whole certificate: too long for the terms)."""
    return hashlib.sha256(identity).hexdigest()


class EscrowInvalid(Exception):
    """The escrow's rules refuse the transaction (`contracts.py` makes it ContractRejected);
    the message starts with an ErrorReason name where one applies."""


def escrow_state(output: Output) -> escrow_pb2.EscrowState:
    """The parsed, well-formed EscrowState of an escrow output."""
    msg = escrow_pb2.EscrowState()
    try:
        msg.ParseFromString(output.data)
    except DecodeError as exc:
        raise EscrowInvalid(f"escrow state does not parse: {exc}") from None
    ok = (
        is_tx_id(msg.transfer_id)
        and msg.payer
        and msg.payee
        and msg.payer != msg.payee
        and msg.issuer
        and msg.currency
        and 0 < msg.amount <= AMOUNT_MAX
        and msg.channel_id
        and len(msg.genesis_hash) == 32
    )
    if not ok:
        raise EscrowInvalid(
            "escrow state needs a transfer id, distinct payer and payee, an issuer, a currency, "
            "an amount in 1..10^15, a channel and a 32-byte block 0 hash"
        )
    if not {msg.payer, msg.payee} <= set(output.participants):
        raise EscrowInvalid("escrow state's payer and payee must be participants")
    return msg


def check_open(states: Sequence[escrow_pb2.EscrowState], signers: Sequence[bytes]) -> None:
    """`escrow.open`: new escrow outputs, each signed for by its payer (whose cash it holds)."""
    if not states:
        raise EscrowInvalid("escrow.open: at least one escrow output")
    if not {s.payer for s in states} <= set(signers):
        raise EscrowInvalid("escrow.open: every escrow's payer must sign")


def payout_recipient(state: escrow_pb2.EscrowState, data: bytes, window: Window) -> bytes:
    """Whom the escrow `state` pays, by the channel record the `escrow.payout` command's data
    (EscrowPayout) proves: the payee if `claimed`, the payer if `aborted` (module docstring)."""
    at = _judged_at(window)
    payout = escrow_pb2.EscrowPayout()
    try:
        payout.ParseFromString(data)
        genesis = block_pb2.Block.FromString(payout.genesis)
        configs = [block_pb2.Block.FromString(b) for b in payout.config_blocks]
    except DecodeError as exc:
        raise EscrowInvalid(f"MALFORMED: escrow payout does not parse: {exc}") from None
    if len(configs) > CONFIG_BLOCKS_MAX:
        raise EscrowInvalid(f"MALFORMED: more than {CONFIG_BLOCKS_MAX} config blocks")
    if block_hash(genesis) != state.genesis_hash:
        raise EscrowInvalid(
            f"TRUST_ROOT_MISMATCH: the payout's block 0 is not the one the escrow names for "
            f"{state.channel_id!r}"
        )
    try:
        client = track(genesis)
        for block in configs:
            client = advance(client, block, at)
        key = "t/" + state.transfer_id
        value = proven_write(client, payout.commit_proof, at, XFER, key).value
    except ClientError as exc:
        raise EscrowInvalid(str(exc)) from None
    try:
        record = json.loads(value)
    except ValueError:
        record = None
    if not isinstance(record, dict) or (record.get("channel"), record.get("id")) != (
        state.channel_id,
        state.transfer_id,
    ):
        raise EscrowInvalid("PROOF_MISMATCH: the proof is of another transfer or channel")
    decided = record.get("state")
    if decided == CLAIMED:
        return state.payee
    if decided == ABORTED:
        return state.payer
    raise EscrowInvalid(f"PROOF_MISMATCH: the record is {decided!r}, not claimed or aborted")


def _judged_at(window: Window) -> datetime:
    """When certificates are judged: the start of a bounded window (module docstring)."""
    if window.from_ns is None or window.until_ns is None:
        raise EscrowInvalid("ESCROW_PAYOUT_INVALID: a payout needs a time window with both ends")
    if not 0 < window.until_ns - window.from_ns <= PAYOUT_WINDOW_MAX_NS:
        raise EscrowInvalid(
            f"ESCROW_PAYOUT_INVALID: a payout's time window must be at most "
            f"{PAYOUT_WINDOW_MAX_NS // 1_000_000_000} s wide"
        )
    return datetime.fromtimestamp(window.from_ns // 1_000_000_000, UTC)
