"""The schema of `node.toml`, one per node, written by `dltmw init` (`NodeConfig.load` reads it).

Each table of the file is a frozen dataclass below, its keys declared with `tomltable.key`
(description and bounds); `docs/config.md` is generated from them (`dltmw/cli/config_doc.py`,
checked by a test). A node process reads the file with `net/tomltable.py`, never with pydantic
(that module's docstring says why). Unknown tables and keys are refused with their path, so a
misspelt limit never falls back to its default unnoticed. Sections whose values the node passes
down as they are (`[limits]`, `[keepalive]`, `[logging]`, `[operations]`) are validated as the
very dataclasses the node uses, with their own checks; `[storage]` keeps the historical key
names of the file and maps them onto `RetryPolicy`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal, get_args

from dltmw.ledger.retry import DEFAULT_RETRY, RetryPolicy
from dltmw.net.roles import Role, check_roles
from dltmw.net.tomltable import check_bounds, key
from dltmw.rpc.channel_options import DEFAULT_KEEPALIVE, Keepalive

MiB = 1024 * 1024
NOTARY_SWITCH_INTERVAL_MS = 5.0  # CPython's default (benchmarks/RESULTS.md, 2026-12-01 19:xx)
NOTARY_GC_YOUNG_THRESHOLD = 700  # CPython's default
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


# The gateway's ordering deadline (`roles/gateway/orderer_choice.py`): twice the PBFT-lite
# request timeout of real orderers (40 ticks of 50 ms, `roles/orderer/pbft.replica_config`), so
# a correct primary working through a backlog is not doubted (the backups' own timers allow it
# that long per batch), while a censoring one costs a client one deadline plus a view change.
ORDERING_DEADLINE_S = 4.0
# A few seconds: a block reaches a following peer in milliseconds, and PBFT-lite's request timer
# is 2 s; Fabric 3's BFT deliverer waits 20 s (blocksprovider's bftBlockCensorshipTimeout).
CENSORSHIP_TIMEOUT_S = 3.0
MAY_BE_ZERO = frozenset({"ordering_deadline_s", "censorship_timeout_s"})  # 0 switches it off


@dataclass(frozen=True)
class Limits:
    """Bounds that protect a node from overload and hostile input (node.toml `[limits]`).

    The input bounds (`rpc/boundary.py` checks them before a servicer sees a request: before any
    item is parsed, any signature verified, anything allocated per item) are named by these field
    names in the LIMIT_EXCEEDED errors they cause:

    * `max_message_bytes`: one gRPC message (grpc itself refuses bigger ones);
    * `query_bytes_max`: the request of an RPC that carries only a signed query or a status
      request (CommitStatus, Events, Deliver, NodeStatus, Receive, ...): 4 MiB is far too generous;
    * `items_per_request_max`: entries of any repeated field of a request (envelopes of a
      Broadcast, proposals of a ProcessProposals, items of a Transact or SendBatch, ...);
    * `item_bytes_max`: one such entry;
    * `inflight_rpcs_per_connection_max`, `inflight_rpcs_per_identity_max`: calls (and open
      streams) at once from one connection, and from one caller (its TLS certificate) over all
      its connections;
    * `inflight_bytes_per_identity_max`: request bytes one caller has in progress at once.
    """

    max_message_bytes: int = key(4 * MiB, description="one gRPC message, bytes")
    max_concurrent_rpcs: int = key(1024, description="RPCs the server runs at once")
    timestamp_window_s: float = key(
        900.0, description="accepted skew of signed header timestamps, seconds"
    )
    commit_wait_s: float = key(30.0, description="how long CommitStatus waits for a commit")
    height_wait_s: float = key(
        5.0, description="how long a proposal waits for its min_block_number to be committed"
    )
    contract_wall_s: float = key(
        2.0,
        description="wall-clock backstop of one contract invocation, seconds (the"
        " deterministic step budget stops runaway contracts first)",
    )
    queue_max: int = key(10_000, description="entries of each bounded queue")
    query_bytes_max: int = key(
        64 * 1024, description="request of an RPC carrying only a signed query, bytes"
    )
    items_per_request_max: int = key(1000, description="entries of any repeated field of a request")
    item_bytes_max: int = key(2 * MiB, description="one such entry, bytes")
    inflight_rpcs_per_connection_max: int = key(
        512, description="calls and open streams at once from one connection"
    )
    inflight_rpcs_per_identity_max: int = key(
        512, description="calls and open streams at once from one caller (TLS certificate)"
    )
    inflight_bytes_per_identity_max: int = key(
        64 * MiB, description="request bytes one caller has in progress at once"
    )
    malformed_log_interval_s: float = key(
        60.0, description="one log line per caller per interval for unparsable requests"
    )
    ordering_deadline_s: float = key(
        ORDERING_DEADLINE_S,
        ge=0,
        description="a gateway also sends an envelope to further orderers of a multi-orderer"
        " channel when the first has not answered within this time (or 3 typical answer"
        " times, up to 4 times this, when longer), seconds (0: never; docs/ordering.md)",
    )
    censorship_timeout_s: float = key(
        CENSORSHIP_TIMEOUT_S,
        ge=0,
        description="a peer of a multi-orderer channel follows another orderer when one it"
        " watches shows a valid header of a block its Deliver source has not delivered within"
        " this time, seconds (0: no censorship monitor; docs/ordering.md)",
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name in MAY_BE_ZERO:
                if getattr(self, f.name) < 0:
                    raise ValueError(f"limits.{f.name} must not be negative")
            elif getattr(self, f.name) <= 0:
                raise ValueError(f"limits.{f.name} must be positive")


@dataclass(frozen=True)
class LogSettings:
    """The node's own log (`[logging]` in node.toml): JSON lines (`runtime/logs.py`) at `level`,
    in a file rotated when it reaches `file_bytes_max`; `file_count` files are kept, the current
    one included."""

    file_bytes_max: int = key(
        10 * MiB, ge=1024, description="rotate the log file at this size, bytes"
    )
    file_count: int = key(5, ge=2, description="log files kept, the current one too")
    level: LogLevel = key("INFO", description="lowest level written")

    def __post_init__(self) -> None:
        if self.file_bytes_max < 1024 or self.file_count < 2:
            raise ValueError("logging: need file_bytes_max >= 1024 and file_count >= 2")
        if self.level not in get_args(LogLevel):
            raise ValueError(f"logging.level must be one of {list(get_args(LogLevel))}")


DEFAULT_LOGGING = LogSettings()


@dataclass(frozen=True)
class OperationsSettings:
    """The operations endpoint (`[operations]`, `runtime/operations.py`, docs/operations.md):
    plain HTTP/1.1 on its own port with `/metrics`, `/healthz`, `/readyz` and `/loglevel`, no
    client certificate asked. On by default, on loopback and port 0 (the kernel picks; the
    address is in the node's READY line as `operations=host:port`); `listen = ""` turns it off.
    `/loglevel` changes are taken from loopback callers only, whatever `listen` is; so is the
    explorer (a ledger's content) unless `explorer = "any"`."""

    listen: str = key(
        "127.0.0.1:0", description='"host:port" (port 0 = any free port); "" = no endpoint'
    )
    tls: bool = key(
        False, description="HTTPS with the node's TLS certificate (no client certificate)"
    )
    connections_max: int = key(16, description="connections served at once")
    request_bytes_max: int = key(
        8192, description="request line, headers and body of one request, bytes"
    )
    timeout_s: float = key(
        10.0, description="one connection's whole life, seconds (slow clients dropped)"
    )
    explorer: Literal["off", "loopback", "any"] = key(
        "loopback",
        description="the explorer page and its JSON API (/explorer/, /api/): served to "
        "callers on this host only, to anybody who reaches the port, or not at all",
    )

    def __post_init__(self) -> None:
        if self.connections_max <= 0 or self.request_bytes_max < 256 or self.timeout_s <= 0:
            raise ValueError(
                "operations: need connections_max > 0, request_bytes_max >= 256, timeout_s > 0"
            )
        if self.listen and ":" not in self.listen:
            raise ValueError('operations.listen must be "host:port" or ""')


DEFAULT_OPERATIONS = OperationsSettings()


@dataclass(frozen=True)
class TracingSettings:
    """OpenTelemetry tracing (`[tracing]`, `rpc/tracing.py`, docs/operations.md): spans of every
    transaction this node handles (gateway calls, endorsements, ordering, commits), exported over
    OTLP/gRPC. Off by default (`otlp_endpoint = ""`), at no cost: nothing of OpenTelemetry's SDK
    is even imported."""

    otlp_endpoint: str = key(
        "", description='collector "host:port" (OTLP/gRPC, plaintext); "" = no tracing'
    )
    export_delay_ms: int = key(
        1000, gt=0, description="spans are exported in batches at most this far apart"
    )

    def __post_init__(self) -> None:
        check_bounds(self)
        if self.otlp_endpoint and ":" not in self.otlp_endpoint:
            raise ValueError('tracing.otlp_endpoint must be "host:port" or ""')


DEFAULT_TRACING = TracingSettings()


@dataclass(frozen=True)
class NodeTable:
    """`[node]`: who the node is and where it listens."""

    id: str = key(min_length=1, description="node id (also its TLS server name)")
    org: str = key(min_length=1, description="its organisation")
    roles: list[Role] = key(min_length=1, description="roles it hosts")
    listen: str = key("127.0.0.1:0", description="listen address; port 0 = any free port")
    data_dir: str = key("data", description="ledgers, stores and the node lock")
    standby_of: str = key(
        "",
        max_length=128,
        description="a standby: the node id of the active peer or vault node whose identity it "
        "holds; it follows that node and refuses its work until promoted (`dltmw failover`)",
    )

    def __post_init__(self) -> None:
        check_bounds(self)
        check_roles(self.roles)
        if self.standby_of and not set(self.roles) <= {"peer", "gateway", "vault"}:
            raise ValueError("a standby hosts only the peer, gateway and vault roles")


@dataclass(frozen=True)
class FilesTable:
    """`[files]`: key material and shared files (paths relative to node.toml)."""

    identity_cert: str = key(description="signing certificate (PEM)")
    identity_key: str = key(
        description="signing key: a PKCS#8 PEM file, or a PKCS#11 URI `pkcs11:token=..;object=..`"
    )
    tls_cert: str = key(description="TLS certificate (PEM)")
    tls_key: str = key(description="TLS key (PEM)")
    tls_roots: str = key(description="every organisation's root CA (PEM)")
    org_ca: str = key(description="its own organisation's CA (PEM)")
    address_book: str = key(description="directory of published node addresses")
    privacy_key: str | None = key(None, description="X25519 key of the privacy manager")
    privacy_kem_key: str | None = key(
        None, description="ML-KEM-768 key of the privacy manager (hybrid channels)"
    )
    storage_key: str | None = key(
        None,
        description="key wrapping the node's data keys: private state, private payloads and"
        " vault records are then encrypted at rest (docs/privacy.md)",
    )
    network_map: str | None = key(None, description="UTXO parties and notaries")


@dataclass(frozen=True)
class ChannelsTable:
    """`[channels]`: channels the node serves from its start."""

    genesis: list[str] = key(default_factory=list, description="config blocks (block 0)")


@dataclass(frozen=True)
class LedgerTable:
    """`[ledger]`: where the node's ledgers and stores live, and how durably."""

    synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] = key(
        "FULL", description="sqlite synchronous mode (FULL: a commit survives power loss)"
    )
    state: Literal["sqlite", "postgresql"] = key(
        "sqlite",
        description="a peer's channel ledgers (blocks, tx index, world state) and private stores "
        "(private state, payloads): sqlite files, or schemas of the PostgreSQL database "
        "`postgresql_dsn` (docs/postgresql.md)",
    )
    postgresql_dsn: str = key(
        "",
        description="libpq connection string of the peer's database (state = postgresql); "
        "one database may serve many nodes: each ledger is a schema `node/channel/peer`, "
        "each private store `node/channel/private`",
    )

    def __post_init__(self) -> None:
        if self.state == "postgresql" and not self.postgresql_dsn:
            raise ValueError("state = 'postgresql' needs postgresql_dsn")


@dataclass(frozen=True)
class ValidationTable:
    """`[validation]`: how a peer checks the transactions of a delivered block."""

    verify_threads: int = key(
        0,
        ge=0,
        le=256,
        description="threads checking signatures and policies (also notaries' and vaults' "
        "checks); 0 = one per CPU core this process may run on",
    )

    def __post_init__(self) -> None:
        check_bounds(self)


@dataclass(frozen=True)
class NotaryTable:
    """`[notary]`: the interpreter of a process hosting the notary role (single or cluster
    member), set once it serves (`runtime/interpreter.py`; other processes keep CPython's)."""

    switch_interval_ms: float = key(
        NOTARY_SWITCH_INTERVAL_MS,
        gt=0,
        le=100,
        description="how long a thread holding the GIL keeps it while another waits "
        "(`sys.setswitchinterval`; CPython's default is 5 ms)",
    )
    gc_young_threshold: int = key(
        NOTARY_GC_YOUNG_THRESHOLD,
        ge=100,
        le=1_000_000,
        description="net container allocations between young collections "
        "(`gc.set_threshold`'s first value; CPython's default is 700)",
    )

    def __post_init__(self) -> None:
        check_bounds(self)


DEFAULT_NOTARY = NotaryTable()


@dataclass(frozen=True)
class PrivateTable:
    """`[private]`: the privacy manager of a peer (docs/privacy.md "Queued delivery")."""

    delivery_expiry_s: float = key(
        7 * 24 * 3600.0,
        ge=0,
        description="how long a private payload owed to a recipient that is down is pushed "
        "again before its delivery is given up (EXPIRED: logged once, kept in the sender's "
        "view); 0 = never",
    )

    def __post_init__(self) -> None:
        check_bounds(self)


DEFAULT_PRIVATE = PrivateTable()


@dataclass(frozen=True)
class StorageTable:
    """`[storage]`: how long and how a transient storage fault is retried before the node stops."""

    retry_first_s: float = key(DEFAULT_RETRY.first_s, gt=0, description="first backoff")
    retry_max_s: float = key(DEFAULT_RETRY.max_s, gt=0, description="longest backoff")
    retry_s: float = key(DEFAULT_RETRY.budget_s, ge=0, description="give up after this long")

    def __post_init__(self) -> None:
        check_bounds(self)
        if self.retry_first_s > self.retry_max_s:
            raise ValueError("need retry_first_s <= retry_max_s")

    def policy(self) -> RetryPolicy:
        """The store retry policy these keys describe."""
        return RetryPolicy(self.retry_first_s, self.retry_max_s, self.retry_s)


@dataclass(frozen=True)
class JetStreamTable:
    """`[jetstream]`: the NATS JetStream cluster an orderer of a channel with ordering
    "jetstream" appends to and consumes (`runtime/roles/orderer/jetstream.py`)."""

    servers: list[str] = key(
        default_factory=list,
        description='client URLs of the nats-servers, e.g. "nats://127.0.0.1:4222" (any one '
        "reachable is enough; the client fails over to the others)",
    )
    replicas: int = key(3, ge=1, le=5, description="replicas of each channel's stream")
    publish_timeout_ms: int = key(
        2000, gt=0, description="a publish not acknowledged by then fails with UNAVAILABLE"
    )
    ca_file: str = key(
        "",
        description="TLS: the CAs the nats-servers' certificates chain to (the node presents its"
        " own TLS certificate and key); empty: plain TCP",
    )
    ping_interval_ms: int = key(
        2000,
        gt=0,
        description="the client pings its nats-server this often and leaves it for another after"
        " two unanswered pings (a partitioned server says nothing; TCP would take minutes)",
    )

    def __post_init__(self) -> None:
        check_bounds(self)


@dataclass(frozen=True)
class NodeFile:
    """A node.toml."""

    node: NodeTable
    files: FilesTable
    channels: ChannelsTable = key(default_factory=ChannelsTable)
    ledger: LedgerTable = key(default_factory=LedgerTable)
    limits: Limits = key(default_factory=Limits, description="input bounds (rpc/boundary.py)")
    keepalive: Keepalive = key(
        DEFAULT_KEEPALIVE,
        description="pings: time_ms between client pings, timeout_ms for the answer, "
        "min_recv_ping_interval_ms the server tolerates (rpc/channel_options.py)",
    )
    logging: LogSettings = key(DEFAULT_LOGGING, description="the node's log")
    operations: OperationsSettings = key(
        DEFAULT_OPERATIONS,
        description="HTTP endpoint: /metrics, /healthz, /readyz, /loglevel (docs/operations.md)",
    )
    tracing: TracingSettings = key(
        DEFAULT_TRACING, description="OpenTelemetry spans over OTLP (docs/operations.md)"
    )
    storage: StorageTable = key(default_factory=StorageTable)
    validation: ValidationTable = key(default_factory=ValidationTable)
    notary: NotaryTable = key(default_factory=NotaryTable)
    private: PrivateTable = key(default_factory=PrivateTable)
    jetstream: JetStreamTable = key(
        default_factory=JetStreamTable, description="the NATS cluster of jetstream ordering"
    )
