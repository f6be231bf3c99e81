"""Notarised UTXO transactions for channel contracts: the escrows a trusted notary notarised.

A cross-flow DvP's channel leg (`xfer.deliver`, docs/cross-channel.md "Across flows") needs one
fact from the UTXO flow: "an escrow output with these terms exists". `notarised_escrows` checks
the notarisation against the notaries the channel's config trusts (`core/notarisation_proof.py`,
handed to contracts as `TxInfo.trusted_notaries`) and returns the well-formed escrow states the
transaction created. Every failure is a `ContractError` (400) whose message starts with the
ErrorReason name (NOTARISATION_PROOF_INVALID, NOTARY_NOT_TRUSTED), as in `crosschain.py`.
"""

from __future__ import annotations

from collections.abc import Collection

from dltmw.core.contract import ContractError
from dltmw.core.errors import ClientError
from dltmw.core.notarisation_proof import notarised
from dltmw.core.utxo.escrow import CONTRACT, UTXO_LEG, EscrowInvalid, escrow_state, fingerprint
from dltmw.v1 import escrow_pb2

__all__ = ["UTXO_LEG", "EscrowState", "fingerprint", "notarised_escrows"]
EscrowState = escrow_pb2.EscrowState  # what `notarised_escrows` returns (contracts may not
# import dltmw.v1 themselves)


def notarised_escrows(
    notarisation: bytes, trusted: Collection[bytes]
) -> list[escrow_pb2.EscrowState]:
    """The escrow states of the transaction `notarisation` proves notarised (malformed escrow
    outputs are left out: the escrow contract would never have accepted them)."""
    try:
        wire = notarised(notarisation, trusted)
    except ClientError as exc:
        raise ContractError(f"{exc.reason_name}: {exc.message}", 400) from exc
    states = []
    for output in wire.outputs:
        if output.contract != CONTRACT:
            continue
        try:
            states.append(escrow_state(output))
        except EscrowInvalid:
            continue
    return states
