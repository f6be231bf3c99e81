"""The metrics of one node process: one prometheus registry per node, never the global one.

Why a registry per node: the simulator and in-process tests run many nodes in one process; the
default registry of `prometheus_client` is a module singleton, so two nodes would share (and
refuse to re-register) the same series. `NodeMetrics` lives on the node's `NodeContext`, so every
role observes into its own node's registry and nothing else.

Two kinds of series (the list, with labels, is docs/operations.md; `tests/unit/test_metrics.py`
pins the names):

* events, counted where they happen, in runtime adapters and the request boundary (never in
  `dltmw/core`, which has no I/O): RPCs by service, method and status code with their latency;
  committed blocks with their commit latency, validation codes and MVCC aborts per channel;
  notary decisions and conflicts;
* state, read when scraped (`StateCollector`): ledger heights, driver inbox depths and overload
  refusals, PBFT-lite views, private payloads pending delivery. Reading at scrape time costs
  nothing on the hot path and can never drift from the node's state: the gauges ARE that state.
  Sources register a callback (`add_source`); each returns metric families.

Label values are bounded by the node's configuration (channels, drivers, services, methods,
status codes, validation codes), never by request content, so no series set grows without bound.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dltmw.v1 import errors_pb2, transaction_pb2

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds: RPCs and block commits range from sub-millisecond queries to multi-second waits.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
MVCC_CONFLICT = transaction_pb2.TX_VALIDATION_CODE_MVCC_READ_CONFLICT
Source = Callable[[], Iterable[Metric]]


def validation_code_name(code: int) -> str:
    """`VALID`, `MVCC_READ_CONFLICT`, ... (the enum name without its prefix)."""
    try:
        name = transaction_pb2.TxValidationCode.Name(code)  # type: ignore[arg-type]
    except ValueError:
        return f"CODE_{code}"
    return name.removeprefix("TX_VALIDATION_CODE_")


def reason_name(reason: int) -> str:
    """`INPUT_CONSUMED`, ... (the ErrorReason name without its prefix); `NONE` for 0."""
    if reason == 0:
        return "NONE"
    try:
        return errors_pb2.ErrorReason.Name(reason).removeprefix("ERROR_REASON_")  # type: ignore[arg-type]
    except ValueError:
        return f"REASON_{reason}"


class Decided(Protocol):
    """What the metrics read of a notary's decision (`core/handlers/notary.Decision`)."""

    @property
    def signature(self) -> bytes:
        """The notary's signature; empty when refused."""
        ...

    @property
    def reason(self) -> int:
        """The refusal's ErrorReason; 0 when signed."""
        ...

    @property
    def conflicts(self) -> Sequence[object]:
        """The states found consumed."""
        ...


class WatchedDriver(Protocol):
    """What the metrics read of a driver (`runtime/driver.py`)."""

    @property
    def name(self) -> str:
        """The driver's name (unique within a node: role and channel)."""
        ...

    @property
    def depth(self) -> int:
        """Inputs queued now."""
        ...

    @property
    def overloaded(self) -> int:
        """Inputs refused because the inbox was full, since start."""
        ...


