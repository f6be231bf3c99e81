"""Built-in contracts and the registry that names them.

Contracts are registered by name; a channel deploys a contract by naming it in its config
(`ChannelConfig.contracts`), so every node of the channel runs the same code under the same name.
`bank`, `bank_rmw` (the paper's read-modify-write bank) and `kv` are written with the contract
SDK like any user contract: `builtin_package` gives each as an ordinary content-addressed
package (it passes the install-time check and loads like any other). `dltmw init` installs
these packages on every peer and names their ids in block 0 (`builtin_package_id`), so a
network runs them as packages deployed through the lifecycle, upgradable like any other;
`builtin_contract` (by name) is only for the legacy form, a block 0 whose contract names no
package id (docs/contracts.md).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from dltmw.contracts.bank import BankContract, BankRmwContract
from dltmw.contracts.bus import BusContract
from dltmw.contracts.kv import KvContract
from dltmw.contracts.transfer import TransferContract
from dltmw.core.contract import Contract
from dltmw.core.contract_package import Manifest, package_id, write_package

BUILTIN: dict[str, type[Contract]] = {
    "bank": BankContract,
    "bank_rmw": BankRmwContract,
    "bus": BusContract,
    "kv": KvContract,
    "xfer": TransferContract,
}
BUILTIN_VERSION = "1.0"


def builtin_contract(name: str) -> Contract | None:
    """A fresh instance of the built-in contract `name`, or None."""
    cls = BUILTIN.get(name)
    return cls() if cls else None


MODULE_OF = {"bank_rmw": "bank", "xfer": "transfer"}  # a built-in sharing another's source file


@cache
def builtin_package(name: str) -> bytes:
    """The built-in contract `name` (KeyError if none) as canonical package bytes."""
    cls = BUILTIN[name]
    module = MODULE_OF.get(name, name)
    source = resources.files(__package__).joinpath(f"{module}.py").read_text(encoding="utf-8")
    manifest = Manifest(name, BUILTIN_VERSION, f"{module}:{cls.__name__}")
    return write_package(manifest, {f"{module}.py": source})


def builtin_package_id(name: str) -> str:
    """The package id (SHA-256) of the built-in contract `name` (KeyError if none)."""
    return package_id(builtin_package(name))
