"""A cross-flow DvP (issue 19 item 3): securities on a channel (`xfer.deliver`), cash held in a
notarised UTXO escrow (`core/utxo/escrow.py`) paid out by a commit proof of the channel record.

In memory, with real parts: the `trading` channel (PBFT-lite) runs the real `xfer`, its blocks
are cut and signed and proofs carry real peer attestations (`crosschain_parties`); the UTXO side
runs the real contracts, signatures and batch-signed notarisations through a small validating
notary (a spent-set, `verify_ledger_tx`, `check_signatures`, `sign_batch`). Checked: the happy
path, abort and refund, each forgery refused with its reason and nothing moved, a double
payout, and random interleavings by a relayer replaying everything it saw (never split, nothing
created or destroyed), with negative controls that disable each verification.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import timedelta

import pytest
from crosschain_parties import AT_NOW, NOW, make_world, proof_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_transfer import T0, Side
from utxo_parties import Parties, make_parties, nonce

from dltmw.contract_sdk import notarisation as sdk_notarisation
from dltmw.core.block import block_hash
from dltmw.core.channel import ConfigError, channel_view
from dltmw.core.config_edit import with_trusted_notary
from dltmw.core.errors import ClientError
from dltmw.core.identity import SigningIdentity
from dltmw.core.notary_batch import decode, proof_to_pb, sign_batch
from dltmw.core.utxo import contracts as utxo_contracts
from dltmw.core.utxo.build import TxSpec, build_transaction, cash_output, sign_transaction
from dltmw.core.utxo.contracts import cash_state
from dltmw.core.utxo.escrow import UTXO_LEG, escrow_state, fingerprint
from dltmw.core.utxo.model import Command, Output, Ref, Window, read_transaction, to_ns
from dltmw.core.utxo.verify import check_signatures, read_signed, resolve, verify_ledger_tx
from dltmw.pki.ca import issue_cert, make_ca
from dltmw.v1 import config_pb2, escrow_pb2, transaction_pb2, utxo_pb2

NOTARY = "notary0"
DEADLINE = T0 + 100
SECURITIES, CASH, ALICE_CASH = 10, 500, 10_000
MVCC = transaction_pb2.TX_VALIDATION_CODE_MVCC_READ_CONFLICT


class Refused(Exception):
    """The notary refused a transaction (its reason in the message)."""


@dataclass
class Notary:
    """A validating notary in memory: known states, a spent-set, batch signatures."""

    signer: SigningIdentity
    parties: Parties
    states: dict[Ref, Output] = field(default_factory=dict)
    spent: set[Ref] = field(default_factory=set)

    def notarise(self, stx_raw: bytes) -> bytes:
        """The notarised SignedUtxoTransaction, or Refused (nothing changes)."""
        try:
            stx = read_signed(stx_raw)
            ltx = resolve(stx.wire, self.states.get)
            verify_ledger_tx(ltx)
            check_signatures(stx, self.parties.membership, NOW)
        except ClientError as exc:
            raise Refused(str(exc)) from None
        if not stx.wire.window.holds(to_ns(NOW)):
            raise Refused("outside its time window")
        if self.spent & set(stx.wire.inputs):
            raise Refused("INPUT_CONSUMED")
        self.spent |= set(stx.wire.inputs)
        for i, output in enumerate(stx.wire.outputs):
            self.states[stx.wire.out_ref(i)] = output
        return self.sign(stx_raw, stx.wire.tx_id, self.signer)

    @staticmethod
    def sign(stx_raw: bytes, tx_id: str, signer: SigningIdentity) -> bytes:
        """`stx_raw` with `signer`'s batch signature (in a batch of two, to carry a path)."""
        msg = utxo_pb2.SignedUtxoTransaction.FromString(stx_raw)
        signature, proof = decode(sign_batch([tx_id, "0" * 64], signer.sign)[0])
        assert proof is not None
        msg.notary_signature.signer = signer.identity_bytes
        msg.notary_signature.signature = signature
        proof_to_pb(proof, msg.notary_batch_proof)
        return msg.SerializeToString()

    def unspent(self) -> dict[Ref, Output]:
        return {r: o for r, o in self.states.items() if r not in self.spent}


