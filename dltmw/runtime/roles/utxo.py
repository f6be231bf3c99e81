"""The notarised-UTXO roles of a node: "notary" (NotaryService) and "vault" (FlowService and
VaultService). Built from the node config and the network map; the node only calls `start`,
`services` and `stop`.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from google.protobuf.descriptor import ServiceDescriptor

from dltmw.ledger.at_rest import PLAIN, ValueCodec
from dltmw.runtime.config import NodeConfig
from dltmw.runtime.context import NodeContext

if TYPE_CHECKING:  # imported where used: a node without these roles never loads their code
    from dltmw.core.identity import Membership
    from dltmw.net.netmap import NetworkMap
    from dltmw.runtime.contract_store import ContractStore
    from dltmw.runtime.roles.notary.cluster import ClusterNotaryRole
    from dltmw.runtime.roles.notary.single import NotaryRole
    from dltmw.runtime.roles.vault.vault import VaultRole

UTXO_ROLES = frozenset({"notary", "vault"})


class UtxoServices:
    """Notary and vault roles of one node (either may be absent)."""

    def __init__(
        self,
        config: NodeConfig,
        ctx: NodeContext,
        pool: ThreadPoolExecutor,
        values: ValueCodec = PLAIN,
        contracts: ContractStore | None = None,
    ) -> None:
        self._contracts = contracts  # installed UTXO contract packages (runtime/utxo_code.py)
        self.notary: NotaryRole | ClusterNotaryRole | None = None
        self.vault: VaultRole | None = None
        self.clusters: dict[str, ClusterNotaryRole] = {}  # notary-cluster replicas by cluster id
        self.netmap: NetworkMap | None = None  # the UTXO parties, with roles notary/vault
        self._window_s = config.limits.timestamp_window_s
        self._org_id = config.org_id
        if not UTXO_ROLES & config.roles:
            return
        if config.network_map is None:
            raise ValueError("roles notary/vault need files.network_map in node.toml")
        from dltmw.net.netmap import NetworkMap
        from dltmw.runtime.utxo_code import InstalledUtxoCode

        code = InstalledUtxoCode(contracts, config.limits.contract_wall_s)
        netmap = self.netmap = NetworkMap.load(config.network_map).with_code(code)
        ctx.addresses.learn(netmap.routes())  # vaults and notaries on other hosts
        membership = netmap.membership()
        if "notary" in config.roles:
            self._notary(config, ctx, pool, netmap, membership)
        if "vault" in config.roles:  # the vault's code is imported by vault nodes only
            from dltmw.ledger.vault_store import VaultStore
            from dltmw.runtime.roles.vault.vault import VaultRole

            store = VaultStore(
                config.data_dir / "vault.sqlite", config.synchronous, ctx.storage_retry, values
            )
            self.vault = VaultRole(ctx, store, netmap, membership)

    def _notary(
        self,
        config: NodeConfig,
        ctx: NodeContext,
        pool: ThreadPoolExecutor,
        netmap: NetworkMap,
        membership: Membership,
    ) -> None:
        """The notary role: a member of a notary cluster, or a single notary."""
        from dltmw.runtime.roles.notary.cluster import build_cluster_role

        cluster = build_cluster_role(
            ctx, netmap, config.data_dir, config.synchronous, pool, config.limits.queue_max
        )
        if cluster is not None:
            self.notary, self.clusters[cluster.cluster_id] = cluster, cluster
            return
        from dltmw.ledger.notary_store import NotaryStore
        from dltmw.runtime.roles.notary.single import NotaryRole

        notary_store = NotaryStore(
            config.data_dir / "notary.sqlite",
            ctx.signer.sign,
            config.synchronous,
            exit_after_commit=NotaryRole.exit_hook_enabled(),
            retry=ctx.storage_retry,
        )
        self.notary = NotaryRole(
            ctx,
            notary_store,
            membership,
            pool,
            validating=netmap.validating.get(config.node_id, False),
            queue_max=config.limits.queue_max,
            code=netmap.contract_code,
        )

    async def start(self) -> None:
        """Load the installed UTXO contracts, open stores and start the roles."""
        if self._contracts is not None and (self.notary is not None or self.vault is not None):
            await asyncio.to_thread(self._contracts.preload)
        if self.notary is not None:
            await self.notary.start()
        if self.vault is not None:
            await self.vault.start()

    def services(self) -> list[tuple[ServiceDescriptor, object]]:
        """The hosted services and their servicers (the node registers them)."""
        out: list[tuple[ServiceDescriptor, object]] = []
        if self.notary is None and self.vault is None:
            return out
        if self.notary is not None:
            from dltmw.rpc.notary import NotaryServicer
            from dltmw.v1 import notary_service_pb2

            notary = notary_service_pb2.DESCRIPTOR.services_by_name["NotaryService"]
            out.append((notary, NotaryServicer(self.notary)))
        if self.vault is not None:  # the vault's servicers: imported by vault nodes only
            from dltmw.rpc.flow import FlowServicer, VaultServicer
            from dltmw.rpc.vault_recovery import VaultRecoveryServicer
            from dltmw.runtime.roles.vault.flows import FlowRunner
            from dltmw.v1 import flow_service_pb2, vault_recovery_pb2, vault_service_pb2

            flow = flow_service_pb2.DESCRIPTOR.services_by_name["FlowService"]
            vault = vault_service_pb2.DESCRIPTOR.services_by_name["VaultService"]
            out.append((flow, FlowServicer(self.vault, self._window_s)))
            flows = FlowRunner(self.vault)
            out.append((vault, VaultServicer(self.vault, flows, self._org_id, self._window_s)))
            recovery = vault_recovery_pb2.DESCRIPTOR.services_by_name["VaultRecoveryService"]
            recover = VaultRecoveryServicer(self.vault, self._org_id, self._window_s)
            out.append((recovery, recover))
        return out

    async def stop(self) -> None:
        """Stop the roles and close their stores (idempotent)."""
        if self.notary is not None:
            await self.notary.stop()
        if self.vault is not None:
            await self.vault.stop()
