"""A node process: hosts the peer, orderer and gateway roles of its channels on one gRPC server.

Start: load identity and TLS, open every channel it belongs to (from the genesis files named in
its config and those it joined later, kept under `data/channels/`), start the roles, serve on
grpc.aio with mutual TLS (through its `transport`: the simulator swaps in its own network),
publish its address, print one READY line. The server carries only the services of the roles
the node hosts (`_services`; reflection lists exactly those, on both reflection protocols, and
health answers for each by name), each behind the request boundary (`rpc/boundary.py`: bounds,
budget and parsing before any servicer runs), with the keepalive policy its clients follow
(`rpc/channel_options.py`). The code of a role (peer, gateway, solo or PBFT-lite orderer,
notary, vault, standby, privacy, the installed-contract store, the operations endpoint) is
imported where that role is built, so a node holds only the code of the roles it hosts: memory
and start time (`tests/integration/test_node_imports.py`, `tests/unit/test_role_imports.py`).
Stop is two-stage: refuse new RPCs and let running ones finish within the grace period (health
NOT_SERVING first), then cancel what is left, stop the roles and close the ledgers.

Every long-lived task of every role runs under the node's `TaskOwner` (`ctx.tasks`,
`aio/tasks.py`). When one fails for good, `_on_fatal` turns health NOT_SERVING for every
service at once and sets `failed`; the process then stops the node and exits with
`EXIT_FATAL` (`runtime/__main__.py`), and its keeper restarts it from what is durable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2

from dltmw.aio.tasks import TaskOwner, cancel_and_wait
from dltmw.core.block import block_hash
from dltmw.core.channel import ChannelView, ConfigError
from dltmw.core.config_update import CONFIG_KEY, CONFIG_NAMESPACE, restored_view
from dltmw.core.errors import ClientError, InvariantViolation
from dltmw.core.genesis import genesis_tx_id, read_genesis
from dltmw.core.identity import Membership
from dltmw.core.verified_memo import IN_PROCESS
from dltmw.ledger.at_rest import PLAIN, RecordCipher, ValueCodec, open_cipher
from dltmw.ledger.backend import Ledger
from dltmw.ledger.sqlite import ChannelLedger
from dltmw.net.addressbook import AddressBook, routes
from dltmw.net.keyfile import read_key
from dltmw.net.signer import load_signer
from dltmw.rpc.admin import AdminServicer
from dltmw.rpc.boundary import Boundary, add_service
from dltmw.rpc.reflection import reflectors
from dltmw.rpc.tls import TlsMaterial
from dltmw.rpc.tracing import NO_TRACING, Tracer
from dltmw.runtime.audit import Auditor
from dltmw.runtime.config import CONTRACT_ROLES, NodeConfig, peer_schema
from dltmw.runtime.context import NodeContext
from dltmw.runtime.faults import is_transient
from dltmw.runtime.node_state import NodeGauges, Replicated, not_ready_reasons
from dltmw.runtime.roles.utxo import UtxoServices
from dltmw.runtime.transport import GRPC, Transport
from dltmw.v1 import (
    admin_service_pb2,
    block_pb2,
    config_pb2,
    crosschain_pb2,
    endorser_service_pb2,
    errors_pb2,
    gateway_service_pb2,
    orderer_service_pb2,
    privacy_manager_service_pb2,
    replica_pb2,
    standby_pb2,
    transaction_pb2,
)

if TYPE_CHECKING:  # imported where used: a node loads only the code of the roles it hosts
    from dltmw.ledger.private_store import PrivateStore
    from dltmw.runtime.contract_store import ContractStore
    from dltmw.runtime.operations import OperationsServer
    from dltmw.runtime.roles.gateway.gateway import Gateway
    from dltmw.runtime.roles.notary.cluster import ClusterNotaryRole
    from dltmw.runtime.roles.notary.single import NotaryRole
    from dltmw.runtime.roles.orderer.pbft import PbftOrdererChannel
    from dltmw.runtime.roles.orderer.solo import OrdererChannel
    from dltmw.runtime.roles.peer.channel import PeerChannel
    from dltmw.runtime.roles.privacy.manager import PrivacyManager
    from dltmw.runtime.standby import Standby

logger = logging.getLogger(__name__)
R = errors_pb2


def _service(module: Any, name: str) -> ServiceDescriptor:
    """Descriptor of service `name` of a generated `_pb2` module."""
    found: ServiceDescriptor = module.DESCRIPTOR.services_by_name[name]
    return found


def _tracer(config: NodeConfig) -> Tracer:
    """The node's tracer: OTLP export when `[tracing]` names an endpoint, else none at all."""
    settings = config.tracing
    if settings is None:
        return NO_TRACING
    return Tracer.otlp(settings.otlp_endpoint, config.node_id, settings.export_delay_ms)


