"""The committed contract definitions of one channel on a peer, as of its last committed block.

Shared by the peer's endorser (which contract and package to run, under which sequence) and its
committer (the endorsement policies and sequences a block is validated against). The definitions
are world state (`_lifecycle`, `core/lifecycle.py`); this holder reads them from the ledger at
start and again after every block that committed a definition, before the next block's load
(the committer runs one block per step), so validation always sees the definitions as of the
block's height. Nothing here is a second source of truth: a restarted peer reads the same state.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from dltmw.contracts import BUILTIN, builtin_contract
from dltmw.core.builtin_packages import BUILTIN_PACKAGE_IDS
from dltmw.core.channel import ChannelView, CurrentConfig
from dltmw.core.contract import Contract
from dltmw.core.errors import ClientError
from dltmw.core.lifecycle import (
    DEFINITION_PREFIX,
    DEFINITIONS_END,
    DEFINITIONS_MAX,
    GENESIS_SEQUENCE,
    NAMESPACE,
    CommittedView,
    Definition,
    committed_definitions,
    committed_view,
    genesis_definitions,
    lifecycle_policy,
)
from dltmw.core.lifecycle_contract import LifecycleContract
from dltmw.core.lifecycle_init import InitRequired
from dltmw.core.rwset import StateEntry, StateWrite
from dltmw.ledger.backend import Ledger, StateReader
from dltmw.v1 import errors_pb2

R = errors_pb2


class ContractSource(Protocol):
    """Installed contract packages by id (runtime/contract_store.py)."""

    def contract(self, pid: str) -> Contract | None:
        """The contract of package `pid`, or None if it is not installed here."""
        ...

    def named(self, name: str) -> list[str]:
        """Ids of the packages installed here whose manifest names contract `name`."""
        ...


class ChannelLifecycle:
    """The committed definitions of one channel (`view`) and its `_lifecycle` contract.

    The channel's config may change under it (a config update: members, default policy), so
    the base is read from the channel's current-config holder every time, and the view and the
    lifecycle contract (whose MAJORITY counts the current members) are rebuilt when it changed.
    """

    def __init__(
        self,
        config: CurrentConfig | ChannelView,
        packages: ContractSource | None = None,
        node_id: str = "",
    ) -> None:
        self._config = config if isinstance(config, CurrentConfig) else CurrentConfig(config)
        self._packages = packages
        self._node_id = node_id
        self._running: dict[str, tuple[Definition, Contract]] = {}  # name -> loaded
        self._committed: dict[str, Definition] = {}  # through the lifecycle (world state)
        self._built: tuple[ChannelView, CommittedView, LifecycleContract] | None = None

    @property
    def genesis(self) -> dict[str, Definition]:
        """The config's own contracts as definitions committed at sequence 1. One without a
        policy of its own follows the channel's CURRENT default policy, so a config update that
        changes the default changes theirs (as a Fabric definition that refers to the channel's
        Endorsement policy does); a definition committed through the lifecycle names its own."""
        return genesis_definitions(self.base.config)

    @property
    def base(self) -> ChannelView:
        """The channel's current config."""
        return self._config.view

    @property
    def members(self) -> tuple[str, ...]:
        """The current member organisations."""
        return tuple(sorted(self.base.membership.org_ids))

    @property
    def view(self) -> CommittedView:
        """The current config with the committed definitions' policies and sequences."""
        return self._current()[1]

    @property
    def contract(self) -> LifecycleContract:
        """The `_lifecycle` system contract for the current members."""
        return self._current()[2]

    def _current(self) -> tuple[ChannelView, CommittedView, LifecycleContract]:
        base = self.base
        if self._built is None or self._built[0] is not base:
            genesis = genesis_definitions(base.config)
            view = committed_view(base, {**genesis, **self._committed})
            contract = LifecycleContract(self.members, genesis, lifecycle_policy(base.config))
            self._built = (base, view, contract)
        return self._built

    async def load(self, ledger: Ledger) -> None:
        """Read the committed definitions from the ledger's current state."""

        def read(reader: StateReader) -> list[StateEntry]:
            return reader.range(NAMESPACE, DEFINITION_PREFIX, DEFINITIONS_END, DEFINITIONS_MAX)

        entries = await ledger.read_snapshot(read)
        self.adopt(committed_definitions(entries, {}, self.members))

    def adopt(self, committed: dict[str, Definition]) -> None:
        """Use these definitions committed through the lifecycle (over the genesis ones)."""
        self._committed = dict(committed)
        self._built = None

    @staticmethod
    def touched(writes: Iterable[StateWrite]) -> bool:
        """Whether `writes` commit a definition (then `load` must run before the next block)."""
        return any(w.namespace == NAMESPACE and w.key.startswith(DEFINITION_PREFIX) for w in writes)

    # --- endorsement ----------------------------------------------------------------------

    def runnable(self, name: str) -> tuple[Contract, int]:
        """The contract to simulate for `name` and the sequence it runs under (after `resolve`
        admitted a proposal for it; `_lifecycle` is the system contract at sequence 1)."""
        if name == NAMESPACE:
            return self.contract, GENESIS_SEQUENCE
        definition, contract = self._running[name]
        return contract, definition.sequence

    def builtin_of(self, name: str) -> str | None:
        """The built-in contract that `name` runs here unchanged (its exact built-in package,
        or the legacy built-in of a definition that names none), without `init_required`; None
        for anything else (a user package, `_lifecycle`, not yet resolved). What decides
        whether a proposal may be simulated in place (`in_place.py`): only code we wrote."""
        held = self._running.get(name)
        if held is None or held[0].init_required:
            return None
        pid = held[0].package_id
        if pid:
            return name if BUILTIN_PACKAGE_IDS.get(name) == pid else None
        return name if name in BUILTIN else None

    def resolve(self, name: str) -> None:
        """Admission of a proposal for `name` (on the thread pool: loading a package reads a
        file): ClientError unless its committed definition can run here. Refusals:
        CONTRACT_NOT_COMMITTED (installed here, no committed definition), CONTRACT_NOT_FOUND
        (unknown), PACKAGE_NOT_INSTALLED, PACKAGE_MISMATCH (another package of that name)."""
        definition = self.view.definitions.get(name)
        if definition is None:
            where = f"{self.base.channel_id!r}"
            if name != NAMESPACE and self._packages is not None and self._packages.named(name):
                raise ClientError(
                    R.ERROR_REASON_CONTRACT_NOT_COMMITTED,
                    f"contract {name!r} is installed but has no committed definition on {where}"
                    " (approve and commit it: docs/contracts.md)",
                    {"contract": name},
                )
            raise ClientError(
                R.ERROR_REASON_CONTRACT_NOT_FOUND, f"contract {name!r} is not deployed on {where}"
            )
        held = self._running.get(name)
        if held is None or held[0] != definition:
            contract = self._load(definition)
            if definition.init_required:  # `init` once per sequence, first (lifecycle_init)
                contract = InitRequired(contract, definition.sequence)
            self._running[name] = (definition, contract)

    def deployed(self) -> dict[str, Contract]:
        """(Blocking: may load packages.) The contracts the current committed definitions run,
        by name, leaving out those that cannot run here (not installed): what the private
        executor runs private invocations with (runtime/roles/privacy/executor.py)."""
        out: dict[str, Contract] = {}
        for name, definition in self.view.definitions.items():
            try:
                out[name] = self._load(definition)
            except ClientError:
                continue
        return out

    def _load(self, definition: Definition) -> Contract:
        name, pid = definition.name, definition.package_id
        if not pid:  # legacy: a block 0 that names no package runs the built-in of that name
            builtin = builtin_contract(name)
            if builtin is None:
                raise ClientError(R.ERROR_REASON_CONTRACT_NOT_FOUND, f"no built-in {name!r}")
            return builtin
        contract = self._packages.contract(pid) if self._packages is not None else None
        if contract is not None and contract.name == name:
            return contract
        installed = self._packages.named(name) if self._packages is not None else []
        where = f"contract {name!r} of {self.base.channel_id!r} runs package {pid}"
        if contract is not None or installed:
            raise ClientError(
                R.ERROR_REASON_PACKAGE_MISMATCH,
                f"{where}, but {self._node_id} has {', '.join(installed) or 'it'} installed under"
                f" {'that name' if installed else 'another name'}",
                {"package_id": pid, "installed": ",".join(installed)},
            )
        raise ClientError(
            R.ERROR_REASON_PACKAGE_NOT_INSTALLED,
            f"{where}, which is not installed on {self._node_id}",
            {"package_id": pid},
        )
