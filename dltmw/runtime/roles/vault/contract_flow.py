"""The generic flow: one command of any UTXO contract (VaultService.RunFlow `contract`).

The built-in flows (`flows.py`: issue, move, dvp) know cash and securities: they select
states by amount and build the outputs. A user-written contract's states are opaque to the
node, so its flow is generic: the client names the contract and the package hash the
transaction names for it, the command (name and data), the own states to consume and the new
states (data and participants), and the other vault nodes that must sign. The node checks
only what it must to finish what it starts — each input is an unconsumed state of that contract
it holds and is not spending in another flow, every participant and signer is a vault node —
and builds the transaction; whether it is a valid one is the contract's `verify` alone, which
`complete` runs here first (nothing leaves the node when it refuses), then each other required
signer's vault before it signs, and a validating notary. They all run the package the
transaction names, found by its hash among the installed ones (runtime/utxo_code.py), or refuse
it as UTXO_CONTRACT_UNKNOWN / UTXO_CONTRACT_NOT_APPROVED.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from dltmw.aio.entropy import token_bytes
from dltmw.core.errors import ClientError
from dltmw.core.utxo.build import TxSpec, build_transaction
from dltmw.core.utxo.model import Command, Output, Ref, Window, is_tx_id
from dltmw.core.utxo.verify import SignedTx
from dltmw.runtime.roles.vault.vault import VaultRole
from dltmw.v1 import errors_pb2
from dltmw.v1.vault_service_pb2 import ContractFlow

R = errors_pb2
NONCE_BYTES = 32
Complete = Callable[[VaultRole, bytes, list[str]], Awaitable[SignedTx]]


async def run_contract(
    role: VaultRole,
    flow: ContractFlow,
    observers: list[str],
    window: Window,
    notary: str,
    complete: Complete,
) -> SignedTx:
    """Build the transaction `flow` describes, notarised by `notary`, and `complete` it (the
    common end of every flow: flows.complete)."""
    if not flow.contract or not flow.command:
        raise ClientError(R.ERROR_REASON_MISSING_FIELD, "contract flow: contract and command")
    if not is_tx_id(flow.contract_hash):
        raise ClientError(R.ERROR_REASON_INVALID_FIELD, "contract_hash is not a SHA-256 in hex")
    if any(not o.participants for o in flow.outputs):
        raise ClientError(R.ERROR_REASON_INVALID_FIELD, "every new state needs a participant")
    for identity in [*flow.signers, *(p for o in flow.outputs for p in o.participants)]:
        role.node_of(identity)  # a party that is no vault node: refused before anything moves
    signers = (role.me, *sorted(set(flow.signers) - {role.me}))
    outputs = [
        Output(flow.contract, o.data, tuple(o.participants), flow.contract_hash)
        for o in flow.outputs
    ]
    command = Command(flow.contract, flow.command, signers, flow.command_data, flow.contract_hash)
    inputs = [Ref(r.tx_id, r.index) for r in flow.inputs]
    await _reserve(role, flow.contract, inputs)
    try:
        spec = TxSpec(
            notary=notary,
            nonce=token_bytes(NONCE_BYTES),
            inputs=inputs,
            outputs=outputs,
            commands=[command],
            window=window,
        )
        return await complete(role, build_transaction(spec), observers)
    finally:
        role.unreserve(inputs)


async def _reserve(role: VaultRole, contract: str, inputs: list[Ref]) -> None:
    """Reserve `inputs` for this flow; INVALID_FIELD unless each is an unconsumed state of
    `contract` this node holds that no other running flow spends."""
    if len(set(inputs)) != len(inputs):
        raise ClientError(R.ERROR_REASON_INVALID_FIELD, "inputs name a state twice")
    async with role.select_lock:
        held = {row.ref for row in await role.query_states(contract, b"", role.me, False)}
        for ref in inputs:
            if ref not in held or role.is_reserved(ref):
                raise ClientError(
                    R.ERROR_REASON_INVALID_FIELD,
                    f"input {ref} is no unconsumed {contract} state of this node, or is being "
                    "spent by another flow",
                )
        role.reserve(inputs)
