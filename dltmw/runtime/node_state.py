"""What a node's state says to its operators: gauges read at scrape time, and readiness.

Both read the node's roles as they are at that moment (`NodeMetrics.add_source`), so they cost
nothing between scrapes and cannot disagree with the node: the height gauge is the ledger's
height, the view gauge the replica's view.

Readiness (`/readyz`, docs/operations.md) — a node is ready when it serves current state:
its gRPC server is up and not stopping, no task failed, and every channel it is a peer of is
caught up: a Deliver stream to an orderer opened since the process started, and the peer has
committed every block that orderer was last heard to hold (Deliver's `dltmw-height` initial
metadata, then each block it sends). A peer restarted behind its orderer is therefore not ready
until it has committed the blocks it missed. If the orderer is unreachable the peer stays ready
with what it has (it cannot know of blocks nobody delivers); it was never ready if it has not
reached an orderer since its start. A PBFT-lite orderer replica is not ready while it is
known to be behind its cluster (`PbftOrdererCore.behind`: f+1 other replicas signed a block two
or more past its head, or it proved itself behind within the last few ticks); a solo orderer,
gateways and notaries are ready when serving.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric


class _Height(Protocol):
    @property
    def height(self) -> int:
        """Blocks held."""
        ...


class Ledgered(Protocol):
    """A role holding one channel's ledger."""

    @property
    def ledger(self) -> _Height:
        """Its ledger."""
        ...


class Following(Protocol):
    """A peer channel, as readiness sees it (`roles/peer/channel.py`)."""

    @property
    def orderer_height(self) -> int | None:
        """The orderer's height as last heard; None before any Deliver stream opened."""
        ...

    @property
    def caught_up(self) -> bool:
        """Committed everything the orderer was last heard to hold."""
        ...


class _Progress(Protocol):
    @property
    def next_exec(self) -> int:
        """The next sequence to execute."""
        ...

    @property
    def stable_seq(self) -> int:
        """The last sequence covered by a stable checkpoint."""
        ...

    @property
    def counters(self) -> Mapping[str, int]:
        """Inputs the replica dropped or refused, by reason (`State.drop`)."""
        ...


class Replicated(Protocol):
    """A PBFT-lite replica's holder (orderer channel or notary cluster)."""

    @property
    def current_view(self) -> int:
        """The replica's view."""
        ...

    @property
    def replica(self) -> _Progress | None:
        """The replica itself (None before start)."""
        ...


class CatchingUp(Protocol):
    """A PBFT-lite orderer channel, as readiness sees it (`roles/orderer/pbft.py`)."""

    def catching_up(self) -> int | None:
        """The height the cluster is known to hold while this replica is behind, else None."""
        ...


class Pending(Protocol):
    """A private channel of the privacy manager."""

    @property
    def pending(self) -> int:
        """Payloads not yet delivered to every recipient."""
        ...

    @property
    def given_up(self) -> Mapping[str, int]:
        """Deliveries given up since the start, by reason (expired, recipient_removed)."""
        ...