@dataclass
class Flow:
    """Both flows of one cross-flow DvP: alice buys 10 securities from bob for 500 USD."""

    trading: Side
    notary: Notary
    p: Parties
    genesis: bytes
    cash_ref: Ref  # alice's USD
    escrow_raw: bytes = b""
    escrow_ref: Ref | None = None
    proofs: dict[str, bytes] = field(default_factory=dict)  # what a relayer saw, by name

    def terms(self, nonce_: str = "x-1", amount: int = CASH) -> bytes:
        legs = {
            "trading": {"from": "seller", "to": "buyer", "amount": SECURITIES},
            UTXO_LEG: {
                "payer": fingerprint(self.p.alice.identity_bytes),
                "payee": fingerprint(self.p.bob.identity_bytes),
                "issuer": fingerprint(self.p.bank.identity_bytes),
                "currency": "USD",
                "amount": amount,
            },
        }
        body = {"deadline_s": DEADLINE, "legs": legs, "nonce": nonce_}
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def escrow(self, t: bytes, genesis_hash: bytes | None = None, amount: int = CASH) -> bytes:
        """alice's cash into an escrow for terms `t`, notarised; returns the notarisation."""
        p = self.p
        state = escrow_pb2.EscrowState(
            transfer_id=hashlib.sha256(t).hexdigest(),
            payer=p.alice.identity_bytes,
            payee=p.bob.identity_bytes,
            issuer=p.bank.identity_bytes,
            currency="USD",
            amount=amount,
            channel_id="trading",
            genesis_hash=genesis_hash or block_hash(self.trading.chan.genesis),
            deadline_s=DEADLINE,
        )
        held = Output(
            "escrow", state.SerializeToString(), (p.alice.identity_bytes, p.bob.identity_bytes)
        )
        left = cash_state(self.notary.states[self.cash_ref]).amount - amount
        change = cash_output(p.bank.identity_bytes, p.alice.identity_bytes, "USD", left)
        raw = build_transaction(
            TxSpec(
                notary=NOTARY,
                nonce=nonce(),
                inputs=[self.cash_ref],
                outputs=[held, change],
                commands=[
                    Command("cash", "move", (p.alice.identity_bytes,)),
                    Command("escrow", "open", (p.alice.identity_bytes,)),
                ],
            )
        )
        wire = read_transaction(raw)
        notarised = self.notary.notarise(
            sign_transaction(raw, wire.tx_id, [p.alice]).SerializeToString()
        )
        self.cash_ref = wire.out_ref(1)
        self.escrow_raw, self.escrow_ref = notarised, wire.out_ref(0)
        return notarised

    def payout(
        self,
        proof: bytes,
        to: SigningIdentity,
        genesis: bytes | None = None,
        window: Window | None = None,
    ) -> bytes:
        """A payout of the escrow to `to` with `proof` (a 5-minute window unless `window`);
        notarised, or Refused."""
        assert self.escrow_ref is not None
        state = escrow_state(self.notary.states[self.escrow_ref])
        data = escrow_pb2.EscrowPayout(genesis=genesis or self.genesis, commit_proof=proof)
        start = to_ns(NOW - timedelta(seconds=1))
        raw = build_transaction(
            TxSpec(
                notary=NOTARY,
                nonce=nonce(),
                inputs=[self.escrow_ref],
                outputs=[cash_output(state.issuer, to.identity_bytes, "USD", state.amount)],
                commands=[
                    Command("cash", "move", ()),
                    Command("escrow", "payout", (), data.SerializeToString()),
                ],
                window=window if window is not None else Window(start, start + 300 * 10**9),
            )
        )
        wire = read_transaction(raw)
        return self.notary.notarise(sign_transaction(raw, wire.tx_id, []).SerializeToString())

    def cash_of(self, who: SigningIdentity) -> int:
        return sum(
            cash_state(o).amount
            for o in self.notary.unspent().values()
            if o.contract == "cash" and cash_state(o).owner == who.identity_bytes
        )

    def escrowed(self) -> int:
        return sum(
            escrow_state(o).amount for o in self.notary.unspent().values() if o.contract == "escrow"
        )

    def securities(self) -> tuple[int, int]:
        return self.trading.balance("seller"), self.trading.balance("buyer")


