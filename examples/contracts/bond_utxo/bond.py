"""A bond as a user-written UTXO contract: issue, transfer, redeem.

A bond state's data is JSON (this contract's own format, nothing dltmw knows about):

    {"isin": "XS0000000001", "issuer": "<hex Identity>", "owner": "<hex Identity>", "face": 1000}

issuer and owner are serialised node identities in hex (what `VaultClient.identity_of` gives);
face is a positive integer. Rules:
- issue: no bond inputs, at least one output; the issuer of every output signs.
- transfer: bond inputs; every input owner signs; per (issuer, isin) the face value is conserved.
- redeem: bond inputs and no bond outputs; every input owner and the issuer sign.
Every state's owner is one of its participants (the vaults that hold it).
"""

from __future__ import annotations

from dltmw.contract_sdk.utxo import LedgerTx, Output, one_command, read_json, require, signed_by

NAME = "bond"


def bond(output: Output) -> dict[str, object]:
    """The parsed, checked state of a bond output."""
    state = read_json(output.data, "bond state")
    isin, face = state.get("isin"), state.get("face")
    require(isinstance(isin, str) and isin, "bond: a state needs an isin")
    require(isinstance(face, int) and face > 0, "bond: the face value must be a positive integer")
    for who in ("issuer", "owner"):
        require(isinstance(state.get(who), str), f"bond: a state needs an {who}")
        state[who] = bytes.fromhex(str(state[who]))
    require(state["owner"] in output.participants, "bond: the owner must be a participant")
    return state


def totals(states: list[dict[str, object]]) -> dict[tuple[object, object], int]:
    """Face value per (issuer, isin)."""
    out: dict[tuple[object, object], int] = {}
    for s in states:
        key = (s["issuer"], s["isin"])
        out[key] = out.get(key, 0) + int(str(s["face"]))
    return out


def verify(tx: LedgerTx) -> None:
    """Accept `tx` or raise ContractRejected (the reason reaches the flow's caller)."""
    command = one_command(tx, NAME, ("issue", "transfer", "redeem"))
    ins = [bond(o) for o in tx.inputs_of(NAME)]
    outs = [bond(o) for o in tx.outputs_of(NAME)]
    if command.name == "issue":
        require(not ins and outs, "bond.issue: no bond inputs and at least one output")
        require(signed_by(command, [s["issuer"] for s in outs]), "bond.issue: the issuer signs")
        return
    require(ins, f"bond.{command.name}: needs bond inputs")
    require(
        signed_by(command, [s["owner"] for s in ins]), f"bond.{command.name}: every owner signs"
    )
    if command.name == "transfer":
        require(totals(ins) == totals(outs), "bond.transfer: the face value is not conserved")
        return
    require(not outs, "bond.redeem: a redeemed bond leaves no bond output")
    require(signed_by(command, [s["issuer"] for s in ins]), "bond.redeem: the issuer signs")
