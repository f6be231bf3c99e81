"""`xfer`: the two-phase atomic transfer across channels (issue 19, docs/cross-channel.md).

Each channel of a transfer runs this contract over its own asset (integer balances per account,
as `bank`). A transfer is its *terms*: canonical JSON naming, per channel, the leg that moves on
it (`from`, `to`, `amount`), a `deadline_s` (header time, seconds) and a `nonce`; its id is the
hex SHA-256 of those bytes, so both channels agree on the id exactly when they agree on the terms.

On each channel the record `t/<id>` moves only along
    absent -> locked -> claimed | refunded        absent -> aborted
- `lock(terms)`: before the deadline, takes the leg's amount out of `from` (escrow).
- `abort(terms)`: after the deadline, only while absent: this channel will never lock.
- `claim(terms, proof)`: locked here, and `proof` shows the OTHER channel wrote its record as
  `locked` (a VALID lock there): pays `to`.
- `refund(terms, proof)`: locked here, and `proof` shows the other channel wrote `aborted`: pays
  `from` back.
- `deliver(terms, notarisation)`: a cross-flow DvP (docs/cross-channel.md "Across flows"): the
  other leg is cash held in a notarised UTXO escrow (leg name `utxo`); before the deadline, while
  absent, `notarisation` shows a notary this channel's config trusts notarised an escrow output
  with exactly the terms (`core/utxo/escrow.py`): moves this leg `from` -> `to` and writes the
  record `claimed`, whose commit proof then pays the escrow to the payee (an `aborted` record's
  proof pays it back to the payer).
Anyone may call any of them; proofs are checked against the light client of the other channel
kept in this channel's state (`trust` sets its block 0, once: the one this channel's config
trusts for that channel, `ChannelConfig.trusted_channels`, or, when the config names none, an
admin's choice; `track` feeds it the other channel's config blocks; both checked in
`contract_sdk.crosschain`).

Why atomic: on a channel, `lock` and `abort` both need the record absent and write it, so MVCC
lets at most one of them commit; a claim here needs the other side's lock, a refund here its
abort, so one side is never claimed while the other is refunded, and each side pays out once
(locked -> claimed/refunded, read and written under MVCC). A failed lock transaction is NOT
proof that the lock never happens (a later one could commit): only an `abort` is.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated

from dltmw.contract_sdk import Context, Contract, ContractError, Text, query, transaction
from dltmw.contract_sdk.crosschain import (
    proven_write,
    track_config,
    track_genesis,
    tracked_channel,
    tracked_genesis_hash,
)
from dltmw.contract_sdk.notarisation import (
    UTXO_LEG,
    EscrowState,
    fingerprint,
    notarised_escrows,
)
from dltmw.contract_sdk.private_leg import (
    PrivateLegTerms,
    hold_value,
    open_details,
    private_leg,
    proven_private_write,
    public_write,
    record_value,
)

AMOUNT_MAX = 10**15
Account = Annotated[str, Text(1, 128)]
Channel = Annotated[str, Text(1, 64)]
LOCKED, ABORTED, CLAIMED, REFUNDED = "locked", "aborted", "claimed", "refunded"


def _balance(ctx: Context, account: str) -> int:
    value = ctx.get("a/" + account)
    if value is None:
        raise ContractError(f"account {account!r} does not exist", 404)
    return int(value)


def _credit(ctx: Context, account: str, amount: int) -> None:
    ctx.put("a/" + account, str(_balance(ctx, account) + amount).encode())


def _here(ctx: Context) -> tuple[str, int]:
    if ctx.tx is None or not ctx.tx.channel_id:
        raise ContractError("xfer runs only in a transaction of a channel", 400)
    return ctx.tx.channel_id, ctx.tx.timestamp_s


def _terms(raw: bytes, here: str) -> tuple[str, dict[str, object], str, int]:
    """(transfer id, this channel's leg, the other channel, deadline_s) of canonical terms."""
    try:
        terms = json.loads(raw)
    except ValueError as exc:
        raise ContractError(f"terms are not JSON: {exc}", 400) from exc
    canonical = json.dumps(terms, sort_keys=True, separators=(",", ":")).encode()
    if canonical != raw:
        raise ContractError("terms are not canonical JSON (sorted keys, no spaces)", 400)
    legs = terms.get("legs") if isinstance(terms, dict) else None
    if not isinstance(legs, dict) or len(legs) != 2 or here not in legs:
        raise ContractError(f"terms must name two legs, one on {here!r}", 400)
    deadline = terms.get("deadline_s")
    if not isinstance(deadline, int):
        raise ContractError("terms need an integer deadline_s", 400)
    leg = legs[here]
    ok = isinstance(leg, dict) and all(k in leg for k in ("from", "to", "amount"))
    amount = leg.get("amount") if isinstance(leg, dict) else None
    if not ok or not isinstance(amount, int) or not 0 < amount <= AMOUNT_MAX:
        raise ContractError(f"the leg on {here!r} needs from, to and an amount in 1..", 400)
    other = next(c for c in legs if c != here)
    return hashlib.sha256(raw).hexdigest(), leg, other, deadline


def _escrow_matches(
    ctx: Context, raw: bytes, transfer_id: str, deadline: int, e: EscrowState
) -> bool:
    """Does escrow state `e` hold exactly the terms' UTXO leg for this transfer on this channel,
    under this channel's real block 0 (the trust root its payout's proof is checked against)?"""
    leg = json.loads(raw)["legs"].get(UTXO_LEG)
    tx = ctx.tx
    if not isinstance(leg, dict) or tx is None or not tx.channel_genesis:
        return False
    want = (
        transfer_id,
        leg.get("payer"),
        leg.get("payee"),
        leg.get("issuer"),
        leg.get("currency"),
        leg.get("amount"),
        tx.channel_id,
        tx.channel_genesis,
        deadline,
    )
    got = (
        e.transfer_id,
        fingerprint(e.payer),
        fingerprint(e.payee),
        fingerprint(e.issuer),
        e.currency,
        e.amount,
        e.channel_id,
        e.genesis_hash,
        e.deadline_s,
    )
    return want == got


def _record(ctx: Context, transfer_id: str) -> dict[str, str] | None:
    value = ctx.get("t/" + transfer_id)
    return None if value is None else dict(json.loads(value))


def _write(ctx: Context, transfer_id: str, state: str, here: str) -> None:
    """The record, with the tx_id of each step so far (a new coordinator finds the lock or
    abort to prove from the record alone, after a crash)."""
    body = dict(_record(ctx, transfer_id) or {})
    body.update({"channel": here, "id": transfer_id, "state": state})
    body[state + "_tx"] = ctx.tx.tx_id if ctx.tx is not None else ""
    ctx.put("t/" + transfer_id, json.dumps(body, sort_keys=True).encode())
    ctx.emit(state, transfer_id)


def _check_root(ctx: Context, channel: str, record: bytes) -> bool:
    """TRUST_ROOT_MISMATCH unless the light client `record` of `channel` starts from the block 0
    this channel's config trusts for it; False when the config names no channel at all (then an
    admin's `trust` is the root: channels made before ChannelConfig.trusted_channels)."""
    roots = dict(ctx.tx.trusted_genesis) if ctx.tx is not None else {}
    if not roots:
        return False
    want = roots.get(channel)
    if want is None:
        raise ContractError(f"TRUST_ROOT_MISMATCH: this channel trusts no channel {channel!r}", 400)
    got = tracked_genesis_hash(record)
    if got != want:
        raise ContractError(
            f"TRUST_ROOT_MISMATCH: block 0 of {channel!r} is {got.hex()[:16]}..., this "
            f"channel's config trusts {want.hex()[:16]}...",
            400,
        )
    return True


def _private_other(ctx: Context, terms: bytes, other: str) -> PrivateLegTerms | None:
    """The other leg's terms if it is private (docs/cross-channel.md "A private leg"), after
    checking they name THIS channel's real block 0 as the one the private side trusts:
    TRUST_ROOT_MISMATCH otherwise (its proofs of this channel would be judged on a fake chain)."""
    leg = private_leg(json.loads(terms)["legs"][other])
    mine = ctx.tx.channel_genesis.hex() if ctx.tx is not None else ""
    if leg is not None and leg.trust != mine:
        raise ContractError(
            f"TRUST_ROOT_MISMATCH: the private leg on {other!r} would trust block 0 "
            f"{leg.trust[:16]}... for this channel, not {mine[:16]}...",
            400,
        )
    return leg


def _other_side(
    ctx: Context, terms: bytes, transfer_id: str, other: str, proof: bytes, ts: int
) -> str:
    """The state the other channel's VALID transaction wrote for this transfer."""
    record = ctx.get("lc/" + other)
    if record is None:
        raise ContractError(f"channel {other!r} is not tracked here (trust it first)", 412)
    _check_root(ctx, other, record)
    leg = _private_other(ctx, terms, other)
    if leg is not None:
        found = proven_private_write(record, proof, ts, leg)
    else:
        found = proven_write(record, proof, ts, "xfer", "t/" + transfer_id)
    written = dict(json.loads(found.value))
    if written.get("channel") != other or written.get("id") != transfer_id:
        raise ContractError("PROOF_MISMATCH: the proof is of another transfer or channel", 400)
    return str(written.get("state"))


def _private_only(ctx: Context) -> None:
    """The private leg's functions run only in a private transaction (executed by the
    recipients with no header): on a public channel they would bypass lock's deadline."""
    if ctx.tx is not None:
        raise ContractError("this function runs only in a private transaction", 400)


def _private_terms(raw: bytes, here: str) -> tuple[str, PrivateLegTerms, str]:
    """(transfer id, the private leg's terms on `here`, the other channel) of canonical terms."""
    try:
        terms = json.loads(raw)
    except ValueError as exc:
        raise ContractError(f"terms are not JSON: {exc}", 400) from exc
    if json.dumps(terms, sort_keys=True, separators=(",", ":")).encode() != raw:
        raise ContractError("terms are not canonical JSON (sorted keys, no spaces)", 400)
    legs = terms.get("legs") if isinstance(terms, dict) else None
    if not isinstance(legs, dict) or len(legs) != 2 or here not in legs:
        raise ContractError(f"terms must name two legs, one on {here!r}", 400)
    leg = private_leg(legs[here])
    if leg is None:
        raise ContractError(f"PRIVATE_LEG_MALFORMED: the leg on {here!r} is not private", 400)
    other = next(c for c in legs if c != here)
    return hashlib.sha256(raw).hexdigest(), leg, other


def _private_state(ctx: Context, transfer_id: str) -> tuple[str, str]:
    """(record state, hold state) of a private leg; "absent" for either missing."""
    states = []
    for key in ("t/", "h/"):
        value = ctx.get(key + transfer_id)
        states.append("absent" if value is None else str(json.loads(value)["state"]))
    return states[0], states[1]


class TransferContract(Contract):
    """open / balance / trust / track / lock / abort / claim / refund / status / record."""

    name = "xfer"

    @transaction
    def open(self, ctx: Context, account: Account, initial_balance: int) -> bytes:
        """open(account, initial_balance): create an account (as `bank`)."""
        if not 0 <= initial_balance <= AMOUNT_MAX or ctx.get("a/" + account) is not None:
            raise ContractError(f"cannot open {account!r} with {initial_balance}", 409)
        ctx.put("a/" + account, str(initial_balance).encode())
        return b""

    @query
    def balance(self, ctx: Context, account: Account) -> int:
        """balance(account)."""
        return _balance(ctx, account)

    @transaction
    def trust(self, ctx: Context, genesis: bytes) -> str:
        """trust(block 0 of another channel): start its light client, once. Anyone, if it is
        the block 0 this channel's config trusts for that channel (`trusted_channels`); if the
        config names no channel, an admin (whose call is then the trust root)."""
        by_config = ctx.tx is not None and bool(ctx.tx.trusted_genesis)
        if not by_config and (ctx.tx is None or "admin" not in ctx.tx.creator_roles):
            raise ContractError("only an admin sets a channel's trust root", 403)
        record = track_genesis(genesis)
        channel = tracked_channel(record)
        _check_root(ctx, channel, record)
        if ctx.get("lc/" + channel) is not None:
            raise ContractError(f"channel {channel!r} is already tracked", 409)
        ctx.put("lc/" + channel, record)
        return channel

    @transaction
    def track(self, ctx: Context, channel: Channel, block: bytes) -> bytes:
        """track(channel, config block): advance its light client (anyone; checked)."""
        _, ts = _here(ctx)
        record = ctx.get("lc/" + channel)
        if record is None:
            raise ContractError(f"channel {channel!r} is not tracked here", 404)
        _check_root(ctx, channel, record)
        ctx.put("lc/" + channel, track_config(record, block, ts))
        return b""

    @transaction
    def lock(self, ctx: Context, terms: bytes) -> str:
        """lock(terms): escrow this channel's leg, before the deadline; returns the id."""
        here, ts = _here(ctx)
        transfer_id, leg, other, deadline = _terms(terms, here)
        if ts > deadline:
            raise ContractError("the transfer's deadline has passed", 409)
        if _record(ctx, transfer_id) is not None:
            raise ContractError(f"transfer {transfer_id} already exists here", 409)
        _private_other(ctx, terms, other)  # never lock against a private leg on a fake root
        src, amount = str(leg["from"]), int(str(leg["amount"]))
        if _balance(ctx, src) < amount:
            raise ContractError(f"insufficient funds in {src!r}", 400)
        _balance(ctx, str(leg["to"]))  # the payee must exist: a claim must be able to pay
        _credit(ctx, src, -amount)
        _write(ctx, transfer_id, LOCKED, here)
        return transfer_id

    @transaction
    def abort(self, ctx: Context, terms: bytes) -> str:
        """abort(terms): after the deadline, if this channel never locked: it never will."""
        here, ts = _here(ctx)
        transfer_id, _, _, deadline = _terms(terms, here)
        if ts <= deadline:
            raise ContractError("the transfer's deadline has not passed", 409)
        if _record(ctx, transfer_id) is not None:
            raise ContractError(f"transfer {transfer_id} already exists here", 409)
        _write(ctx, transfer_id, ABORTED, here)
        return transfer_id

    @transaction
    def deliver(self, ctx: Context, terms: bytes, notarisation: bytes) -> str:
        """deliver(terms, notarisation of the cash escrow): a cross-flow DvP's delivery, before
        the deadline: moves this leg and writes `claimed` (module docstring)."""
        here, ts = _here(ctx)
        transfer_id, leg, other, deadline = _terms(terms, here)
        if other != UTXO_LEG:
            raise ContractError(f"deliver needs a {UTXO_LEG!r} leg, not {other!r}", 400)
        if ts > deadline:
            raise ContractError("the transfer's deadline has passed", 409)
        if _record(ctx, transfer_id) is not None:
            raise ContractError(f"transfer {transfer_id} already exists here", 409)
        trusted = ctx.tx.trusted_notaries if ctx.tx is not None else ()
        escrows = notarised_escrows(notarisation, trusted)
        if not any(_escrow_matches(ctx, terms, transfer_id, deadline, e) for e in escrows):
            raise ContractError(
                "ESCROW_MISMATCH: the notarised transaction holds no escrow with exactly this "
                "transfer's terms, channel and block 0",
                400,
            )
        src, dst, amount = str(leg["from"]), str(leg["to"]), int(str(leg["amount"]))
        if _balance(ctx, src) < amount:
            raise ContractError(f"insufficient funds in {src!r}", 400)
        _balance(ctx, dst)
        _credit(ctx, src, -amount)
        _credit(ctx, dst, amount)
        _write(ctx, transfer_id, CLAIMED, here)
        return transfer_id

    @transaction
    def claim(self, ctx: Context, terms: bytes, proof: bytes) -> str:
        """claim(terms, proof of the other channel's lock): pay this leg's `to`."""
        return self._settle(ctx, terms, proof, LOCKED, CLAIMED, "to")

    @transaction
    def refund(self, ctx: Context, terms: bytes, proof: bytes) -> str:
        """refund(terms, proof of the other channel's abort): pay this leg's `from` back."""
        return self._settle(ctx, terms, proof, ABORTED, REFUNDED, "from")

    def _settle(
        self, ctx: Context, terms: bytes, proof: bytes, needed: str, state: str, payee: str
    ) -> str:
        here, ts = _here(ctx)
        transfer_id, leg, other, _ = _terms(terms, here)
        record = _record(ctx, transfer_id)
        if record is None or record.get("state") != LOCKED:
            now = "absent" if record is None else record.get("state")
            raise ContractError(f"transfer {transfer_id} is {now} here, not locked", 409)
        seen = self._proven_state(ctx, terms, transfer_id, other, proof, ts)
        if seen != needed:
            raise ContractError(f"PROOF_MISMATCH: {other} wrote {seen!r}, not {needed!r}", 400)
        _credit(ctx, str(leg[payee]), int(str(leg["amount"])))
        _write(ctx, transfer_id, state, here)
        return transfer_id

    def _proven_state(
        self, ctx: Context, terms: bytes, transfer_id: str, other: str, proof: bytes, ts: int
    ) -> str:
        """The state `proof` shows the other channel wrote for the transfer: the one place a
        proof is judged (the simulator's negative control overrides it to accept any proof)."""
        return _other_side(ctx, terms, transfer_id, other, proof, ts)

    # -- the private leg (docs/cross-channel.md "A private leg"; run in private transactions)

    @transaction
    def pescrow(self, ctx: Context, terms: bytes, channel: Channel, details: bytes) -> str:
        """pescrow(terms, this channel, leg details): hold the private leg's amount (h/<id>)."""
        _private_only(ctx)
        transfer_id, leg, _ = _private_terms(terms, channel)
        d = open_details(details, leg)
        if _private_state(ctx, transfer_id) != ("absent", "absent"):
            raise ContractError(f"transfer {transfer_id} already exists here", 409)
        if _balance(ctx, d.source) < d.amount:
            raise ContractError(f"insufficient funds in {d.source!r}", 400)
        _balance(ctx, d.target)  # the payee must exist: a claim must be able to pay
        _credit(ctx, d.source, -d.amount)
        ctx.put("h/" + transfer_id, hold_value(transfer_id, "held"))
        return transfer_id

    @transaction
    def plock(self, ctx: Context, terms: bytes, channel: Channel) -> str:
        """plock(terms, this channel): the held leg is locked. Touches h/<id> and t/<id> only,
        so its disclosed outcome shows no balance (core/private_leg.py)."""
        _private_only(ctx)
        transfer_id, _, _ = _private_terms(terms, channel)
        if _private_state(ctx, transfer_id) != ("absent", "held"):
            raise ContractError(f"transfer {transfer_id} is not held and unlocked here", 409)
        ctx.put("t/" + transfer_id, record_value(channel, transfer_id, LOCKED))
        return transfer_id

    @transaction
    def pabort(self, ctx: Context, terms: bytes, channel: Channel) -> str:
        """pabort(terms, this channel): this leg will never lock. Touches t/<id> only. No clock
        here: an early abort only fails the transfer (the other side is refunded)."""
        _private_only(ctx)
        transfer_id, _, _ = _private_terms(terms, channel)
        if ctx.get("t/" + transfer_id) is not None:
            raise ContractError(f"transfer {transfer_id} already exists here", 409)
        ctx.put("t/" + transfer_id, record_value(channel, transfer_id, ABORTED))
        return transfer_id

    @transaction
    def pclaim(
        self,
        ctx: Context,
        terms: bytes,
        channel: Channel,
        details: bytes,
        genesis: bytes,
        proof: bytes,
    ) -> str:
        """pclaim(terms, channel, details, other's block 0, proof of its lock): pay `to`."""
        return self._psettle(ctx, (terms, channel, details, genesis, proof), LOCKED, CLAIMED)

    @transaction
    def prefund(
        self,
        ctx: Context,
        terms: bytes,
        channel: Channel,
        details: bytes,
        genesis: bytes,
        proof: bytes,
    ) -> str:
        """prefund(terms, channel, details, other's block 0, proof of its abort): pay `from`."""
        return self._psettle(ctx, (terms, channel, details, genesis, proof), ABORTED, REFUNDED)

    @transaction
    def prelease(self, ctx: Context, terms: bytes, channel: Channel, details: bytes) -> str:
        """prelease(terms, channel, details): a hold whose leg was aborted goes back to `from`."""
        _private_only(ctx)
        transfer_id, leg, _ = _private_terms(terms, channel)
        d = open_details(details, leg)
        if _private_state(ctx, transfer_id) != (ABORTED, "held"):
            raise ContractError(f"transfer {transfer_id} is not aborted and held here", 409)
        _credit(ctx, d.source, d.amount)
        ctx.put("h/" + transfer_id, hold_value(transfer_id, "spent"))
        return transfer_id

    def _psettle(
        self, ctx: Context, args: tuple[bytes, str, bytes, bytes, bytes], needed: str, state: str
    ) -> str:
        _private_only(ctx)
        terms, channel, details, genesis, proof = args
        transfer_id, leg, other = _private_terms(terms, channel)
        d = open_details(details, leg)
        if _private_state(ctx, transfer_id) != (LOCKED, "held"):
            raise ContractError(f"transfer {transfer_id} is not locked here", 409)
        if tracked_genesis_hash(track_genesis(genesis)).hex() != leg.trust:
            raise ContractError("TRUST_ROOT_MISMATCH: not the block 0 the terms name", 400)
        written = dict(json.loads(public_write(genesis, proof, "xfer", "t/" + transfer_id).value))
        if written.get("channel") != other or written.get("id") != transfer_id:
            raise ContractError("PROOF_MISMATCH: the proof is of another transfer or channel", 400)
        if written.get("state") != needed:
            raise ContractError(f"PROOF_MISMATCH: {other} wrote {written.get('state')!r}", 400)
        _credit(ctx, d.target if state == CLAIMED else d.source, d.amount)
        ctx.put("h/" + transfer_id, hold_value(transfer_id, "spent"))
        ctx.put("t/" + transfer_id, record_value(channel, transfer_id, state))
        return transfer_id

    @query
    def status(self, ctx: Context, transfer_id: Annotated[str, Text(64, 64)]) -> str:
        """status(transfer id): absent, locked, aborted, claimed or refunded."""
        record = _record(ctx, transfer_id)
        return "absent" if record is None else str(record.get("state"))

    @query
    def record(self, ctx: Context, transfer_id: Annotated[str, Text(64, 64)]) -> bytes:
        """record(transfer id): the record as JSON (state and each step's tx_id), or 404."""
        value = ctx.get("t/" + transfer_id)
        if value is None:
            raise ContractError(f"no transfer {transfer_id} here", 404)
        return value