def flow() -> Flow:
    world, _, trading_chan = make_world()
    trading = Side(trading_chan, world)
    p = make_parties()
    trading.tester.tx = replace(
        trading.tester.tx,
        channel_genesis=block_hash(trading_chan.genesis),
        trusted_notaries=(p.notary.identity_bytes,),
    )
    for acct, balance in (("seller", "1000"), ("buyer", "0")):
        assert trading.call("open", acct, balance)[0].ok
    notary = Notary(p.notary, p)
    issue = build_transaction(
        TxSpec(
            notary=NOTARY,
            nonce=nonce(),
            outputs=[cash_output(p.bank.identity_bytes, p.alice.identity_bytes, "USD", ALICE_CASH)],
            commands=[Command("cash", "issue", (p.bank.identity_bytes,))],
        )
    )
    wire = read_transaction(issue)
    notary.notarise(sign_transaction(issue, wire.tx_id, [p.bank]).SerializeToString())
    return Flow(trading, notary, p, trading_chan.genesis.SerializeToString(), wire.out_ref(0))


def test_a_cross_flow_dvp_delivers_the_securities_and_pays_the_seller() -> None:
    f = flow()
    t = f.terms()
    notarisation = f.escrow(t)
    assert f.cash_of(f.p.alice) == ALICE_CASH - CASH and f.escrowed() == CASH
    out, proof = f.trading.call("deliver", t, notarisation)
    assert out.ok and proof, out.message
    assert f.securities() == (990, 10) and f.trading.status(t) == "claimed"
    f.payout(proof, f.p.bob)
    assert (f.cash_of(f.p.alice), f.cash_of(f.p.bob), f.escrowed()) == (ALICE_CASH - CASH, CASH, 0)
    with pytest.raises(Refused, match="INPUT_CONSUMED"):  # exactly one payout
        f.payout(proof, f.p.bob)


def test_an_abort_refunds_the_buyer_and_a_late_delivery_is_refused() -> None:
    f = flow()
    t = f.terms()
    notarisation = f.escrow(t)
    f.trading.at(DEADLINE + 1)
    late = f.trading.call("deliver", t, notarisation)[0]
    assert late.status == 409 and "deadline" in late.message
    _, aborted = f.trading.call("abort", t)
    assert aborted
    with pytest.raises(Refused, match="ESCROW_PAYOUT_INVALID"):  # the abort pays the payer
        f.payout(aborted, f.p.bob)
    f.payout(aborted, f.p.alice)
    assert (f.cash_of(f.p.alice), f.escrowed(), f.securities()) == (ALICE_CASH, 0, (1000, 0))
    assert not f.trading.call("deliver", t, notarisation)[0].ok  # aborted is final


def _other_notary() -> SigningIdentity:
    ca = make_ca("Exchange", material=AT_NOW)
    issued = issue_cert(ca, "Exchange", NOTARY, "peer", material=AT_NOW)
    return SigningIdentity.from_pem("Exchange", issued.cert_pem, issued.key_pem)


