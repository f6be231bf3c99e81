"""Built-in contracts and the registry that names them.

Contracts are registered by name; a channel deploys a contract by naming it in its config
(`ChannelConfig.contracts`), so every node of the channel runs the same code under the same name.
"""

from __future__ import annotations

from dltmw.contracts.bank import BankContract
from dltmw.contracts.bus import BusContract
from dltmw.contracts.kv import KvContract
from dltmw.core.contract import Contract

BUILTIN: dict[str, type[Contract]] = {
    "bank": BankContract,
    "bus": BusContract,
    "kv": KvContract,
}


def builtin_contract(name: str) -> Contract | None:
    """A fresh instance of the built-in contract `name`, or None."""
    cls = BUILTIN.get(name)
    return cls() if cls else None
