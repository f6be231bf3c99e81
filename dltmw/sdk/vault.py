"""`Vault`: the notarised-UTXO flow (Corda style) for programs that embed dltmw.

A party acts through its own vault node: it asks the node to run a flow (issue, move, delivery
versus payment, or `run`: one command of any UTXO contract, e.g. one installed as a package);
the node builds the transaction, gathers the counterparties' signatures and the notary's, and
records the result. This wraps `client.utxo.VaultClient` with what the rest of the
SDK gives: parties named by their node ids, typed results (`FlowDone`, holdings as a dict) and
typed exceptions (`sdk/errors.py`; a double spend is `InputConsumed`), and an async context
manager. Get one from a network: `net.vault("trader.brokera", "peer.brokera")`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc

from dltmw.client.utxo import PartyFiles, VaultClient, holdings_of
from dltmw.sdk.errors import from_rpc_error
from dltmw.v1 import utxo_pb2, vault_service_pb2

__all__ = ["FlowDone", "Vault"]
T = TypeVar("T")


@dataclass(frozen=True)
class FlowDone:
    """A flow's transaction: notarised and recorded by every participant's vault."""

    tx_id: str


async def _typed(call: Awaitable[T]) -> T:
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        raise from_rpc_error(exc) from None


class Vault:
    """A party's vault node, used as one of its clients (module docstring)."""

    def __init__(self, client: VaultClient) -> None:
        self._client = client
        self.node_id = client.node_id

    @staticmethod
    async def connect(network_dir: Path, client_id: str, node_id: str) -> Vault:
        """`client_id` of a `dltmw init` directory, using the vault of node `node_id`."""
        party = PartyFiles.load(network_dir, client_id)
        return Vault(await VaultClient.connect(party, node_id))

    async def close(self) -> None:
        """Close the connection to the vault node."""
        await self._client.close()

    async def __aenter__(self) -> Vault:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def identity_of(self, node_id: str) -> bytes:
        """The identity that names node `node_id` as an owner or counterparty."""
        return self._client.identity_of(node_id)

    async def issue(self, contract: str, owner: str, asset: str, amount: int) -> FlowDone:
        """Issue cash ("cash", currency) or securities ("security", ISIN) to node `owner`."""
        done = await _typed(self._client.issue(contract, self.identity_of(owner), asset, amount))
        return FlowDone(done.tx_id)

    async def move(self, contract: str, new_owner: str, asset: str, amount: int) -> FlowDone:
        """Move this vault's own states to node `new_owner`."""
        flow = self._client.move(contract, self.identity_of(new_owner), asset, amount)
        return FlowDone((await _typed(flow)).tx_id)

    async def dvp(
        self,
        buyer: str,
        isin: str,
        quantity: int,
        currency: str,
        amount: int,
        observers: Sequence[str] = (),
    ) -> FlowDone:
        """Deliver `quantity` of `isin` to node `buyer` against `amount` of `currency`, atomically
        (this vault is the seller); `observers` (node ids) receive a copy of the transaction."""
        terms = utxo_pb2.DvpTerms(
            buyer=self.identity_of(buyer),
            seller=self.identity_of(self.node_id),
            isin=isin,
            quantity=quantity,
            currency=currency,
            amount=amount,
        )
        flow = self._client.dvp(terms, observers=list(observers))
        return FlowDone((await _typed(flow)).tx_id)

    async def run(
        self,
        contract: str,
        contract_hash: str,
        command: str,
        outputs: Sequence[tuple[bytes, Sequence[str]]] = (),
        inputs: Sequence[tuple[str, int]] = (),
        signers: Sequence[str] = (),
        command_data: bytes = b"",
    ) -> FlowDone:
        """One command of any UTXO contract, e.g. one installed as a package (docs/utxo.md
        "Installed UTXO contracts"): consume this vault's `inputs` ((tx_id, index)), create
        `outputs` ((data, holder node ids)); `signers` are other nodes that must sign."""
        flow = self._client.contract_command(
            contract,
            contract_hash,
            command,
            [(data, [self.identity_of(n) for n in holders]) for data, holders in outputs],
            inputs=inputs,
            signers=[self.identity_of(n) for n in signers],
            command_data=command_data,
        )
        return FlowDone((await _typed(flow)).tx_id)

    async def states(self, contract: str) -> list[tuple[str, int, bytes]]:
        """This vault's unconsumed states of `contract`: (tx_id, index, data)."""
        found: list[vault_service_pb2.VaultState] = await _typed(
            self._client.query(contract=contract)
        )
        out = []
        for s in found:
            if not s.consumed_by:
                data = utxo_pb2.UtxoOutput.FromString(s.output).data
                out.append((s.ref.tx_id, s.ref.index, data))
        return out

    async def holdings(self, owner: str | None = None) -> dict[tuple[str, str], int]:
        """Unconsumed amounts per (contract, asset) in this vault (owned by node `owner` only,
        when given)."""
        owned = self.identity_of(owner) if owner is not None else b""
        states: list[vault_service_pb2.VaultState] = await _typed(self._client.query(owner=owned))
        return holdings_of(states)
