"""Built-in UTXO contracts: deterministic `verify(tx)` functions over a resolved transaction.

A contract sees the whole transaction with its input and reference states resolved (a
`LedgerTx`) and raises `ContractRejected` to refuse it. Every contract named by an input, an output
or a command runs once; the transaction is valid only if all of them accept. That is what makes
delivery-versus-payment atomic: the cash leg, the security leg and the `dvp` terms are checked on
ONE transaction, which the notary then signs or refuses as a whole, so either both legs move or
neither does.

  cash      issue (no cash inputs; the issuer of every output signs), move (per issuer and
            currency, inputs sum = outputs sum; every input owner signs), exit (per issuer and
            currency, outputs sum <= inputs sum; input owners and the issuer sign).
  security  issue (no security inputs; the issuer signs), transfer (per issuer and isin,
            quantities conserved; every input owner signs).
  dvp       settle: the buyer gains exactly `quantity` of `isin`, the seller gains exactly
            `amount` of `currency`, and both sign.
  escrow    open (new escrow outputs, each payer signs), payout (one escrow consumed; the
            recipient its channel record proves gains exactly its amount): cash held for a
            cross-flow DvP (`escrow.py`). Escrow states count as cash of their issuer and
            currency in `cash.move`'s conservation, so cash moves into and out of an escrow
            only by a `cash.move` in the same transaction.

Platform rules checked here too: every state's owner is among its participants, amounts are
positive. Signatures themselves are checked by `verify.check_signatures`. Each contract is also
a content-addressed package (`dltmw/contracts/utxo.py`): transactions name its hash, and only
an approved hash runs (`constraints.py`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from dltmw.core.utxo.escrow import (
    EscrowInvalid,
    check_open,
    escrow_state,
    payout_recipient,
)
from dltmw.core.utxo.model import Command, Output, Ref, WireTx
from dltmw.v1 import escrow_pb2, utxo_pb2


class ContractRejected(Exception):
    """A contract refused the transaction (a domain outcome of verification)."""


@dataclass(frozen=True)
class StateAndRef:
    """A resolved state: where it was created and what it is."""

    ref: Ref
    output: Output


@dataclass(frozen=True)
class LedgerTx:
    """A transaction with its input and reference states resolved."""

    wire: WireTx
    inputs: tuple[StateAndRef, ...]
    references: tuple[StateAndRef, ...]

    @property
    def outputs(self) -> tuple[Output, ...]:
        """Output states."""
        return self.wire.outputs

    def commands_of(self, contract: str) -> list[Command]:
        """Commands addressed to `contract`."""
        return [c for c in self.wire.commands if c.contract == contract]

    def inputs_of(self, contract: str) -> list[Output]:
        """Input states governed by `contract`."""
        return [s.output for s in self.inputs if s.output.contract == contract]

    def outputs_of(self, contract: str) -> list[Output]:
        """Output states governed by `contract`."""
        return [o for o in self.outputs if o.contract == contract]


def _parse_state(
    output: Output, kind: type[utxo_pb2.CashState] | type[utxo_pb2.SecurityState]
) -> utxo_pb2.CashState | utxo_pb2.SecurityState:
    msg = kind()
    try:
        msg.ParseFromString(output.data)
    except DecodeError as exc:
        raise ContractRejected(f"{output.contract} state does not parse: {exc}") from None
    if not msg.issuer or not msg.owner:
        raise ContractRejected(f"{output.contract} state lacks issuer or owner")
    if msg.owner not in output.participants:
        raise ContractRejected(f"{output.contract} state owner is not a participant")
    return msg


def cash_state(output: Output) -> utxo_pb2.CashState:
    """Parsed CashState of a cash output (ContractRejected if malformed)."""
    msg = _parse_state(output, utxo_pb2.CashState)
    if not isinstance(msg, utxo_pb2.CashState) or msg.amount <= 0 or not msg.currency:
        raise ContractRejected("cash state needs a currency and a positive amount")
    return msg


def security_state(output: Output) -> utxo_pb2.SecurityState:
    """Parsed SecurityState of a security output (ContractRejected if malformed)."""
    msg = _parse_state(output, utxo_pb2.SecurityState)
    if not isinstance(msg, utxo_pb2.SecurityState) or msg.quantity <= 0 or not msg.isin:
        raise ContractRejected("security state needs an isin and a positive quantity")
    return msg


def _one_command(tx: LedgerTx, contract: str, names: Iterable[str]) -> Command:
    commands = tx.commands_of(contract)
    if len(commands) != 1:
        raise ContractRejected(f"{contract}: expected exactly one command, got {len(commands)}")
    if commands[0].name not in names:
        raise ContractRejected(f"{contract}: unknown command {commands[0].name!r}")
    return commands[0]


def _require_signers(command: Command, needed: Iterable[bytes], what: str) -> None:
    if not set(needed) <= set(command.signers):
        raise ContractRejected(f"{command.contract}.{command.name}: {what} must sign")


def _escrows(outputs: Iterable[Output]) -> list[escrow_pb2.EscrowState]:
    try:
        return [escrow_state(o) for o in outputs]
    except EscrowInvalid as exc:
        raise ContractRejected(str(exc)) from None


def _sums(
    cash: Iterable[utxo_pb2.CashState], held: Iterable[escrow_pb2.EscrowState]
) -> Counter[tuple[bytes, str]]:
    """Amount per (issuer, currency), cash states and escrowed cash together."""
    out: Counter[tuple[bytes, str]] = Counter()
    for s in cash:
        out[s.issuer, s.currency] += s.amount
    for e in held:
        out[e.issuer, e.currency] += e.amount
    return out


def verify_cash(tx: LedgerTx) -> None:
    """The cash contract (escrow states count as cash held: module docstring)."""
    command = _one_command(tx, "cash", ("issue", "move", "exit"))
    ins = [cash_state(o) for o in tx.inputs_of("cash")]
    outs = [cash_state(o) for o in tx.outputs_of("cash")]
    held_in, held_out = _escrows(tx.inputs_of("escrow")), _escrows(tx.outputs_of("escrow"))
    in_sum = _sums(ins, held_in)
    out_sum = _sums(outs, held_out)
    if command.name == "issue":
        if ins or held_in or held_out or not outs:
            raise ContractRejected("cash.issue: no cash inputs and at least one output")
        _require_signers(command, {s.issuer for s in outs}, "the issuer")
        return
    if not ins and not held_in:
        raise ContractRejected(f"cash.{command.name}: needs cash inputs")
    _require_signers(command, {s.owner for s in ins}, "every input owner")
    for group in set(in_sum) | set(out_sum):
        if command.name == "move" and in_sum[group] != out_sum[group]:
            raise ContractRejected(f"cash.move: {group[1]} inputs and outputs differ")
        if command.name == "exit" and out_sum[group] > in_sum[group]:
            raise ContractRejected(f"cash.exit: {group[1]} outputs exceed inputs")
    if command.name == "exit":
        if held_in or held_out:
            raise ContractRejected("cash.exit: an escrow is paid out, never exited")
        _require_signers(command, {s.issuer for s in ins}, "the issuer")


def verify_security(tx: LedgerTx) -> None:
    """The security contract."""
    command = _one_command(tx, "security", ("issue", "transfer"))
    ins = [security_state(o) for o in tx.inputs_of("security")]
    outs = [security_state(o) for o in tx.outputs_of("security")]
    if command.name == "issue":
        if ins or not outs:
            raise ContractRejected("security.issue: no security inputs and at least one output")
        _require_signers(command, {s.issuer for s in outs}, "the issuer")
        return
    if not ins:
        raise ContractRejected("security.transfer: needs security inputs")
    _require_signers(command, {s.owner for s in ins}, "every input owner")
    in_sum: Counter[tuple[bytes, str]] = Counter()
    out_sum: Counter[tuple[bytes, str]] = Counter()
    for s in ins:
        in_sum[s.issuer, s.isin] += s.quantity
    for s in outs:
        out_sum[s.issuer, s.isin] += s.quantity
    if in_sum != out_sum:
        raise ContractRejected("security.transfer: quantities are not conserved")


def _gain(
    ins: Iterable[tuple[bytes, str, int]], outs: Iterable[tuple[bytes, str, int]]
) -> Counter[tuple[bytes, str]]:
    """Net change per (owner, asset): outputs minus inputs."""
    net: Counter[tuple[bytes, str]] = Counter()
    for owner, asset, n in outs:
        net[owner, asset] += n
    for owner, asset, n in ins:
        net[owner, asset] -= n
    return net


def verify_dvp(tx: LedgerTx) -> None:
    """Delivery versus payment: both legs in this transaction, exactly as the terms say."""
    command = _one_command(tx, "dvp", ("settle",))
    terms = utxo_pb2.DvpTerms()
    try:
        terms.ParseFromString(command.data)
    except DecodeError as exc:
        raise ContractRejected(f"dvp terms do not parse: {exc}") from None
    if terms.quantity <= 0 or terms.amount <= 0 or terms.buyer == terms.seller:
        raise ContractRejected("dvp: positive quantity and amount between two parties")
    _require_signers(command, (terms.buyer, terms.seller), "buyer and seller")
    sec = _gain(
        ((s.owner, s.isin, s.quantity) for s in map(security_state, tx.inputs_of("security"))),
        ((s.owner, s.isin, s.quantity) for s in map(security_state, tx.outputs_of("security"))),
    )
    cash = _gain(
        ((s.owner, s.currency, s.amount) for s in map(cash_state, tx.inputs_of("cash"))),
        ((s.owner, s.currency, s.amount) for s in map(cash_state, tx.outputs_of("cash"))),
    )
    if sec[terms.buyer, terms.isin] != terms.quantity:
        raise ContractRejected("dvp: the buyer does not receive the agreed securities")
    if sec[terms.seller, terms.isin] != -terms.quantity:
        raise ContractRejected("dvp: the seller does not deliver the agreed securities")
    if cash[terms.seller, terms.currency] != terms.amount:
        raise ContractRejected("dvp: the seller is not paid the agreed amount")
    if cash[terms.buyer, terms.currency] != -terms.amount:
        raise ContractRejected("dvp: the buyer does not pay the agreed amount")


def verify_escrow(tx: LedgerTx) -> None:
    """The escrow contract (`escrow.py`): open, or pay out to whom the channel record says."""
    command = _one_command(tx, "escrow", ("open", "payout"))
    cash = tx.commands_of("cash")
    if len(cash) != 1 or cash[0].name != "move":
        raise ContractRejected("escrow: the cash must move (cash.move) in the same transaction")
    ins, outs = _escrows(tx.inputs_of("escrow")), _escrows(tx.outputs_of("escrow"))
    try:
        if command.name == "open":
            if ins:
                raise EscrowInvalid("escrow.open: consumes no escrow")
            check_open(outs, command.signers)
            return
        if len(ins) != 1 or outs:
            raise EscrowInvalid("escrow.payout: consumes exactly one escrow and makes none")
        state = ins[0]
        recipient = payout_recipient(state, command.data, tx.wire.window)
    except EscrowInvalid as exc:
        raise ContractRejected(str(exc)) from None
    group = (state.issuer, state.currency)
    gained = sum(
        s.amount for s in map(cash_state, tx.outputs_of("cash")) if _is(s, recipient, group)
    )
    gained -= sum(
        s.amount for s in map(cash_state, tx.inputs_of("cash")) if _is(s, recipient, group)
    )
    if gained != state.amount:
        raise ContractRejected(
            f"ESCROW_PAYOUT_INVALID: the recipient the record names gains {gained}, "
            f"not the escrow's {state.amount} {state.currency}"
        )


def _is(s: utxo_pb2.CashState, owner: bytes, group: tuple[bytes, str]) -> bool:
    return s.owner == owner and (s.issuer, s.currency) == group


# The registry of UTXO contract code: a new contract adds its `verify` here (its package, and so
# its hash, is the source of the module defining it: dltmw/contracts/utxo.py; regenerate
# core/utxo/packages.py). Which of them a transaction runs is decided by the package hashes it
# names (core/utxo/constraints.py), never by the name alone.
CONTRACTS: dict[str, Callable[[LedgerTx], None]] = {
    "cash": verify_cash,
    "security": verify_security,
    "dvp": verify_dvp,
    "escrow": verify_escrow,
}
