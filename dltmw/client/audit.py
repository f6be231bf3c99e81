"""`dltmw audit`: ask every node of every channel for its audit view and compare them.

Per channel (the pure decisions are in `core/audit.py`):
1. every node that serves it (NodeStatus) reports its height, the state hash stored with its last
   block and the one recomputed from its table now, and its private-transaction records (paged);
2. the common height is the lowest node's (nodes under load are at different heights; only what
   all hold is compared), the state chain starts where every peer has a stored state hash;
3. sampled heights narrow (lo, hi] to the first height where block hashes or state chains differ,
   one round of Audit calls per step (a few rounds even for long ledgers).

Each node is asked as an admin: by default the admin of the node's own organisation
(`clients/admin.<org>` of the network directory, so one operator with the whole directory audits
everything); `--client` names one admin for every node instead (an organisation auditing the
channels it is a member of, across hosts). A node that cannot be reached is reported, not
guessed about.
"""

from __future__ import annotations

import asyncio
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from dltmw.aio.clock import utc_now
from dltmw.client.files import ClientFiles
from dltmw.core.audit import (
    Finding,
    first_disagreement,
    point_findings,
    private_findings,
    sample,
    self_checks,
)
from dltmw.rpc.tls import link_tls, secure_channel
from dltmw.v1 import admin_service_pb2, admin_service_pb2_grpc

A = admin_service_pb2
CALL_TIMEOUT_S = 60.0
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
PRIVATE_PAGES_MAX = 10_000  # bounded: 2,048 records a page


@dataclass
class ChannelReport:
    """The outcome of auditing one channel."""

    channel_id: str
    views: list[A.AuditResponse] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    unreachable: dict[str, str] = field(default_factory=dict)  # node -> why
    common_height: int = 0
    purged: list[str] = field(default_factory=list)  # payload hashes a node reports PURGED


class _Node:
    """One node, as its auditing admin sees it."""

    def __init__(self, node_id: str, files: ClientFiles, channel: grpc.aio.Channel) -> None:
        self.node_id = node_id
        self.files = files
        self.stub = admin_service_pb2_grpc.AdminServiceStub(channel)
        self.channel = channel

    def _signed(self, query: A.AuditQuery | A.NodeStatusQuery) -> tuple[bytes, bytes]:
        query.requester = self.files.signer.identity_bytes
        query.timestamp.FromDatetime(utc_now())
        data = query.SerializeToString()
        return data, self.files.signer.sign(data)

    async def channels(self) -> list[str]:
        data, sig = self._signed(A.NodeStatusQuery())
        reply = await self.stub.NodeStatus(
            A.NodeStatusRequest(query=data, signature=sig), timeout=CALL_TIMEOUT_S
        )
        return [c.channel_id for c in reply.channels]

    async def audit(self, query: A.AuditQuery) -> A.AuditResponse:
        data, sig = self._signed(query)
        return await self.stub.Audit(
            A.AuditRequest(query=data, signature=sig), timeout=CALL_TIMEOUT_S
        )


def node_orgs(network_dir: Path) -> dict[str, str]:
    """Node id -> its organisation, from the network directory's topology."""
    with (network_dir / "topology.toml").open("rb") as f:
        return {n["id"]: n["org"] for n in tomllib.load(f)["nodes"]}


async def _connect(network_dir: Path, client_id: str | None) -> tuple[list[_Node], dict[str, str]]:
    nodes: list[_Node] = []
    unreachable: dict[str, str] = {}
    loaded: dict[str, ClientFiles] = {}
    for node_id, org in sorted(node_orgs(network_dir).items()):
        who = client_id or f"admin.{org.lower()}"
        if who not in loaded:
            loaded[who] = ClientFiles.load(network_dir, who)
        files = loaded[who]
        address = files.addresses.lookup(node_id)
        if address is None:
            unreachable[node_id] = "no published address (not running?)"
            continue
        name, tls = link_tls(files.tls, files.addresses, node_id)
        channel = secure_channel(address, name, tls, MAX_MESSAGE_BYTES)
        nodes.append(_Node(node_id, files, channel))
    return nodes, unreachable


