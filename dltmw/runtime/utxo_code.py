"""The UTXO contract code a vault or notary node runs: the built-ins and the installed packages.

`core/utxo/constraints.ContractCode` decides which code verifies a transaction from two tables:
the hashes the network map approves per contract name, and `known`, the code this node holds
by package hash. `InstalledUtxoCode` is that second table for a node: the built-in contracts
(`core/utxo/contracts.py`, by their generated package ids) together with the UTXO packages an
admin installed on this node (`AdminService.InstallContract`, stored by
`runtime/contract_store.py` under `data/contracts/`, so they survive a restart). A package
is found by its id, and what `ContractCode` then checks — that its manifest names the contract
the transaction names, and that the network map approves that id for that name — is the same
for both kinds, so a transaction naming an installed and approved hash runs exactly that
package's verify, an uninstalled one is UTXO_CONTRACT_UNKNOWN, an unapproved one
UTXO_CONTRACT_NOT_APPROVED.

The table is read while verifying (on the event loop or the verify pool), so it never touches
the disk: the store serves loaded packages from memory (preloaded when the node starts,
added by each install). Each run of an installed verify gets the node's wall-clock backstop
(`limits.contract_wall_s`), behind the deterministic step budget (`contract_sdk/utxo_runner.py`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping

from dltmw.core.utxo.constraints import Verify, builtin_known
from dltmw.core.utxo.contracts import LedgerTx
from dltmw.runtime.contract_store import ContractStore


class InstalledUtxoCode(Mapping[str, tuple[str, Verify]]):
    """package hash -> (contract name, verify): built-ins, then this node's installed packages."""

    def __init__(
        self,
        store: ContractStore | None,
        wall_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._builtins = builtin_known()
        self._store = store
        self._wall_s = wall_s
        self._clock = clock

    def __getitem__(self, digest: str) -> tuple[str, Verify]:
        found = self._builtins.get(digest)
        if found is not None:
            return found
        installed = self._store.verify(digest) if self._store is not None else None
        if installed is None:
            raise KeyError(digest)
        wall_s, clock = self._wall_s, self._clock

        def run(tx: LedgerTx) -> None:
            deadline = clock() + wall_s
            installed(tx, lambda: clock() > deadline)

        return installed.name, run

    def __iter__(self) -> Iterator[str]:
        yield from self._builtins
        if self._store is not None:
            yield from (pid for pid in self._store.ids() if self._store.verify(pid) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)