def _gateway(config: NodeConfig, ctx: NodeContext, peers: dict[str, PeerChannel]) -> Gateway | None:
    """The gateway role, on the nodes that host it (its code, and the peer code it drives,
    is imported here: an orderer or a notary never loads it)."""
    if "gateway" not in config.roles:
        return None
    from dltmw.runtime.roles.gateway.gateway import Gateway

    return Gateway(ctx, peers)


def _contract_store(config: NodeConfig) -> ContractStore | None:
    """Installed contract packages, on the roles that run them: channel contracts (peers),
    UTXO contracts (the vaults and notaries that verify them: runtime/utxo_code.py). The
    package loader is imported here, by those roles only."""
    if not CONTRACT_ROLES & config.roles:
        return None
    from dltmw.runtime.contract_store import ContractStore

    return ContractStore(config.data_dir / "contracts")


class Node:
    """One dltmw node process."""

    def __init__(self, config: NodeConfig, transport: Transport = GRPC) -> None:
        self.config = config
        self.transport = transport  # grpc.aio + mTLS, or the simulator's network
        tls = TlsMaterial.load(config.tls_cert, config.tls_key, config.tls_roots)
        self.ctx = NodeContext(
            node_id=config.identity_id,  # a standby acts as its active (runtime/standby.py)
            org_id=config.org_id,
            signer=load_signer(config.org_id, config.identity_cert, config.identity_key),
            tls=tls,
            addresses=AddressBook(config.address_book),
            limits=config.limits,
            keepalive=config.keepalive,
            tasks=TaskOwner(on_fatal=self._on_fatal, transient=is_transient),
            storage_retry=config.storage_retry,
            transport=transport,
            tracer=_tracer(config),
        )
        self.failed = asyncio.Event()  # a long-lived task failed for good: the node must stop
        self.own_org = Membership({config.org_id: config.org_ca.read_bytes()})
        self.peers: dict[str, PeerChannel] = {}
        self.orderers: dict[str, OrdererChannel] = {}
        self.pbft_orderers: dict[str, PbftOrdererChannel] = {}  # those ordered by PBFT-lite
        self._chain_checks: list[asyncio.Task[None]] = []  # `_check_chain_later`
        self.gateway = _gateway(config, self.ctx, self.peers)
        self.privacy: PrivacyManager | None = None
        values: ValueCodec = PLAIN  # encryption at rest: on with a storage key (ledger/at_rest)
        if config.storage_key is not None:
            values = open_cipher(config.data_dir, read_key(config.storage_key))
        self._values = values
        if config.privacy_key is not None and "peer" in config.roles:
            from dltmw.runtime.roles.privacy.hybrid import load_privacy_key
            from dltmw.runtime.roles.privacy.manager import PrivacyManager

            kem = read_key(config.privacy_kem_key) if config.privacy_kem_key else None
            key = load_privacy_key(read_key(config.privacy_key), kem)
            self.privacy = PrivacyManager(
                self.ctx, key, self._open_private_store, config.private.delivery_expiry_s
            )
        self._pool = ThreadPoolExecutor(
            max_workers=config.verify_pool_threads(), thread_name_prefix="verify"
        )
        self.contracts = _contract_store(config)
        self.utxo = UtxoServices(config, self.ctx, self._pool, values, self.contracts)
        self.auditor = Auditor(config.node_id, self.peers, self.orderers, self.privacy)
        self._server: grpc.aio.Server | None = None
        self._counted = False  # in `IN_PROCESS`'s nodes (started, not yet stopped)
        self.boundary = Boundary(config.limits, self.ctx.metrics, self.ctx.tracer)
        self.standby: Standby | None = None
        self.superseded_by = self.ctx.addresses.superseded_by(config.node_id)
        if config.standby_of:
            from dltmw.runtime.standby import Standby

            self.standby = Standby(self.ctx, config.standby_of, config.data_dir, config.node_id)
            self.boundary.gate = self.standby.gate
        elif self.superseded_by is not None:  # its standby was promoted (runtime/standby.py)
            from dltmw.runtime.standby import superseded_gate

            self.boundary.gate = superseded_gate(config.node_id, self.superseded_by)
        self._health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self.address = ""
        self.service_names: tuple[str, ...] = ()  # what the server registered (health, reflection)
        self._join_lock = asyncio.Lock()
        private = self.privacy.channels if self.privacy is not None else {}
        replicas: list[tuple[str, Mapping[str, Replicated]]] = [
            ("orderer", self.pbft_orderers),
            ("notary", self.utxo.clusters),
        ]
        self.gauges = NodeGauges(self.peers, self.orderers, self.peers, replicas, private)
        self.ctx.metrics.add_source(self.gauges.collect)
        self.operations: OperationsServer | None = None
        self.operations_address = ""  # "host:port" of the operations endpoint, "" without one

    async def _on_fatal(self, task_name: str, _exc: BaseException | None) -> None:
        """A task failed for good (already logged with its traceback): NOT_SERVING for every
        service at once, then let the process stop the node."""
        await self._health.enter_graceful_shutdown()
        logger.critical("node %s stops: task %s failed", self.config.node_id, task_name)
        self.failed.set()

    @property
    def channels_dir(self) -> Path:
        """Where joined channels' config blocks are kept."""
        return self.config.data_dir / "channels"

    async def start(self) -> str:
        """Open channels, start roles and the server; returns the bound address."""
        if not self._counted:  # nodes of one process share what they verified (`IN_PROCESS`)
            IN_PROCESS.node_started()
            self._counted = True
        self.channels_dir.mkdir(parents=True, exist_ok=True)
        blocks = [p.read_bytes() for p in self.config.genesis_blocks]
        blocks += [p.read_bytes() for p in sorted(self.channels_dir.glob("*.block"))]
        for raw in blocks:
            block = block_pb2.Block.FromString(raw)
            if block.header.channel_id not in {*self.peers, *self.orderers}:
                await self.join(block)
        await self.utxo.start()
        self._server = self._make_server()
        port = self.transport.listen(
            self._server, self.config.listen, self.ctx.tls, self._client_roots
        )
        await self._server.start()
        host = self.config.listen.rsplit(":", 1)[0]
        self.address = f"{host}:{port}"
        for name in ("", *self.service_names):  # "" is the node as a whole
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if self.superseded_by is None or self.standby is not None:
            self.ctx.addresses.publish(self.config.node_id, self.address)
        else:
            logger.error("%s took over this node's identity: refusing all work", self.superseded_by)
        if self.standby is not None:
            self.standby.address = self.address
            self.standby.publish()  # under the active's id too, if promoted before a restart
            replicated = self.privacy is not None or self.utxo.vault is not None
            if replicated and not self.standby.promoted:
                follow = self.standby.follow(self.privacy, self.utxo.vault)
                self.ctx.tasks.spawn("standby-follow", follow)
        self.gauges.baseline()
        if self.config.operations is not None:
            from dltmw.runtime.explorer.api import Explorer
            from dltmw.runtime.operations import OperationsServer, Probe

            tls = (self.config.tls_cert, self.config.tls_key)
            probe = Probe(self.alive, self.not_ready_reasons)
            explorer = Explorer(
                self.config.node_id,
                self.config.org_id,
                self.peers,
                self.orderers,
                self.pbft_orderers,
                self._notaries,
            )
            rotate = self._values.ring.rotate if isinstance(self._values, RecordCipher) else None
            self.operations = OperationsServer(
                self.config.operations,
                self.ctx.metrics,
                probe,
                self.ctx.tasks,
                tls,
                explorer,
                rotate,
            )
            self.operations_address = await self.operations.start()
        return self.address

    def _notaries(self) -> dict[str, NotaryRole | ClusterNotaryRole]:
        """The notary roles of this node, by name (the explorer's notary decisions)."""
        found: dict[str, NotaryRole | ClusterNotaryRole] = dict(self.utxo.clusters)
        if self.utxo.notary is not None and self.utxo.notary not in found.values():
            found["notary"] = self.utxo.notary
        return found

    def _client_roots(self) -> bytes:
        """The CAs a caller's TLS certificate may chain to: the roots file and the
        organisations of every channel this node serves (across hosts each organisation's
        roots file holds only its own CA). Asked by the TLS layer at each handshake, so a
        channel joined later is trusted from then on."""
        roots = [self.ctx.tls.roots_pem]
        if self.utxo.netmap is not None:  # the UTXO counterparties and notaries of every org
            roots += list(self.utxo.netmap.roots.values())
        served: list[PeerChannel | OrdererChannel] = [*self.peers.values(), *self.orderers.values()]
        for channel in served:
            config = channel.view.config
            orgs = [*config.organizations, *config.orderer_organizations]
            roots += [o.root_certificate_pem for o in orgs]
        return b"\n".join(dict.fromkeys(r.strip() for r in roots)) + b"\n"

    def alive(self) -> tuple[bool, str]:
        """`/healthz`: False (with the task's name) once a task failed for good."""
        failed = self.ctx.tasks.failed
        return (not self.failed.is_set(), failed or "")

    def not_ready_reasons(self) -> list[str]:
        """`/readyz`: why the node is not ready; empty when it is (`runtime/node_state.py`)."""
        serving = self._server is not None and bool(self.address)
        failed = self.ctx.tasks.failed if self.failed.is_set() else None
        return not_ready_reasons(serving, failed or None, self.peers, self.pbft_orderers)

    def _make_server(self) -> grpc.aio.Server:
        config = self.config
        server = self.transport.server(config.node_id, config.limits, config.keepalive)
        names = [add_service(server, self.boundary, d, s) for d, s in self._services()]
        names += [add_service(server, self.boundary, d, s) for d, s in reflectors(names)]
        self.service_names = tuple(names)
        return server

    def _services(self) -> list[tuple[ServiceDescriptor, object]]:
        """The services this node serves: only those of the roles it hosts (Admin and Health
        everywhere), so nothing answers for a role a node does not have."""
        limits = self.config.limits
        window, wait = limits.timestamp_window_s, limits.commit_wait_s
        admin = AdminServicer(
            self.own_org, window, self.join_from_admin, self.status, self.auditor, self.contracts
        )
        out: list[tuple[ServiceDescriptor, object]] = [
            (_service(admin_service_pb2, "AdminService"), admin),
            (_service(health_pb2, "Health"), self._health),
        ]
        roles = self.config.roles
        if "peer" in roles:
            from dltmw.rpc.crosschain import CrossChainServicer
            from dltmw.rpc.endorser import EndorserServicer

            endorser = EndorserServicer(self.peers, limits.height_wait_s)
            out.append((_service(endorser_service_pb2, "EndorserService"), endorser))
            proving = CrossChainServicer(self.peers, limits.height_wait_s)
            out.append((_service(crosschain_pb2, "CrossChainService"), proving))
        if self.gateway is not None:  # the gateway role
            from dltmw.rpc.gateway import GatewayServicer

            gateway = GatewayServicer(
                self.gateway, self.peers, window, wait, limits.height_wait_s, self.ctx.node_id
            )
            out.append((_service(gateway_service_pb2, "GatewayService"), gateway))
        if "orderer" in roles:
            from dltmw.rpc.orderer import OrdererServicer

            orderer = OrdererServicer(self.orderers, window, self._pool, self.ctx.tracer)
            out.append((_service(orderer_service_pb2, "OrdererService"), orderer))
        if self.serves_replica:
            from dltmw.rpc.replica import ReplicaServicer

            replica = ReplicaServicer(self.pbft_orderers, self.utxo.clusters)
            out.append((_service(replica_pb2, "ReplicaService"), replica))
        if self.standby is not None:
            from dltmw.rpc.standby import StandbyServicer

            promote = StandbyServicer(self.own_org, window, self.standby)
            out.append((_service(standby_pb2, "StandbyService"), promote))
        if self.privacy is not None:
            from dltmw.rpc.privacy import PrivacyManagerServicer

            privacy = PrivacyManagerServicer(
                self.privacy, self.config.org_id, window, limits.items_per_request_max
            )
            out.append((_service(privacy_manager_service_pb2, "PrivacyManagerService"), privacy))
        return out + self.utxo.services()

    @property
    def serves_replica(self) -> bool:
        """A PBFT-lite replica lives here or may: a node of the orderer role (it may join a
        PBFT-lite channel later, `channel join` — an orderer issued by `org add-node` starts with
        no channel) or a notary-cluster member (decided at start: grpc cannot add a service to a
        running server; with no such channel the servicer refuses, CHANNEL_NOT_FOUND)."""
        return "orderer" in self.config.roles or bool(self.pbft_orderers or self.utxo.clusters)

    async def join(self, block: block_pb2.Block) -> str:
        """Serve the channel of config block `block`; returns its id."""
        try:
            view = read_genesis(block)
        except ConfigError as exc:
            raise ClientError(R.ERROR_REASON_INVALID_FIELD, f"config block: {exc}") from exc
        cid = view.channel_id
        me = self.config.identity_id
        is_orderer = "orderer" in self.config.roles and (
            me in view.orderer_ids() or _joins_replica_set(view, self.config.org_id)
        )
        # A peer of an organisation added by a config update joins with block 0, which does not
        # name it, and catches up; the orderer lets it read once the current config names it.
        named = any(n.node_id == me for n in view.config.peers)
        is_peer = "peer" in self.config.roles and (named or not is_orderer)
        if not (is_peer or is_orderer):
            raise ClientError(R.ERROR_REASON_ROLE_NOT_HOSTED, f"channel {cid!r} does not name {me}")
        self.ctx.addresses.learn(routes(view.config))  # advertised endpoints (across hosts)
        data = self.config.data_dir
        sync, retry = self.config.synchronous, self.config.storage_retry
        pbft = view.config.ordering == config_pb2.ORDERING_TYPE_PBFT
        if is_orderer:
            ledger = await ChannelLedger.open(
                data / f"{cid}.orderer.sqlite", synchronous=sync, retry=retry
            )
            if ledger.height == 0:
                await ledger.commit_block(block, [genesis_tx_id(block)])
            self._check_chain_later(f"{cid}.orderer", ledger)
            current = await stored_view(ledger, view)
            orderer: OrdererChannel
            replica: PbftOrdererChannel | None = None
            if pbft:  # the PBFT-lite code is loaded by the nodes that order such a channel
                from dltmw.ledger.pbft_store import RecordStore
                from dltmw.runtime.roles.orderer.pbft import PbftOrdererChannel

                store = await RecordStore.open(
                    data / f"{cid}.pbft.sqlite", synchronous=sync, retry=retry
                )
                orderer = replica = PbftOrdererChannel(
                    self.ctx, current, ledger, store, genesis=view
                )
            elif view.config.ordering == config_pb2.ORDERING_TYPE_JETSTREAM:
                orderer = self._jetstream_orderer(current, ledger)
            else:
                from dltmw.runtime.roles.orderer.solo import OrdererChannel

                orderer = OrdererChannel(self.ctx, current, ledger)
            await orderer.start()
            self.orderers[cid] = orderer
            if replica is not None:
                self.pbft_orderers[cid] = replica
        if is_peer:
            held = await self._open_peer_ledger(cid)
            if held.height == 0:
                genesis = block_pb2.Block()
                genesis.CopyFrom(block)
                genesis.metadata.validation_codes.append(transaction_pb2.TX_VALIDATION_CODE_VALID)
                await held.commit_block(genesis, [genesis_tx_id(block)])
            self._check_chain_later(f"{cid}.peer", held)
            peer = await self._start_peer(await stored_view(held, view), held, block_hash(block))
            self.peers[cid] = peer
            if self.privacy is not None:
                await self.privacy.add_channel(peer)
        return cid

    async def _start_peer(
        self, view: ChannelView, held: Ledger, genesis_hash: bytes
    ) -> PeerChannel:
        """Start the peer role of a channel (the peer code is imported here, by peers only)."""
        from dltmw.runtime.roles.peer.channel import PeerChannel

        peer = PeerChannel(
            self.ctx, view, held, self._pool, self.contracts, genesis_hash=genesis_hash
        )
        await peer.start()
        return peer

    def _check_chain_later(self, name: str, ledger: Ledger) -> None:
        """Check the whole stored chain in the background (the open checked its tail only,
        `ledger/chain_check.py`); a break fails the task, which stops the node."""
        self._chain_checks.append(
            self.ctx.tasks.spawn(f"chain-check-{name}", ledger.verify_stored_chain())
        )

    async def _open_peer_ledger(self, cid: str) -> Ledger:
        """The peer ledger of channel `cid`: a sqlite file, or a PostgreSQL schema (`[ledger]`
        state; the seam is `ledger/backend.py`)."""
        config = self.config
        if config.state == "postgresql":
            # the `postgresql` extra: a node on sqlite never imports psycopg
            from dltmw.ledger.postgresql import PgChannelLedger

            schema = peer_schema(config.node_id, cid)
            return await PgChannelLedger.open(
                config.postgresql_dsn, schema, retry=config.storage_retry
            )
        return await ChannelLedger.open(
            config.data_dir / f"{cid}.peer.sqlite",
            synchronous=config.synchronous,
            retry=config.storage_retry,
        )

    async def _open_private_store(self, cid: str, lost_if_created: bool) -> PrivateStore:
        """The private store of channel `cid`, beside its peer ledger: a sqlite file, or a
        schema of the same PostgreSQL database (`[ledger]` state; `ledger/private_pg.py`)."""
        config = self.config
        if config.state == "postgresql":
            from dltmw.ledger.private_pg import open_pg_private_store

            return await open_pg_private_store(
                config.postgresql_dsn,
                peer_schema(config.node_id, cid, "private"),
                retry=config.storage_retry,
                lost_if_created=lost_if_created,
                values=self._values,
                owner=self.ctx.tasks,
            )
        from dltmw.ledger.private_store import PrivateStore

        return await PrivateStore.open(
            config.data_dir / f"{cid}.private.sqlite",
            synchronous=config.synchronous,
            retry=config.storage_retry,
            lost_if_created=lost_if_created,
            values=self._values,
            owner=self.ctx.tasks,
        )

    def _jetstream_orderer(self, view: ChannelView, ledger: ChannelLedger) -> OrdererChannel:
        """The orderer of a channel ordered on NATS JetStream (its client is imported only
        here: nodes of other orderings need not install the jetstream extra)."""
        if self.config.jetstream is None:
            raise ClientError(
                R.ERROR_REASON_ROLE_NOT_HOSTED,
                f"{view.channel_id!r} is ordered by jetstream: give {self.config.node_id} a "
                "[jetstream] table naming the nats-servers in its node.toml",
            )
        from dltmw.runtime.roles.orderer.jetstream import JetStreamOrdererChannel
        from dltmw.runtime.roles.orderer.jetstream_log import client_tls

        settings = self.config.jetstream
        tls = client_tls(settings, self.config.tls_cert, self.config.tls_key)
        return JetStreamOrdererChannel(self.ctx, view, ledger, settings, tls)

    async def join_from_admin(self, block: block_pb2.Block) -> str:
        """JoinChannel: join and remember the config block for restarts."""
        async with self._join_lock:
            cid = block.header.channel_id
            if cid in self.peers or cid in self.orderers:
                raise ClientError(R.ERROR_REASON_ALREADY_JOINED, f"already serving {cid!r}")
            joined = await self.join(block)
            path = self.channels_dir / f"{joined}.block"
            path.write_bytes(block.SerializeToString())
            return joined

    def status(self) -> admin_service_pb2.NodeStatusResponse:
        """NodeStatus."""
        out = admin_service_pb2.NodeStatusResponse(
            node_id=self.config.node_id, org_id=self.config.org_id, roles=sorted(self.config.roles)
        )
        if self.standby is not None:
            out.standby_of, out.promoted = self.standby.active_id, self.standby.promoted
        for cid in sorted(set(self.peers) | set(self.orderers)):
            ledger = (self.peers.get(cid) or self.orderers[cid]).ledger
            roles = [r for r, d in (("peer", self.peers), ("orderer", self.orderers)) if cid in d]
            replica = self.pbft_orderers.get(cid)
            view = replica.current_view if replica is not None else 0
            out.channels.add(
                channel_id=cid,
                height=ledger.height,
                last_block_hash=ledger.last_hash,
                roles=roles,
                orderer_view=view,
            )
        return out

    def killed(self) -> None:
        """The simulator killed this node (kill -9, dltmw/sim/hosts.py): no `stop` follows, so
        give back here what `stop` would of the process — the node's count in the process
        memo (`IN_PROCESS`), which would otherwise stay shared for the rest of the process and
        keep a memo that a process of one node must not hold. Idempotent."""
        if self._counted:
            IN_PROCESS.node_stopped()
            self._counted = False

    async def stop(self, grace_s: float = 5.0) -> None:
        """Two-stage stop (idempotent)."""
        self.ctx.tasks.close()  # from here on, tasks ending is the stop, not a failure
        if self._counted:  # (a start that failed half-way is stopped too)
            IN_PROCESS.node_stopped()
            self._counted = False
        if self._server is None:
            return
        server, self._server = self._server, None
        await self._health.enter_graceful_shutdown()
        if self.operations is not None:
            await self.operations.stop()
        self.ctx.addresses.withdraw(self.config.node_id, self.address)
        if self.standby is not None:
            self.standby.withdraw()
        self.boundary.streams.end()  # subscriptions never end by themselves: end them now
        await server.stop(grace_s)
        await self.utxo.stop()
        if self.gateway is not None:
            await self.gateway.close()
        if self.privacy is not None:
            await self.privacy.stop()
        roles: list[PeerChannel | OrdererChannel] = [*self.peers.values(), *self.orderers.values()]
        for role in roles:
            await role.stop()
        for check in self._chain_checks:  # before the ledgers they read close
            await cancel_and_wait(check)
        for role in roles:
            await role.ledger.close()
        await self.ctx.tasks.stop()
        await self.ctx.close()
        self._pool.shutdown(wait=True)
        if self.ctx.tracer.enabled:
            await asyncio.to_thread(self.ctx.tracer.shutdown)  # export what is buffered (bounded)


def _joins_replica_set(view: ChannelView, org_id: str) -> bool:
    """An orderer node of an orderer organisation of the channel that block 0 does not name.
    PBFT-lite: it runs as a follower (fetching blocks) until a config update adds it to the
    replica set (docs/governance.md). JetStream: it consumes the channel's stream from the start
    and cuts the same blocks as every other orderer (the cutting is a function of the stream);
    peers take its blocks once a config update names it (docs/ordering.md)."""
    later = (config_pb2.ORDERING_TYPE_PBFT, config_pb2.ORDERING_TYPE_JETSTREAM)
    return view.config.ordering in later and org_id in {
        o.org_id for o in view.config.orderer_organizations
    }


async def stored_view(ledger: Ledger, genesis: ChannelView) -> ChannelView:
    """The channel's current view on this ledger: the config the last valid config block wrote
    (`core/config_update.config_write`, in that block's sqlite transaction), else block 0's."""
    entry = await ledger.read_snapshot(lambda r: r.get(CONFIG_NAMESPACE, CONFIG_KEY))
    if entry is None:
        return genesis
    try:
        return restored_view(entry[0], genesis)
    except ConfigError as exc:
        raise InvariantViolation(f"{ledger.name}: {exc}") from exc
