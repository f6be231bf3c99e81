"""Node configuration: one TOML file per node, written by `dltmw init`, loaded once at start.

Paths inside the file are relative to the file's directory, so a generated network directory
can be moved as a whole. The file's schema is `runtime/config_file.py` (unknown keys are refused
with their path; `docs/config.md` is generated from it); the loaded `NodeConfig` is frozen and
validated; nothing reads the file again.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path

from dltmw.ledger.retry import DEFAULT_RETRY, RetryPolicy
from dltmw.net import tomltable
from dltmw.net.signer import KeyRef, key_ref
from dltmw.rpc.channel_options import DEFAULT_KEEPALIVE, Keepalive
from dltmw.runtime.config_file import (
    DEFAULT_LOGGING,
    DEFAULT_NOTARY,
    DEFAULT_PRIVATE,
    JetStreamTable,
    Limits,
    LogSettings,
    NodeFile,
    NotaryTable,
    OperationsSettings,
    PrivateTable,
    TracingSettings,
)

__all__ = ["Limits", "LogSettings", "NodeConfig", "OperationsSettings", "TracingSettings"]

# The roles that run installed contract code (`runtime/contract_store.py`, loaded only by them).
CONTRACT_ROLES = frozenset({"peer", "vault", "notary"})


@dataclass(frozen=True)
class NodeConfig:
    """Everything a node process needs to start."""

    node_id: str
    org_id: str
    roles: frozenset[str]
    listen: str
    data_dir: Path
    identity_cert: Path
    identity_key: KeyRef  # a key file, or a key in a PKCS#11 token (net/signer.py)
    tls_cert: Path
    tls_key: Path
    tls_roots: Path
    org_ca: Path
    address_book: Path
    genesis_blocks: tuple[Path, ...]
    synchronous: str
    limits: Limits
    state: str = "sqlite"  # `[ledger]` state: where a peer's channel ledgers live
    postgresql_dsn: str = ""  # ... and the database when state = "postgresql"
    keepalive: Keepalive = DEFAULT_KEEPALIVE
    privacy_key: Path | None = None  # X25519 key of the privacy manager (peers only)
    privacy_kem_key: Path | None = None  # its ML-KEM-768 key (peers of hybrid channels)
    storage_key: Path | None = None  # wraps the data keys of encryption at rest (ledger/at_rest)
    network_map: Path | None = None  # UTXO parties and notaries (roles notary, vault)
    logging: LogSettings = DEFAULT_LOGGING
    storage_retry: RetryPolicy = DEFAULT_RETRY  # `[storage]`: retry_first_s, retry_max_s, retry_s
    # `[operations]`; None (the default of a config built in code, e.g. by the simulator): none
    operations: OperationsSettings | None = None
    # `[tracing]`; None (no endpoint, the default): no tracing
    tracing: TracingSettings | None = None
    verify_threads: int = 0  # `[validation]`: the verify pool's threads; 0 = one per core
    # `[jetstream]`: the NATS cluster of channels ordered by "jetstream" (orderers only)
    jetstream: JetStreamTable | None = None
    standby_of: str = ""  # `[node] standby_of`: the active whose identity a standby holds
    notary: NotaryTable = DEFAULT_NOTARY  # `[notary]`: its interpreter settings (interpreter.py)
    private: PrivateTable = DEFAULT_PRIVATE  # `[private]`: the privacy manager (queued delivery)

    @property
    def identity_id(self) -> str:
        """The node id its roles act as: the active's for a standby (it holds that identity
        and takes over that name when promoted), else its own."""
        return self.standby_of or self.node_id

    def verify_pool_threads(self) -> int:
        """Threads of the verify pool: as configured, else one per core this process may use
        (signature checks release the GIL, so every core verifies)."""
        return self.verify_threads or usable_cores()

    @staticmethod
    def load(path: Path) -> NodeConfig:
        """Read and validate a node.toml; raises ValueError (`FileError`) naming the key path."""
        doc = tomltable.load(path, NodeFile)
        base = path.resolve().parent
        files = doc.files
        return NodeConfig(
            node_id=doc.node.id,
            org_id=doc.node.org,
            roles=frozenset(doc.node.roles),
            listen=doc.node.listen,
            data_dir=base / doc.node.data_dir,
            identity_cert=base / files.identity_cert,
            identity_key=key_ref(base, files.identity_key),
            tls_cert=base / files.tls_cert,
            tls_key=base / files.tls_key,
            tls_roots=base / files.tls_roots,
            org_ca=base / files.org_ca,
            address_book=base / files.address_book,
            genesis_blocks=tuple(base / g for g in doc.channels.genesis),
            synchronous=doc.ledger.synchronous,
            state=doc.ledger.state,
            postgresql_dsn=doc.ledger.postgresql_dsn,
            limits=doc.limits,
            keepalive=doc.keepalive,
            privacy_key=base / files.privacy_key if files.privacy_key else None,
            privacy_kem_key=base / files.privacy_kem_key if files.privacy_kem_key else None,
            storage_key=base / files.storage_key if files.storage_key else None,
            network_map=base / files.network_map if files.network_map else None,
            logging=doc.logging,
            storage_retry=doc.storage.policy(),
            operations=doc.operations if doc.operations.listen else None,
            tracing=doc.tracing if doc.tracing.otlp_endpoint else None,
            verify_threads=doc.validation.verify_threads,
            jetstream=_jetstream(doc.jetstream, base),
            standby_of=doc.node.standby_of,
            notary=doc.notary,
            private=doc.private,
        )


def _jetstream(table: JetStreamTable, base: Path) -> JetStreamTable | None:
    """The `[jetstream]` table with its CA file made absolute, or None without servers."""
    if not table.servers:
        return None
    if table.ca_file:
        return replace(table, ca_file=str(base / table.ca_file))
    return table


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity where the OS tells, else the count)."""
    affinity = getattr(os, "sched_getaffinity", None)
    if affinity is not None:
        return max(1, len(affinity(0)))
    return max(1, os.cpu_count() or 1)


# PostgreSQL's identifiers (NAMEDATALEN - 1; `ledger/pg_database.PgSchema` refuses longer ones)
SCHEMA_NAME_BYTES_MAX = 63


def peer_schema(node_id: str, channel_id: str, part: str = "peer") -> str:
    """The PostgreSQL schema of a node's peer ledger of a channel (`state = "postgresql"`; one
    database may serve many nodes): `node/channel/peer`, or when longer than PostgreSQL's 63-byte
    names, a readable head and a hash of the whole. `part = "private"`: its private store's."""
    name = f"{node_id}/{channel_id}/{part}"
    if len(name.encode()) <= SCHEMA_NAME_BYTES_MAX:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    return name.encode()[: SCHEMA_NAME_BYTES_MAX - 17].decode(errors="ignore") + "~" + digest
