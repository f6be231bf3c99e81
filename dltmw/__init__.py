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

from importlib.metadata import PackageNotFoundError, version

from dltmw.sdk.bus import Bus, Checkpointer, FileCheckpointer, Message, Position, Subscription
from dltmw.sdk.client import Client
from dltmw.sdk.errors import (
    AlreadyExists,
    CommitFailed,
    ContractRefused,
    EndorsementFailed,
    Error,
    InputConsumed,
    InvalidRequest,
    LimitExceeded,
    NotFound,
    Overloaded,
    PermissionDenied,
    PreconditionFailed,
    StaleRead,
    Unavailable,
)
from dltmw.sdk.network import Network, connect, open
from dltmw.sdk.profile import Profile, ProfileError
from dltmw.sdk.results import Block, Committed, ContractEvent, EventFilter, Transaction
from dltmw.sdk.vault import FlowDone, Vault

try:
    __version__ = version("dltmw")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "AlreadyExists",
    "Block",
    "Bus",
    "Checkpointer",
    "Client",
    "CommitFailed",
    "Committed",
    "ContractEvent",
    "ContractRefused",
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
    "PermissionDenied",
    "Position",
    "PreconditionFailed",
    "Profile",
    "ProfileError",
    "StaleRead",
    "Subscription",
    "Transaction",
    "Unavailable",
    "Vault",
    "__version__",
    "connect",
    "open",
]