def test_forged_notarisations_deliver_nothing() -> None:
    f = flow()
    t = f.terms()
    genuine = f.escrow(t)
    stx = read_signed(genuine)
    untrusted = Notary.sign(genuine, stx.wire.tx_id, _other_notary())
    issue_tx = next(iter(f.notary.states)).tx_id  # a genuine notarisation of another tx
    other = utxo_pb2.SignedUtxoTransaction.FromString(genuine)
    foreign = utxo_pb2.SignedUtxoTransaction.FromString(
        Notary.sign(genuine, issue_tx, f.p.notary)
    )  # the notary's signature over another tx_id, on this transaction
    other.notary_signature.CopyFrom(foreign.notary_signature)
    other.notary_batch_proof.CopyFrom(foreign.notary_batch_proof)
    bent = utxo_pb2.SignedUtxoTransaction.FromString(genuine)
    bent.notary_batch_proof.path[0] = b"\x01" * 32
    unsigned = utxo_pb2.SignedUtxoTransaction.FromString(genuine)
    unsigned.ClearField("notary_signature")
    fake_root = f.escrow(t, genesis_hash=b"\x07" * 32)  # names a fake `trading` (block 0)
    short = f.escrow(t, amount=499)  # 499 held for a 500 DvP
    cases = {
        "NOTARY_NOT_TRUSTED": untrusted,
        "NOTARISATION_PROOF_INVALID": other.SerializeToString(),
        "NOTARISATION_PROOF_INVALID ": bent.SerializeToString(),
        "NOTARISATION_PROOF_INVALID  ": unsigned.SerializeToString(),
        "NOTARISATION_PROOF_INVALID   ": b"\x0a\x03abc",
        "ESCROW_MISMATCH": f.escrow(f.terms("x-other")),  # an escrow of another transfer
        "ESCROW_MISMATCH ": fake_root,
        "ESCROW_MISMATCH  ": short,
    }
    for reason, forged in cases.items():
        out = f.trading.call("deliver", t, forged)[0]
        assert out.status == 400 and out.message.startswith(reason.strip()), (reason, out.message)
        assert f.securities() == (1000, 0) and f.trading.status(t) == "absent"


def test_forged_payouts_pay_nothing() -> None:
    f = flow()
    t, other_t = f.terms(), f.terms("x-other")
    f.escrow(other_t)
    _, other_claim = f.trading.call("deliver", other_t, f.escrow_raw)
    assert other_claim
    escrow = f.escrow(t)
    _, claim = f.trading.call("deliver", t, escrow)
    assert claim
    world, cash_chan, _ = make_world()
    block = f.trading.chan.blocks[-1]
    not_valid = proof_of(block, 1, [world.peers["Org1"], world.peers["Org3"]], MVCC)
    cases = {
        "PROOF_MISMATCH": other_claim,  # the record of another transfer
        "PROOF_ATTESTATION_INVALID": not_valid.SerializeToString(),  # attested by strangers
        "ESCROW_PAYOUT_INVALID": claim,  # claimed, but paying the payer (below)
    }
    for reason, proof in cases.items():
        to = f.p.alice if reason == "ESCROW_PAYOUT_INVALID" else f.p.bob
        with pytest.raises(Refused, match=reason):
            f.payout(proof, to)
    genuine_attesters = [f.trading.world.peers["Org1"], f.trading.world.peers["Org3"]]
    mvcc = proof_of(block, 1, genuine_attesters, MVCC).SerializeToString()
    with pytest.raises(Refused, match="PROOF_MISMATCH: the proven transaction is not VALID"):
        f.payout(mvcc, f.p.bob)
    with pytest.raises(Refused, match="TRUST_ROOT_MISMATCH"):  # another channel's block 0
        f.payout(claim, f.p.bob, genesis=cash_chan.genesis.SerializeToString())
    assert f.escrowed() == 2 * CASH and f.cash_of(f.p.bob) == 0  # nothing paid
    f.payout(claim, f.p.bob)
    assert f.cash_of(f.p.bob) == CASH


# --- a relayer interleaving every step, replaying every proof it saw -----------------------

OPS = ("deliver", "deliver_forged", "abort", "pay_bob", "pay_alice", "late")