async def audit_network(
    network_dir: Path, channel_id: str | None = None, client_id: str | None = None
) -> list[ChannelReport]:
    """Audit every channel (or one) of a network directory; see the module docstring."""
    nodes, unreachable = await _connect(network_dir, client_id)
    try:
        served: dict[str, list[_Node]] = {}
        answers = await asyncio.gather(*(n.channels() for n in nodes), return_exceptions=True)
        for node, got in zip(nodes, answers, strict=True):
            if isinstance(got, BaseException):
                unreachable[node.node_id] = _why(got)
                continue
            for cid in got:
                if channel_id is None or cid == channel_id:
                    served.setdefault(cid, []).append(node)
        reports = []
        for cid in sorted(served) if channel_id is None else [channel_id]:
            report = await _audit_channel(cid, served.get(cid, []))
            report.unreachable.update(unreachable)
            reports.append(report)
        return reports
    finally:
        for node in nodes:
            await node.channel.close(None)


def _why(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"


async def _ask(
    report: ChannelReport, nodes: list[_Node], query: A.AuditQuery
) -> list[A.AuditResponse]:
    """One Audit round; nodes that fail are moved to `report.unreachable`."""
    got = await asyncio.gather(*(n.audit(query) for n in nodes), return_exceptions=True)
    views: list[A.AuditResponse] = []
    for node, view in zip(nodes, got, strict=True):
        if isinstance(view, BaseException):
            report.unreachable[node.node_id] = _why(view)
        else:
            views.append(view)
    return views


async def _audit_channel(cid: str, nodes: list[_Node]) -> ChannelReport:
    report = ChannelReport(cid)
    views = await _ask(report, nodes, A.AuditQuery(channel_id=cid, recompute=True))
    nodes = [n for n in nodes if n.node_id not in report.unreachable]
    if not views:
        return report
    report.views = views
    report.findings = self_checks(views)
    records = await _private_records(report, nodes, views)
    report.findings += private_findings(cid, records)
    report.purged = sorted(
        {t.payload_hash.hex() for ts in records.values() for t in ts if t.purged}
    )
    report.common_height = min(v.height for v in views)
    peers = [v for v in views if v.has_state]
    chain_from = max((v.state_hashes_from for v in peers), default=0)
    lo, hi = -1, report.common_height - 1
    while hi > lo:
        numbers = sample(lo, hi)
        query = A.AuditQuery(channel_id=cid, block_numbers=numbers, state_chain_from=chain_from)
        round_views = await _ask(report, nodes, query)
        bad = first_disagreement(numbers, round_views)
        if bad is None:
            break  # chained values: agreement at hi means agreement below it
        before = [n for n in numbers if n < bad]
        lo, hi = (before[-1] if before else lo), bad
        if hi - lo == 1:
            report.findings += point_findings(hi, round_views)
            break
    report.findings.sort()
    return report


async def _private_records(
    report: ChannelReport, nodes: list[_Node], first: list[A.AuditResponse]
) -> dict[str, list[A.PrivateTxAudit]]:
    """Every private-tx record of every node with a privacy manager (following the pages)."""
    records: dict[str, list[A.PrivateTxAudit]] = {}
    by_id = {n.node_id: n for n in nodes}
    for view in first:
        if not view.has_private or view.node_id not in by_id:
            continue
        txs = list(view.private_txs)
        after = view.private_next
        for _ in range(PRIVATE_PAGES_MAX):
            if not after:
                break
            query = A.AuditQuery(channel_id=report.channel_id, private_after=after)
            page = await by_id[view.node_id].audit(query)
            txs.extend(page.private_txs)
            after = page.private_next
        records[view.node_id] = txs
    return records