class NodeMetrics:
    """Every series of one node (see the module docstring)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.rpcs = Counter(
            "dltmw_rpc_requests",
            "RPCs served, by service, method and final status code",
            ["service", "method", "code"],
            registry=reg,
        )
        self.rpc_seconds = Histogram(
            "dltmw_rpc_duration_seconds",
            "Time from a request's arrival at the boundary to its final status",
            ["service", "method"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.blocks = Counter(
            "dltmw_blocks_committed", "Blocks committed by this peer", ["channel"], registry=reg
        )
        self.commit_seconds = Histogram(
            "dltmw_block_commit_duration_seconds",
            "Time from a block's delivery to the committer until it is durable (validation, "
            "MVCC, the sqlite transaction)",
            ["channel"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.validation = Counter(
            "dltmw_tx_validation",
            "Transactions committed by this peer, by validation code",
            ["channel", "code"],
            registry=reg,
        )
        self.mvcc_aborts = Counter(
            "dltmw_mvcc_aborts",
            "Transactions invalidated by an MVCC read conflict",
            ["channel"],
            registry=reg,
        )
        self.notary_decisions = Counter(
            "dltmw_notary_decisions",
            "Notarisation requests decided: signed, or refused with a reason",
            ["notary", "outcome"],
            registry=reg,
        )
        self.notary_conflicts = Counter(
            "dltmw_notary_conflicts",
            "Input states found already consumed (double-spend attempts), one per state",
            ["notary"],
            registry=reg,
        )
        self.notary_attested = Counter(
            "dltmw_notary_attested",
            "Requests a notary-cluster member was asked to attest (another member orders them):"
            " answered from its own decision of that member's wrap, or ordered here after the"
            " wait (the ordering member was slow, faulty or down)",
            ["notary", "outcome"],
            registry=reg,
        )
        self.ordering_widened = Counter(
            "dltmw_gateway_ordering_widened",
            "Envelopes a gateway also sent to further orderers because the first did not answer"
            " within the ordering deadline (limits.ordering_deadline_s), one per orderer added",
            ["channel"],
            registry=reg,
        )
        self.censorship_switches = Counter(
            "dltmw_deliver_censorship_switches",
            "Times a peer left its Deliver source because another orderer showed a valid header"
            " of a block the source had not delivered within limits.censorship_timeout_s",
            ["channel"],
            registry=reg,
        )
        self.forged_headers = Counter(
            "dltmw_deliver_forged_headers",
            "Block headers an orderer showed a peer's censorship monitor whose orderer"
            " signatures did not suffice (that orderer's headers are ignored for the stream)",
            ["channel", "orderer"],
            registry=reg,
        )
        self._drivers: dict[str, WatchedDriver] = {}
        self._sources: list[Source] = [self._driver_metrics]
        reg.register(_Sources(self._sources))

    # -- events --------------------------------------------------------------------------------

    def observe_rpc(self, path: str, code: str, seconds: float) -> None:
        """One RPC ended (`path` is "/package.Service/Method")."""
        service, _, method = path.lstrip("/").partition("/")
        self.rpcs.labels(service, method, code).inc()
        self.rpc_seconds.labels(service, method).observe(seconds)

    def observe_widened(self, channel: str, orderers: int) -> None:
        """A submission on `channel` was also sent to `orderers` more orderers."""
        self.ordering_widened.labels(channel).inc(orderers)

    def observe_censorship_switch(self, channel: str) -> None:
        """A peer left a Deliver source that withheld a block another orderer showed."""
        self.censorship_switches.labels(channel).inc()

    def observe_forged_header(self, channel: str, orderer: str) -> None:
        """`orderer` (a configured one: the label is bounded) showed a forged header."""
        self.forged_headers.labels(channel, orderer).inc()

    def observe_block(self, channel: str, codes: Sequence[int], seconds: float) -> None:
        """A block with these validation codes is durable on this peer."""
        self.blocks.labels(channel).inc()
        self.commit_seconds.labels(channel).observe(seconds)
        counts: dict[int, int] = {}
        for code in codes:
            counts[code] = counts.get(code, 0) + 1
        for code, n in counts.items():
            self.validation.labels(channel, validation_code_name(code)).inc(n)
        if MVCC_CONFLICT in counts:
            self.mvcc_aborts.labels(channel).inc(counts[MVCC_CONFLICT])

    def observe_decision(
        self, notary: str, signed: bool, reason: int, conflicts: int, count: int = 1
    ) -> None:
        """A notary decided `count` requests alike, with `conflicts` conflicting states in all
        (`notary`: "single" or the cluster's name)."""
        outcome = "SIGNED" if signed else reason_name(reason)
        self.notary_decisions.labels(notary, outcome).inc(count)
        if conflicts:
            self.notary_conflicts.labels(notary).inc(conflicts)

    def observe_attested(self, notary: str, answered: int, ordered_here: int) -> None:
        """A cluster member attested: `answered` asks from its decisions, `ordered_here` after
        the wait (outcomes `answered`, `ordered_here`)."""
        if answered:
            self.notary_attested.labels(notary, "answered").inc(answered)
        if ordered_here:
            self.notary_attested.labels(notary, "ordered_here").inc(ordered_here)

    def observe_decisions(self, notary: str, decisions: Iterable[Decided]) -> None:
        """A notary decided these requests: counted per outcome, one counter update each (a
        labelled counter's update, ~2 µs, was a notable share of a notary's reply path)."""
        tally: dict[tuple[bool, int], list[int]] = {}
        for d in decisions:
            seen = tally.get(key := (bool(d.signature), d.reason))
            if seen is None:
                tally[key] = [1, len(d.conflicts)]
            else:
                seen[0] += 1
                seen[1] += len(d.conflicts)
        for (signed, reason), (count, conflicts) in tally.items():
            self.observe_decision(notary, signed, reason, conflicts, count)

    # -- state, read when scraped --------------------------------------------------------------

    def watch_driver(self, driver: WatchedDriver) -> None:
        """Report `driver`'s inbox depth and refusals (a restarted role replaces its entry)."""
        self._drivers[driver.name] = driver

    def add_source(self, source: Source) -> None:
        """Call `source` at every scrape for more metric families."""
        self._sources.append(source)

    def _driver_metrics(self) -> Iterable[Metric]:
        depth = GaugeMetricFamily(
            "dltmw_driver_inbox_depth", "Inputs queued for a driver's core", labels=["driver"]
        )
        refused = CounterMetricFamily(
            "dltmw_driver_overload_refusals",
            "Inputs a driver refused because its inbox was full (OVERLOADED to the caller)",
            labels=["driver"],
        )
        for name, driver in sorted(self._drivers.items()):
            depth.add_metric([name], driver.depth)
            refused.add_metric([name], driver.overloaded)
        return (depth, refused)

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


class _Sources(Collector):
    """The state sources of one registry, called at scrape time."""

    def __init__(self, sources: list[Source]) -> None:
        self._sources = sources

    def collect(self) -> Iterable[Metric]:
        for source in self._sources:
            yield from source()


class Stopwatch:
    """Elapsed seconds on the monotonic clock (the one clock metrics use)."""

    def __init__(self) -> None:
        self._start = time.perf_counter()

    @property
    def seconds(self) -> float:
        """Seconds since construction."""
        return time.perf_counter() - self._start