def _run(f: Flow, t: bytes, ops: list[tuple[str, int]]) -> list[str]:
    """Run `ops` (each with an index into the proofs seen); then heal. Returns violations."""
    seen: list[bytes] = []
    forged = Notary.sign(f.escrow_raw, read_signed(f.escrow_raw).wire.tx_id, _other_notary())
    violations: list[str] = []
    for op, pick in ops:
        if op == "late":
            f.trading.at(DEADLINE + 1)
        elif op in ("deliver", "deliver_forged"):
            _, proof = f.trading.call("deliver", t, f.escrow_raw if op == "deliver" else forged)
            seen += [proof] if proof else []
        elif op == "abort":
            _, proof = f.trading.call("abort", t)
            seen += [proof] if proof else []
        elif seen:
            to = f.p.bob if op == "pay_bob" else f.p.alice
            with suppress(Refused):
                f.payout(seen[pick % len(seen)], to)
        violations += _check(f, t)
    if f.trading.status(t) == "absent":  # heal: after the deadline, abort; then pay out
        f.trading.at(DEADLINE + 1)
        _, proof = f.trading.call("abort", t)
        seen += [proof] if proof else []
    if f.escrowed():
        final = f.trading.status(t)
        for proof in seen:
            try:
                f.payout(proof, f.p.bob if final == "claimed" else f.p.alice)
                break
            except Refused:
                continue
    violations += _check(f, t)
    if f.escrowed():
        violations.append("the escrow was never paid out")
    return violations


def _check(f: Flow, t: bytes) -> list[str]:
    """Atomicity and conservation now."""
    out = []
    status, (seller, buyer) = f.trading.status(t), f.securities()
    alice, bob, held = f.cash_of(f.p.alice), f.cash_of(f.p.bob), f.escrowed()
    if seller + buyer != 1000 or alice + bob + held != ALICE_CASH:
        out.append(f"not conserved: securities {seller}+{buyer}, cash {alice}+{bob}+{held}")
    if bob and status != "claimed":
        out.append(f"split: the seller was paid, the channel is {status}")
    if buyer and held == 0 and bob == 0:
        out.append("split: securities delivered, the buyer refunded")
    if buyer and not (held or bob):
        out.append("split: securities delivered, no cash held or paid")
    return out


steps = st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 7)), max_size=10)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_a_relayer_never_splits_a_cross_flow_dvp(ops: list[tuple[str, int]]) -> None:
    f = flow()
    t = f.terms()
    f.escrow(t)
    assert _run(f, t, ops) == []


@contextmanager
def _believing_any_payout_proof() -> Iterator[None]:
    """Negative control: the escrow pays whoever the payout names (no proof check)."""
    real = utxo_contracts.payout_recipient

    def anyone(state: escrow_pb2.EscrowState, data: bytes, window: Window) -> bytes:
        return state.payer  # "the record says aborted", whatever the proof shows

    utxo_contracts.payout_recipient = anyone  # type: ignore[assignment]
    try:
        yield
    finally:
        utxo_contracts.payout_recipient = real


@contextmanager
def _believing_any_notarisation() -> Iterator[None]:
    """Negative control: `deliver` takes any escrow in the transaction, signed or not."""
    real = sdk_notarisation.notarised

    def unsigned(notarisation: bytes, trusted: object) -> object:
        return read_signed(notarisation).wire

    sdk_notarisation.notarised = unsigned  # type: ignore[assignment]
    try:
        yield
    finally:
        sdk_notarisation.notarised = real


def test_negative_controls_the_checker_sees_a_split_when_a_verification_is_off() -> None:
    f = flow()
    t = f.terms()
    f.escrow(t)
    with _believing_any_payout_proof():
        assert any("split" in v for v in _run(f, t, [("deliver", 0), ("pay_alice", 0)]))
    f = flow()
    t = f.terms()
    f.escrow(t)
    unsigned = read_signed(f.escrow_raw)
    bare = utxo_pb2.SignedUtxoTransaction.FromString(f.escrow_raw)
    bare.ClearField("notary_signature")
    f.notary.spent.discard(f.cash_ref)  # pretend the escrow was never notarised:
    f.notary.states.pop(unsigned.wire.out_ref(0))  # no cash is held
    f.escrow_ref = None
    with _believing_any_notarisation():
        out = f.trading.call("deliver", t, bare.SerializeToString())[0]
    assert out.ok, out.message
    assert any("split" in v for v in _check(f, t))


# --- the escrow's own rules and the config that names trusted notaries ---------------------


