"""The contract SDK: write a deterministic contract as a Python class.

    from dltmw.contract_sdk import Context, Contract, ContractError, query, transaction

A contract package imports only this package and pure standard-library modules (the allowlist of
`dltmw.core.contract_check`); `docs/contracts.md` is the tutorial, `docs/wire.md` gives the
wire encoding of typed arguments and results. `dltmw.contract_sdk.testing` runs a contract
against an in-memory state, `dltmw.contract_sdk.package` packages a directory and
`dltmw.contract_sdk.loader` loads package bytes (both for tools and nodes, not for contracts).
"""

from __future__ import annotations

from dltmw.contract_sdk.base import Context, Contract, FunctionSpec, query, transaction
from dltmw.contract_sdk.types import Label, Text
from dltmw.core.contract import ContractError, DeltaRefused, TxInfo
from dltmw.core.contract_package import SDK_VERSION

__all__ = [
    "SDK_VERSION",
    "Context",
    "Contract",
    "ContractError",
    "DeltaRefused",
    "FunctionSpec",
    "Label",
    "Text",
    "TxInfo",
    "query",
    "transaction",
]
