"""The SDK of UTXO contracts: what a user-written `verify(tx)` imports.

    from dltmw.contract_sdk.utxo import ContractRejected, LedgerTx, one_command, require

A UTXO contract package (`"kind": "utxo"` in `contract.json`, entry `module:verify`) holds one
function `verify(tx: LedgerTx) -> None` that accepts the transaction by returning and refuses it
by raising `ContractRejected(reason)`; the reason reaches the flow's caller in the
CONTRACT_FAILED message. The transaction it sees is exactly what the built-in contracts see
(`core/utxo/contracts.py`): the wire transaction with its input and reference states resolved.
Its own states' `data` is whatever bytes the contract defines (JSON is the easy choice:
`read_json`); identities (state owners, command signers, participants) are serialised
`Identity` bytes compared as bytes.

A packaged verify is loaded like a channel contract (`contract_sdk/loader.py`): the install-time
static check, restricted builtins, and a deterministic step budget (`core/metering.py`), so a
verify that loops or recurses without end is stopped at the same step on every verifier
(UTXO_CONTRACT_BUDGET_EXCEEDED). Every contract the transaction touches runs; a verify checks
its own states and commands and may read the others' (a DvP-style contract does).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from dltmw.core.utxo.contracts import ContractRejected, LedgerTx, StateAndRef
from dltmw.core.utxo.model import Command, Output, Ref

__all__ = [
    "Command",
    "ContractRejected",
    "LedgerTx",
    "Output",
    "Ref",
    "StateAndRef",
    "one_command",
    "read_json",
    "require",
    "signed_by",
]


def require(condition: object, reason: str) -> None:
    """Refuse the transaction with `reason` unless `condition` holds."""
    if not condition:
        raise ContractRejected(reason)


def one_command(tx: LedgerTx, contract: str, names: Iterable[str]) -> Command:
    """The one command addressed to `contract`, whose name must be one of `names`."""
    commands = tx.commands_of(contract)
    if len(commands) != 1:
        raise ContractRejected(f"{contract}: expected exactly one command, got {len(commands)}")
    if commands[0].name not in tuple(names):
        raise ContractRejected(f"{contract}: unknown command {commands[0].name!r}")
    return commands[0]


def signed_by(command: Command, identities: Iterable[bytes]) -> bool:
    """True iff every identity is a required signer of `command` (the platform checks that
    each required signer really signed: `core/utxo/verify.check_signatures`)."""
    return all(i in command.signers for i in identities)


def read_json(data: bytes, what: str) -> dict[str, Any]:
    """A JSON object from state or command bytes; ContractRejected if it is not one."""
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise ContractRejected(f"{what} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ContractRejected(f"{what} is not a JSON object")
    return value
