"""The hash constraint of UTXO contracts: which code verifies a transaction, and whether the
network accepts it (pure; Corda's hash constraint with the network parameters' whitelist).

Every output and command names its contract's package hash beside the contract's name
(`UtxoOutput.contract_hash`, the SHA-256 of the package: `dltmw/contracts/utxo.py`). The
signatures cover it (it is part of the tx_id), so a party that signs, a validating notary that
notarises and a vault that records a transaction all agree on exactly which code governs each
state. `ContractCode.select` picks, per contract name the transaction touches, the one hash
its outputs and commands name (its inputs' when it has neither: an exit that creates
nothing), and refuses the transaction

- UTXO_CONTRACT_NOT_APPROVED when the network's allow-list (`approved`, from the network map's
  `[contracts]` table) does not name that hash for that contract name — a hash nobody approved
  is never run, whatever code it may name;
- UTXO_CONTRACT_UNKNOWN when the hash is approved but this node holds no code for it, or holds
  the code of another contract under it, or when the transaction names no hash or two hashes
  for one contract name (one transaction runs one version of each contract).

Only then is each selected `verify` run. An approved second version of a contract is a second
entry of `known` (its package id and its code) approved beside the first; states of the old
version are spent under whichever version the spending transaction names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from dltmw.core.errors import ClientError
from dltmw.core.utxo.contracts import CONTRACTS, LedgerTx
from dltmw.core.utxo.model import WireTx
from dltmw.core.utxo.packages import BUILTIN_HASHES
from dltmw.v1 import errors_pb2

R = errors_pb2
Verify = Callable[[LedgerTx], None]


def builtin_known() -> dict[str, tuple[str, Verify]]:
    """The built-in contracts' code by package hash: hash -> (contract name, verify)."""
    return {BUILTIN_HASHES[n]: (n, CONTRACTS[n]) for n in CONTRACTS if n in BUILTIN_HASHES}


def builtin_approved() -> dict[str, frozenset[str]]:
    """The default allow-list: each built-in contract's own package hash."""
    return {n: frozenset({h}) for n, h in BUILTIN_HASHES.items()}


@dataclass(frozen=True)
class ContractCode:
    """The UTXO contract code a node can run and the hashes its network approves."""

    known: Mapping[str, tuple[str, Verify]] = field(default_factory=builtin_known)
    approved: Mapping[str, frozenset[str]] = field(default_factory=builtin_approved)

    def named(self, wire: WireTx) -> dict[str, Verify]:
        """The code of every contract `wire`'s outputs and commands name; ClientError (module
        docstring) unless each names exactly one approved hash whose code this node holds.
        Needs no resolved input: a vault checks this before it fetches any backchain."""
        named: dict[str, set[str]] = {}
        for name, digest in [(o.contract, o.contract_hash) for o in wire.outputs] + [
            (c.contract, c.contract_hash) for c in wire.commands
        ]:
            named.setdefault(name, set()).add(digest)
        return {name: self._code(name, hashes) for name, hashes in named.items()}

    def select(self, tx: LedgerTx) -> list[tuple[str, Verify]]:
        """(name, verify) of every contract `tx` touches, by name: `named`, and for a contract
        only consumed, the one hash its input states name (checked the same way)."""
        code = self.named(tx.wire)
        consumed: dict[str, set[str]] = {}
        for s in tx.inputs:
            if s.output.contract not in code:
                consumed.setdefault(s.output.contract, set()).add(s.output.contract_hash)
        code.update({name: self._code(name, hashes) for name, hashes in consumed.items()})
        return sorted(code.items())

    def _code(self, name: str, hashes: set[str]) -> Verify:
        if len(hashes) != 1:
            raise _unknown(name, ",".join(sorted(hashes)), f"{len(hashes)} package hashes")
        (digest,) = hashes
        if not digest:
            raise _unknown(name, digest, "no package hash")
        if digest not in self.approved.get(name, frozenset()):
            raise ClientError(
                R.ERROR_REASON_UTXO_CONTRACT_NOT_APPROVED,
                f"contract {name!r} package {digest} is not approved by the network map",
                {"contract": name, "contract_hash": digest},
            )
        found = self.known.get(digest)
        if found is None or found[0] != name:
            what = "no code here" if found is None else f"the code of {found[0]!r}"
            raise _unknown(name, digest, f"package {digest}, {what}")
        return found[1]


def _unknown(name: str, digest: str, what: str) -> ClientError:
    return ClientError(
        R.ERROR_REASON_UTXO_CONTRACT_UNKNOWN,
        f"contract {name!r}: the transaction names {what}",
        {"contract": name, "contract_hash": digest},
    )


BUILTIN_CODE = ContractCode()
