"""dltmw: messaging middleware for permissioned distributed ledgers (see README.md).

The embedding API (docs/embedding.md):

    import dltmw

    async with dltmw.open() as net:                 # a two-org network in this process
        client = net.client("user1.org1")
        await client.submit("main", "bank", "open", "A", "100")
        bus = net.bus("user1.org1")
        await bus.create_topic("trades")
        await bus.publish("trades", b"...", {"kind": "fill"})
        async with bus.subscribe("trades", "settler", dltmw.FileCheckpointer(d)) as sub:
            async for message in sub:   # resumes after the last message finished
                ...

`dltmw.connect(directory)` gives the same `Network` handle for nodes that run elsewhere;
`dltmw.Client(dltmw.Profile.load(path))` a client from a connection profile. Failures raise
`dltmw.Error` subclasses (`dltmw.sdk.errors`), never raw gRPC errors.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names below, for type checkers; at run time they load on first use
    from dltmw.sdk.bus import Bus, Checkpointer, FileCheckpointer, Message, Position, Subscription
    from dltmw.sdk.client import Client
    from dltmw.sdk.errors import (
        AgreementPending,
        AlreadyExists,
        CommitFailed,
        CommitUnknown,
        ContractRefused,
        DeliveryGivenUp,
        EndorsementFailed,
        Error,
        InputConsumed,
        InvalidRequest,
        LimitExceeded,
        NotFound,
        Overloaded,
        PayloadPurged,
        PermissionDenied,
        PreconditionFailed,
        StaleRead,
        Unavailable,
    )
    from dltmw.sdk.network import Network, connect, open
    from dltmw.sdk.profile import Profile, ProfileError
    from dltmw.sdk.results import (
        Block,
        Committed,
        ContractEvent,
        EventFilter,
        Transaction,
        TxStatus,
    )
    from dltmw.sdk.submitted import Submitted
    from dltmw.sdk.vault import FlowDone, Vault

# Where each public name lives. `import dltmw` stays cheap (the CLI, node processes and
# programs that use one part do not load the whole SDK, gRPC stubs and node runtime); a name is
# imported from its module the first time it is used (PEP 562).
_EXPORTS = {
    **dict.fromkeys(
        ("Bus", "Checkpointer", "FileCheckpointer", "Message", "Position", "Subscription"),
        "dltmw.sdk.bus",
    ),
    "Client": "dltmw.sdk.client",
    **dict.fromkeys(
        (
            "AgreementPending",
            "AlreadyExists",
            "CommitFailed",
            "CommitUnknown",
            "ContractRefused",
            "DeliveryGivenUp",
            "EndorsementFailed",
            "Error",
            "InputConsumed",
            "InvalidRequest",
            "LimitExceeded",
            "NotFound",
            "Overloaded",
            "PayloadPurged",
            "PermissionDenied",
            "PreconditionFailed",
            "StaleRead",
            "Unavailable",
        ),
        "dltmw.sdk.errors",
    ),
    **dict.fromkeys(("Network", "connect", "open"), "dltmw.sdk.network"),
    **dict.fromkeys(("Profile", "ProfileError"), "dltmw.sdk.profile"),
    **dict.fromkeys(
        ("Block", "Committed", "ContractEvent", "EventFilter", "Transaction", "TxStatus"),
        "dltmw.sdk.results",
    ),
    "Submitted": "dltmw.sdk.submitted",
    **dict.fromkeys(("FlowDone", "Vault"), "dltmw.sdk.vault"),
}


def _version() -> str:
    """The installed distribution's version, read on first use of `dltmw.__version__`.

    Why not at import: `importlib.metadata` (`email`, `zipfile`, `csv`, ... under it) and its
    scan of `sys.path` would be loaded by every process that imports dltmw, node processes
    included, which never ask for the version (`tests/integration/test_node_imports.py`).
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dltmw")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


def __getattr__(name: str) -> Any:
    """Load a public name from its module on first use (and keep it here)."""
    if name == "__version__":
        globals()[name] = value = _version()
        return value
    module = _EXPORTS.get(name)
    if module is None:  # a subpackage (`dltmw.sdk`), as the eager imports used to make them
        try:
            return import_module(f"dltmw.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"dltmw.{name}":
                raise
            raise AttributeError(f"module 'dltmw' has no attribute {name!r}") from None
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS, "__version__"})


__all__ = [
    "AgreementPending",
    "AlreadyExists",
    "Block",
    "Bus",
    "Checkpointer",
    "Client",
    "CommitFailed",
    "CommitUnknown",
    "Committed",
    "ContractEvent",
    "ContractRefused",
    "DeliveryGivenUp",
    "EndorsementFailed",
    "Error",
    "EventFilter",
    "FileCheckpointer",
    "FlowDone",
    "InputConsumed",
    "InvalidRequest",
    "LimitExceeded",
    "Message",
    "Network",
    "NotFound",
    "Overloaded",
    "PayloadPurged",
    "PermissionDenied",
    "Position",
    "PreconditionFailed",
    "Profile",
    "ProfileError",
    "StaleRead",
    "Submitted",
    "Subscription",
    "Transaction",
    "TxStatus",
    "Unavailable",
    "Vault",
    "__version__",
    "connect",
    "open",
]