class NodeGauges:
    """The state source of a node's metrics. The maps are the node's own (read, never copied),
    so channels joined later appear at the next scrape."""

    def __init__(
        self,
        peer_heights: Mapping[str, Ledgered],
        orderer_heights: Mapping[str, Ledgered],
        followers: Mapping[str, Following],
        replicas: Sequence[tuple[str, Mapping[str, Replicated]]],
        private: Mapping[str, Pending],
    ) -> None:
        self._peer_heights = peer_heights
        self._orderer_heights = orderer_heights
        self._followers = followers
        self._replicas = replicas
        self._private = private
        self._first_view: dict[str, int] = {}  # view of each replica when first seen here

    def _each_replica(self) -> list[tuple[str, Replicated]]:
        """(name, replica): "orderer-<channel>" and "notary-<cluster>" """
        return sorted(
            ((f"{kind}-{key}", r) for kind, found in self._replicas for key, r in found.items()),
            key=lambda pair: pair[0],
        )

    def baseline(self) -> None:
        """Remember each replica's view now (the node has started): view changes count from
        here."""
        for name, replica in self._each_replica():
            self._first_view.setdefault(name, replica.current_view)

    def collect(self) -> Iterable[Metric]:
        """Every gauge, as the node stands now."""
        height = GaugeMetricFamily(
            "dltmw_ledger_height", "Blocks in a channel's ledger here", labels=["channel", "role"]
        )
        for role, holders in (("peer", self._peer_heights), ("orderer", self._orderer_heights)):
            for cid, ledger in sorted(holders.items()):
                height.add_metric([cid, role], ledger.ledger.height)
        known = GaugeMetricFamily(
            "dltmw_orderer_height_known",
            "The orderer's height as this peer last heard it (readiness compares with it)",
            labels=["channel"],
        )
        caught = GaugeMetricFamily(
            "dltmw_peer_caught_up",
            "1 when this peer holds every block heard of",
            labels=["channel"],
        )
        for cid, peer in sorted(self._followers.items()):
            if peer.orderer_height is not None:
                known.add_metric([cid], peer.orderer_height)
            caught.add_metric([cid], 1 if peer.caught_up else 0)
        view = GaugeMetricFamily(
            "dltmw_pbft_view", "A PBFT-lite replica's view", labels=["replica"]
        )
        changes = CounterMetricFamily(
            "dltmw_pbft_view_changes",
            "Views a PBFT-lite replica moved up since this process started",
            labels=["replica"],
        )
        lag = GaugeMetricFamily(
            "dltmw_pbft_checkpoint_lag",
            "Batches a PBFT-lite replica executed past its last stable checkpoint",
            labels=["replica"],
        )
        # The core's drop counters (bad signatures, old views, expired batches, ...): the reasons
        # are the core's fixed strings, so the series are bounded. They count from the replica's
        # making: a restart or a new replica group starts them again (a counter reset).
        dropped = CounterMetricFamily(
            "dltmw_pbft_dropped",
            "Messages and requests a PBFT-lite replica dropped or refused, by reason",
            labels=["replica", "reason"],
        )
        for name, holder in self._each_replica():
            now = holder.current_view
            first = self._first_view.setdefault(name, now)
            view.add_metric([name], now)
            changes.add_metric([name], max(0, now - first))
            progress = holder.replica
            if progress is not None:
                lag.add_metric([name], max(0, progress.next_exec - 1 - progress.stable_seq))
                for reason, count in sorted(progress.counters.items()):
                    dropped.add_metric([name, reason], count)
        pending = GaugeMetricFamily(
            "dltmw_private_payloads_pending",
            "Private payloads sent from here not yet acknowledged by every recipient",
            labels=["channel"],
        )
        given_up = CounterMetricFamily(
            "dltmw_private_deliveries_given_up",
            "Queued private deliveries this node stopped pushing (docs/privacy.md)",
            labels=["channel", "reason"],
        )
        for cid, channel in sorted(self._private.items()):
            pending.add_metric([cid], channel.pending)
            for reason, count in sorted(channel.given_up.items()):
                given_up.add_metric([cid, reason], count)
        return (height, known, caught, view, changes, lag, dropped, pending, given_up)


def not_ready_reasons(
    serving: bool,
    failed_task: str | None,
    followers: Mapping[str, Following],
    replicas: Mapping[str, CatchingUp] | None = None,
) -> list[str]:
    """Why the node is not ready (module docstring); empty when it is."""
    reasons = []
    if failed_task:
        reasons.append(f"task {failed_task} failed")
    if not serving:
        reasons.append("not serving (starting or stopping)")
    for cid, peer in sorted(followers.items()):
        if peer.orderer_height is None:
            reasons.append(f"channel {cid}: no Deliver stream from an orderer yet")
        elif not peer.caught_up:
            reasons.append(f"channel {cid}: catching up to block {peer.orderer_height - 1}")
    for cid, replica in sorted((replicas or {}).items()):
        known = replica.catching_up()
        if known is not None:
            reasons.append(f"channel {cid}: PBFT-lite replica catching up to block {known - 1}")
    return reasons
