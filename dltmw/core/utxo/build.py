"""Building UTXO transactions and notarisation requests (pure: the nonce is passed in).

Used by the flows, the SDK, the demo and the tests, so every party builds exactly the structure
`model.read_transaction` accepts. Nothing here signs except where a signer is passed explicitly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from dltmw.core.identity import SigningIdentity
from dltmw.core.utxo.model import (
    Command,
    Output,
    Ref,
    Window,
    WireTx,
    command_message,
    output_message,
    window_message,
)
from dltmw.v1 import identity_pb2, notarisation_pb2, utxo_pb2

NO_WINDOW = Window()


def state_ref(ref: Ref) -> notarisation_pb2.StateRef:
    """StateRef message of a Ref."""
    return notarisation_pb2.StateRef(tx_id=ref.tx_id, index=ref.index)


def cash_output(
    issuer: bytes, owner: bytes, currency: str, amount: int, extra: Iterable[bytes] = ()
) -> Output:
    """A cash state owned by `owner` (participants: the owner, plus `extra`)."""
    data = utxo_pb2.CashState(
        issuer=issuer, owner=owner, currency=currency, amount=amount
    ).SerializeToString()
    return Output("cash", data, (owner, *extra))


def security_output(
    issuer: bytes, owner: bytes, isin: str, quantity: int, extra: Iterable[bytes] = ()
) -> Output:
    """A security holding owned by `owner`."""
    data = utxo_pb2.SecurityState(
        issuer=issuer, owner=owner, isin=isin, quantity=quantity
    ).SerializeToString()
    return Output("security", data, (owner, *extra))


def dvp_command(
    buyer: bytes, seller: bytes, isin: str, quantity: int, currency: str, amount: int
) -> Command:
    """The dvp.settle command with its terms; buyer and seller must sign."""
    terms = utxo_pb2.DvpTerms(
        buyer=buyer, seller=seller, isin=isin, quantity=quantity, currency=currency, amount=amount
    )
    return Command("dvp", "settle", (buyer, seller), terms.SerializeToString())


@dataclass(frozen=True)
class TxSpec:
    """What a transaction contains, before it is serialised."""

    notary: str
    nonce: bytes
    inputs: Sequence[Ref] = ()
    references: Sequence[Ref] = ()
    outputs: Sequence[Output] = ()
    commands: Sequence[Command] = ()
    window: Window = NO_WINDOW


def build_transaction(spec: TxSpec) -> bytes:
    """Serialised UtxoTransaction for a spec."""
    msg = utxo_pb2.UtxoTransaction(
        inputs=[state_ref(r) for r in spec.inputs],
        references=[state_ref(r) for r in spec.references],
        outputs=[output_message(o).SerializeToString() for o in spec.outputs],
        commands=[command_message(c).SerializeToString() for c in spec.commands],
        notary=spec.notary,
        nonce=spec.nonce,
    )
    if spec.window != NO_WINDOW:
        msg.time_window.CopyFrom(window_message(spec.window))
    return msg.SerializeToString()


def sign_transaction(
    transaction: bytes, tx_id: str, signers: Iterable[SigningIdentity]
) -> utxo_pb2.SignedUtxoTransaction:
    """A SignedUtxoTransaction with a signature of each signer over tx_id."""
    stx = utxo_pb2.SignedUtxoTransaction(transaction=transaction)
    for signer in signers:
        add_signature(stx, tx_id, signer.identity_bytes, signer.sign)
    return stx


def add_signature(
    stx: utxo_pb2.SignedUtxoTransaction,
    tx_id: str,
    identity: bytes,
    sign: Callable[[bytes], bytes],
) -> None:
    """Append `identity`'s signature over tx_id (replacing an earlier one of the same signer)."""
    kept = [s for s in stx.signatures if s.signer != identity]
    del stx.signatures[:]
    stx.signatures.extend(kept)
    stx.signatures.add(signer=identity, signature=sign(tx_id.encode()))


def notarisation_payload(
    wire: WireTx,
    requester: bytes,
    transaction: bytes = b"",
    dependencies: Sequence[bytes] = (),
) -> notarisation_pb2.NotarisationPayload:
    """The payload asking `wire.notary` to notarise `wire` (with the transaction and its
    dependencies for a validating notary)."""
    payload = notarisation_pb2.NotarisationPayload(
        tx_id=wire.tx_id,
        inputs=[state_ref(r) for r in wire.inputs],
        references=[state_ref(r) for r in wire.references],
        requester=requester,
        notary=wire.notary,
        outputs_hash=wire.components.outputs,
        commands_hash=wire.components.commands,
        nonce_hash=wire.components.nonce,
        transaction=transaction,
        dependencies=list(dependencies),
    )
    if wire.window != NO_WINDOW:
        payload.time_window.CopyFrom(window_message(wire.window))
    return payload


def sign_request(
    payload: notarisation_pb2.NotarisationPayload, signer: SigningIdentity
) -> notarisation_pb2.NotarisationRequest:
    """Serialise and sign a payload."""
    raw = payload.SerializeToString()
    return notarisation_pb2.NotarisationRequest(payload=raw, signature=signer.sign(raw))


def org_of(identity: bytes) -> str:
    """Organisation named by a serialised Identity (for messages; unverified)."""
    return identity_pb2.Identity.FromString(identity).org_id