def _escrow_tx(f: Flow, commands: list[Command], inputs: list[Ref], amount: int = CASH) -> bytes:
    """alice's escrow for `f.terms()`, with the given commands and inputs, signed by alice."""
    t = f.terms()
    state = escrow_pb2.EscrowState(
        transfer_id=hashlib.sha256(t).hexdigest(),
        payer=f.p.alice.identity_bytes,
        payee=f.p.bob.identity_bytes,
        issuer=f.p.bank.identity_bytes,
        currency="USD",
        amount=amount,
        channel_id="trading",
        genesis_hash=block_hash(f.trading.chan.genesis),
        deadline_s=DEADLINE,
    )
    parties = (f.p.alice.identity_bytes, f.p.bob.identity_bytes)
    outputs = [Output("escrow", state.SerializeToString(), parties)]
    if inputs:
        left = ALICE_CASH - amount
        outputs.append(cash_output(f.p.bank.identity_bytes, f.p.alice.identity_bytes, "USD", left))
    raw = build_transaction(
        TxSpec(notary=NOTARY, nonce=nonce(), inputs=inputs, outputs=outputs, commands=commands)
    )
    signers = [f.p.alice, f.p.bank]
    return sign_transaction(raw, read_transaction(raw).tx_id, signers).SerializeToString()


def test_an_escrow_holds_only_cash_that_moved_into_it() -> None:
    f = flow()
    a, bank = f.p.alice.identity_bytes, f.p.bank.identity_bytes
    move, open_ = Command("cash", "move", (a,)), Command("escrow", "open", (a,))
    honest = read_signed(_escrow_tx(f, [move, open_], [f.cash_ref])).wire
    bigger = escrow_pb2.EscrowState.FromString(honest.outputs[0].data)
    bigger.amount = CASH + 1  # holds one more than the cash consumed minus the change
    held = Output("escrow", bigger.SerializeToString(), honest.outputs[0].participants)
    raw = build_transaction(
        TxSpec(notary=NOTARY, nonce=nonce(), inputs=[f.cash_ref],
               outputs=[held, honest.outputs[1]], commands=[move, open_])
    )  # fmt: skip
    cases = {
        "the cash must move": _escrow_tx(f, [open_], []),  # an escrow out of nothing
        "cash.issue: no cash inputs": _escrow_tx(
            f, [Command("cash", "issue", (bank,)), open_], []
        ),  # issued straight into an escrow
        "inputs and outputs differ": sign_transaction(
            raw, read_transaction(raw).tx_id, [f.p.alice]
        ).SerializeToString(),
        "every escrow's payer must sign": _escrow_tx(
            f, [move, Command("escrow", "open", (bank,))], [f.cash_ref]
        ),
    }
    for reason, stx in cases.items():
        with pytest.raises(Refused, match=reason):
            f.notary.notarise(stx)
    assert f.escrowed() == 0 and f.cash_of(f.p.alice) == ALICE_CASH


def test_a_payout_needs_a_bounded_time_window() -> None:
    f = flow()
    t = f.terms()
    _, proof = f.trading.call("deliver", t, f.escrow(t))
    assert proof
    start = to_ns(NOW - timedelta(seconds=1))
    for window in (Window(), Window(start, None), Window(start, start + 3600 * 10**9)):
        with pytest.raises(Refused, match="ESCROW_PAYOUT_INVALID"):
            f.payout(proof, f.p.bob, window=window)
    assert f.escrowed() == CASH
    f.payout(proof, f.p.bob)
    assert f.cash_of(f.p.bob) == CASH


def test_trusted_notaries_in_the_config() -> None:
    _, _, chan = make_world()
    notary = make_parties().notary.identity_bytes
    config = with_trusted_notary(with_trusted_notary(chan.config, notary), notary)
    assert list(config.trusted_notaries) == [notary]  # once, however often added
    assert channel_view(config).config.trusted_notaries == [notary]
    for bad in (b"\x0a\x02xx", b"not an identity", b""):
        broken = config_pb2.ChannelConfig()
        broken.CopyFrom(config)
        broken.trusted_notaries.append(bad)
        with pytest.raises(ConfigError, match="trusted notary"):
            channel_view(broken)
    twice = config_pb2.ChannelConfig()
    twice.CopyFrom(config)
    twice.trusted_notaries.append(notary)
    with pytest.raises(ConfigError, match="trusted notary"):
        channel_view(twice)
