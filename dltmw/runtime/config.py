"""Node configuration: one TOML file per node, written by `dltmw init`, loaded once at start.

Paths inside the file are relative to the file's directory, so a generated network directory
can be moved as a whole. The loaded `NodeConfig` is frozen and validated; nothing reads the file
again.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from dltmw.ledger.retry import DEFAULT_RETRY, RetryPolicy

ROLES = frozenset({"peer", "orderer", "gateway", "notary", "vault"})


@dataclass(frozen=True)
class Limits:
    """Bounds that protect a node from overload and hostile input."""

    max_message_bytes: int = 4 * 1024 * 1024
    max_concurrent_rpcs: int = 1024
    timestamp_window_s: float = 900.0
    commit_wait_s: float = 30.0
    queue_max: int = 10_000


@dataclass(frozen=True)
class LogSettings:
    """The node's own log file (`[logging]` in node.toml): rotated when it reaches
    `file_bytes_max`; `file_count` files are kept, the current one included."""

    file_bytes_max: int = 10 * 1024 * 1024
    file_count: int = 5
    level: str = "INFO"

    def __post_init__(self) -> None:
        if self.file_bytes_max < 1024 or self.file_count < 2:
            raise ValueError("logging: need file_bytes_max >= 1024 and file_count >= 2")


@dataclass(frozen=True)
class NodeConfig:
    """Everything a node process needs to start."""

    node_id: str
    org_id: str
    roles: frozenset[str]
    listen: str
    data_dir: Path
    identity_cert: Path
    identity_key: Path
    tls_cert: Path
    tls_key: Path
    tls_roots: Path
    org_ca: Path
    address_book: Path
    genesis_blocks: tuple[Path, ...]
    synchronous: str
    limits: Limits
    privacy_key: Path | None = None  # X25519 key of the privacy manager (peers only)
    network_map: Path | None = None  # UTXO parties and notaries (roles notary, vault)
    logging: LogSettings = LogSettings()
    storage_retry: RetryPolicy = DEFAULT_RETRY  # `[storage]`: retry_first_s, retry_max_s, retry_s

    @staticmethod
    def load(path: Path) -> NodeConfig:
        """Read and validate a node.toml; raises ValueError with the offending key."""
        base = path.resolve().parent
        with path.open("rb") as f:
            raw = tomllib.load(f)
        try:
            node, files = raw["node"], raw["files"]
            roles = frozenset(node["roles"])
            if not roles or not roles <= ROLES:
                raise ValueError(f"node.roles must be a non-empty subset of {sorted(ROLES)}")
            if "gateway" in roles and "peer" not in roles:
                raise ValueError("a gateway needs the peer role on the same node")
            return NodeConfig(
                node_id=node["id"],
                org_id=node["org"],
                roles=roles,
                listen=node.get("listen", "127.0.0.1:0"),
                data_dir=base / node.get("data_dir", "data"),
                identity_cert=base / files["identity_cert"],
                identity_key=base / files["identity_key"],
                tls_cert=base / files["tls_cert"],
                tls_key=base / files["tls_key"],
                tls_roots=base / files["tls_roots"],
                org_ca=base / files["org_ca"],
                address_book=base / files["address_book"],
                genesis_blocks=tuple(base / g for g in raw.get("channels", {}).get("genesis", [])),
                synchronous=raw.get("ledger", {}).get("synchronous", "FULL"),
                limits=Limits(**raw.get("limits", {})),
                privacy_key=base / files["privacy_key"] if "privacy_key" in files else None,
                network_map=base / files["network_map"] if "network_map" in files else None,
                logging=LogSettings(**raw.get("logging", {})),
                storage_retry=_retry_policy(raw.get("storage", {})),
            )
        except KeyError as exc:
            raise ValueError(f"{path}: missing key {exc}") from exc


def _retry_policy(raw: dict[str, float]) -> RetryPolicy:
    """`[storage]`: how long and how a transient storage fault is retried before the node stops."""
    unknown = set(raw) - {"retry_first_s", "retry_max_s", "retry_s"}
    if unknown:
        raise ValueError(f"storage: unknown keys {sorted(unknown)}")
    default = RetryPolicy()
    policy = RetryPolicy(
        first_s=float(raw.get("retry_first_s", default.first_s)),
        max_s=float(raw.get("retry_max_s", default.max_s)),
        budget_s=float(raw.get("retry_s", default.budget_s)),
    )
    if not 0 < policy.first_s <= policy.max_s or policy.budget_s < 0:
        raise ValueError("storage: need 0 < retry_first_s <= retry_max_s and retry_s >= 0")
    return policy
