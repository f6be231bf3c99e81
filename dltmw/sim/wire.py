"""The simulated wire: gRPC calls between in-process nodes, with seeded delays and faults.

A call is an `Exchange` between a client endpoint and the server of the node it names (its
current incarnation). Each direction is a `Pipe` of serialized messages, delivered in order
after a network delay drawn from the run's seed — what one HTTP/2 stream over TCP does — and
ended by a status. Faults, all drawn from the same seed (`Faults`, changed by the scenario over
time):

* **delay**: every message (and every status) arrives `delay_min_s`..`delay_max_s` later;
* **a broken connection** (`break_rate`, or `break_rates` per method, per stream message): the
  call ends at once on both sides with UNAVAILABLE, as when a TCP connection is reset;
* **lost unary messages** (`lose_rate`): the request never reaches the server, or the server's
  answer is lost after it ran (its effects happened, the caller hears UNAVAILABLE) — the window
  that retries and stored answers exist for;
* **duplicated unary requests** (`duplicate_rate`): the server runs the request twice; the
  caller sees the first answer; **replayed stream requests** (`replay_rates`, per method): one
  request message of a stream delivered once more, on a call of its own whose answers go
  nowhere (an intermediary that replays);
* **message faults** of one stream method (`stream_faults`, e.g. Deliver): single messages
  dropped, duplicated or reordered inside a stream that stays up — what TCP never does, but a
  faulty intermediary (or orderer) can, and what a protocol that numbers its messages must
  survive. Only for methods whose protocol claims that; the batched streams pair answers with
  requests by order and rightly rely on TCP. When the faults are healed (`heal_all`) such
  streams break, as the intermediary goes away;
* **partitions** between two nodes: calls between them fail UNAVAILABLE; open ones break;
* **crashes** (`kill`): every call of a dead incarnation breaks; calls to it fail UNAVAILABLE.

`Status`, `Kind` and `HALF_CLOSE` are the in-process transport's (`rpc/inproc.py`), whose
pipes are bounded and immediate where these are delayed and faulty.

Every fault that happened is counted in `counts`, so a test can prove the fault was exercised.
A servicer that raises something other than an abort is a bug in node code: it is answered
UNKNOWN (as grpc does) and recorded in `unexpected`, which the scenarios report as a violation.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc

from dltmw.rpc.inproc import HALF_CLOSE, Kind, Status, unavailable
from dltmw.sim.vloop import Owner


@dataclass
class MessageFaults:
    """Per-message faults of one stream method's responses (see the module docstring)."""

    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    callers: frozenset[str] | None = None  # only on calls these nodes made (None: every call)


@dataclass
class Faults:
    """The network's current faults (the scenario changes them over time)."""

    delay_min_s: float = 0.0005
    delay_max_s: float = 0.003
    break_rate: float = 0.0
    break_rates: dict[str, float] = field(default_factory=dict)  # per method, over break_rate
    lose_rate: float = 0.0
    duplicate_rate: float = 0.0
    unary_methods: frozenset[str] | None = None  # lose/duplicate only these (None: every one)
    replay_rates: dict[str, float] = field(default_factory=dict)  # per stream method
    stream_faults: dict[str, MessageFaults] = field(default_factory=dict)
    blocked: set[frozenset[str]] = field(default_factory=set)  # partitioned node pairs


@dataclass(frozen=True)
class Endpoint:
    """The calling side of a channel: who (name, TLS certificate), which incarnation, and the
    connection as the server sees it (`peer()`)."""

    name: str
    owner: Owner
    cert_pem: bytes
    connection: str


class Server(Protocol):
    """What the network needs of a node's server (`sim/grpc_server.SimServer`)."""

    node_id: str
    owner: Owner
    max_message_bytes: int

    def serve(self, exchange: Exchange) -> bool:
        """Start serving `exchange`; False if no handler is registered for its method."""
        ...


class Pipe:
    """One direction of one call: items delivered in order after a delay, until broken.

    In-order items wait in a FIFO and are handed over by `_flush` once due: two timers set for
    the same virtual instant may fire in either order (a heap is not stable), so order is kept
    here, not by the timers."""

    def __init__(self, net: SimNetwork, exchange: Exchange, responses: bool) -> None:
        self._net = net
        self._exchange = exchange
        self._responses = responses  # message faults apply to a method's responses only
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self._fifo: deque[tuple[float, Any]] = deque()
        self.broken = False

    def send(self, item: Any) -> None:
        """Put `item` (message bytes, HALF_CLOSE or a Status) on the wire."""
        if self.broken:
            return
        net, loop = self._net, asyncio.get_running_loop()
        at = loop.time() + net.delay()
        copies, ordered = 1, True
        if isinstance(item, bytes):
            streaming = self._exchange.kind is not Kind.UNARY_UNARY
            rate = net.faults.break_rates.get(self._exchange.path, net.faults.break_rate)
            if streaming and net.rng.random() < rate:
                net.count("stream-broken")
                net.count(f"{self._exchange.path.rsplit('/', 1)[-1]}.broken")
                self._exchange.break_(unavailable("connection reset (simulated)"))
                return
            faults = net.faults.stream_faults.get(self._exchange.path) if self._responses else None
            if faults is not None and (
                faults.callers is None or self._exchange.client.name in faults.callers
            ):
                copies, ordered = self._message_faults(net, faults)
            replay = net.faults.replay_rates.get(self._exchange.path, 0.0)
            if not self._responses and replay and net.rng.random() < replay:
                net.replay(self._exchange, item)
        for _ in range(copies):
            if ordered:
                if self._fifo:
                    at = max(at, self._fifo[-1][0])
                self._fifo.append((at, item))
                loop.call_at(at, self._flush)
            else:  # overtakes or falls behind the in-order items
                loop.call_at(at, self._deliver, item)

    def _message_faults(self, net: SimNetwork, faults: MessageFaults) -> tuple[int, bool]:
        path = self._exchange.path.rsplit("/", 1)[-1]
        copies, ordered = 1, True
        if net.rng.random() < faults.drop:
            net.count(f"{path}.dropped")
            copies = 0
        elif net.rng.random() < faults.duplicate:
            net.count(f"{path}.duplicated")
            copies = 2
        elif net.rng.random() < faults.reorder:
            net.count(f"{path}.reordered")
            ordered = False
        self._exchange.tampered = self._exchange.tampered or (copies, ordered) != (1, True)
        return copies, ordered

    def _flush(self) -> None:
        now = asyncio.get_running_loop().time()
        while self._fifo and self._fifo[0][0] <= now:
            self._deliver(self._fifo.popleft()[1])

    def _deliver(self, item: Any) -> None:
        if not self.broken:
            if not self._responses and isinstance(item, bytes):
                self._net.arrived(self._exchange)
            self.queue.put_nowait(item)

    def fail_now(self, status: Status) -> None:
        """End this direction at once with `status` (nothing queued after it arrives)."""
        if not self.broken:
            self.broken = True
            self._fifo.clear()
            self.queue.put_nowait(status)


class Exchange:
    """One call: its two pipes, the server task serving it, and how it ended."""

    def __init__(
        self, net: SimNetwork, client: Endpoint, target: str, path: str, kind: Kind
    ) -> None:
        self.net = net
        self.serial = net.next_serial()  # creation order: a deterministic order of calls
        self.client = client
        self.target = target
        self.path = path
        self.kind = kind
        self.requests = Pipe(net, self, responses=False)
        self.responses = Pipe(net, self, responses=True)
        self.server: Server | None = None
        self.server_task: asyncio.Task[None] | None = None
        self.ended: Status | None = None  # set once, by finish or break_
        self.lose_response = False
        self.tampered = False  # a message of it was dropped, duplicated or reordered
        self.shadow: Exchange | None = None  # a duplicated unary request's second exchange
        self._on_end: list[Callable[[Exchange], None]] = []

    def on_end(self, callback: Callable[[Exchange], None]) -> None:
        """Call `callback(self)` once the exchange ended (at once if it has)."""
        if self.ended is not None:
            callback(self)
        else:
            self._on_end.append(callback)

    def send_request(self, item: Any) -> None:
        """Client side: a request message (bytes) or HALF_CLOSE."""
        self.requests.send(item)
        if self.shadow is not None:
            self.shadow.requests.send(item)

    def respond(self, raw: bytes) -> None:
        """Server side: one response message."""
        if self.ended is None:
            self.responses.send(raw)

    def finish(self, status: Status) -> None:
        """Server side: the handler ended with `status` (it reaches the client after the
        messages sent before it)."""
        if self.ended is not None:
            return
        if self.lose_response:
            self.net.count("unary.response-lost")
            self.break_(unavailable("connection reset before the answer arrived (simulated)"))
            return
        self._end(status)
        self.responses.send(status)

    def break_(self, status: Status) -> None:
        """End the call at once on both sides (connection lost, deadline, cancel, crash)."""
        if self.ended is not None:
            return
        self._end(status)
        self.responses.fail_now(status)
        self.requests.broken = True
        if self.server_task is not None and not self.server_task.done():
            self.server_task.cancel()
        if self.shadow is not None:
            self.shadow.break_(status)

    def _end(self, status: Status) -> None:
        self.ended = status
        callbacks, self._on_end = self._on_end, []
        for callback in callbacks:
            callback(self)


class SimNetwork:
    """Routes calls to the serving incarnation of each node, applying the current faults."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.faults = Faults()
        self.servers: dict[str, Server] = {}
        self.open_calls: set[Exchange] = set()
        self.counts: Counter[str] = Counter()
        self.unexpected: list[str] = []  # servicer exceptions (bugs): reported as violations
        # (orderer node, tx_id) of every envelope a Broadcast answer accepted, sent or not: an
        # accepted envelope must end up in the chain (`ledger_checks.check_ordered`).
        self.acknowledged: list[tuple[str, str]] = []
        self._serial = 0
        self._last_arrival: dict[str, int] = {}  # target -> highest call serial arrived

    def next_serial(self) -> int:
        """A number for the next call (creation order)."""
        self._serial += 1
        return self._serial

    def count(self, what: str) -> None:
        """Count one fault that happened (for EXERCISED marks)."""
        self.counts[what] += 1

    def arrived(self, exchange: Exchange) -> None:
        """A request reached its server: count it when it overtook a call opened earlier."""
        last = self._last_arrival.get(exchange.target, 0)
        if exchange.serial < last and exchange.kind is Kind.UNARY_UNARY:
            self.count("unary.overtaken")
        self._last_arrival[exchange.target] = max(last, exchange.serial)

    def delay(self) -> float:
        """One message's network delay."""
        return self.rng.uniform(self.faults.delay_min_s, self.faults.delay_max_s)

    def blocked(self, a: str, b: str) -> bool:
        """Is the pair partitioned?"""
        return frozenset((a, b)) in self.faults.blocked

    def open(self, client: Endpoint, target: str, path: str, kind: Kind) -> Exchange:
        """Start a call; its failure to connect, if any, arrives like any status."""
        exchange = Exchange(self, client, target, path, kind)
        self.open_calls.add(exchange)
        exchange.on_end(self.open_calls.discard)
        refused = self._refusal(client, target)
        if refused is not None:
            self._fail_later(exchange, refused)
            return exchange
        server = self.servers[target]
        exchange.server = server
        if kind is Kind.UNARY_UNARY and self._unary_faults(path):
            roll = self.rng.random()
            if roll < self.faults.lose_rate / 2:
                self.count("unary.request-lost")
                self._fail_later(exchange, unavailable("request lost (simulated)"))
                return exchange
            exchange.lose_response = roll < self.faults.lose_rate
            if self.rng.random() < self.faults.duplicate_rate:
                self.count("unary.duplicated")
                exchange.shadow = self._shadow(client, target, path, server)
        if not server.serve(exchange):
            self._fail_later(exchange, Status(grpc.StatusCode.UNIMPLEMENTED, "Method not found!"))
        return exchange

    def _refusal(self, client: Endpoint, target: str) -> Status | None:
        if not client.owner.alive:
            return unavailable("the calling node is down")
        server = self.servers.get(target)
        if server is None or not server.owner.alive:
            return unavailable(f"failed to connect to all addresses ({target} is down)")
        if self.blocked(client.name, target):
            self.count("partition-refused")
            return unavailable(f"failed to connect to all addresses ({target} partitioned)")
        return None

    def _unary_faults(self, path: str) -> bool:
        methods = self.faults.unary_methods
        return methods is None or path in methods

    def _shadow(self, client: Endpoint, target: str, path: str, server: Server) -> Exchange:
        shadow = Exchange(self, client, target, path, Kind.UNARY_UNARY)
        shadow.server = server
        self.open_calls.add(shadow)
        shadow.on_end(self.open_calls.discard)
        server.serve(shadow)
        return shadow

    def replay(self, original: Exchange, raw: bytes) -> None:
        """Deliver one request message of a stream once more, on a call of its own (what an
        intermediary that replays requests does); its answers go nowhere."""
        server = original.server
        if server is None or not server.owner.alive:
            return
        shadow = Exchange(self, original.client, original.target, original.path, original.kind)
        shadow.server = server
        self.open_calls.add(shadow)
        shadow.on_end(self.open_calls.discard)
        if server.serve(shadow):
            self.count(f"{original.path.rsplit('/', 1)[-1]}.replayed")
            shadow.requests.send(raw)
            shadow.requests.send(HALF_CLOSE)

    def _fail_later(self, exchange: Exchange, status: Status) -> None:
        asyncio.get_running_loop().call_later(self.delay(), exchange.break_, status)

    def register(self, server: Server) -> None:
        """`server` now answers for its node (its incarnation started serving)."""
        self.servers[server.node_id] = server

    def unregister(self, server: Server) -> None:
        """`server` stopped serving."""
        if self.servers.get(server.node_id) is server:
            del self.servers[server.node_id]

    def kill(self, owner: Owner) -> int:
        """A dead incarnation stops serving and every call it takes part in (as caller or as
        server) breaks; returns how many broke."""
        for node_id, server in list(self.servers.items()):
            if server.owner is owner:
                del self.servers[node_id]
        doomed = [
            e
            for e in self.open_calls
            if e.client.owner is owner or (e.server is not None and e.server.owner is owner)
        ]
        for exchange in sorted(doomed, key=_order):
            exchange.break_(unavailable("connection reset: the node went down"))
        return len(doomed)

    def partition(self, a: str, b: str) -> None:
        """Cut `a` from `b` (both directions); open calls between them break."""
        self.faults.blocked.add(frozenset((a, b)))
        doomed = [e for e in self.open_calls if {e.client.name, e.target} == {a, b}]
        for exchange in sorted(doomed, key=_order):
            self.count("partition-broken")
            exchange.break_(unavailable("connection lost: network partition"))

    def heal(self, a: str, b: str) -> None:
        """Mend the partition between `a` and `b`."""
        self.faults.blocked.discard(frozenset((a, b)))

    def heal_all(self) -> None:
        """Remove every fault. Streams whose messages were tampered with break, as the faulty
        intermediary that held them goes away: a stream that silently lost its last message
        would otherwise wait forever for a next one that tells the receiver of the gap."""
        delays = (self.faults.delay_min_s, self.faults.delay_max_s)
        self.faults = Faults(delay_min_s=delays[0], delay_max_s=delays[1])
        for exchange in sorted((e for e in self.open_calls if e.tampered), key=_order):
            exchange.break_(unavailable("connection reset: the faulty link went away"))


def _order(exchange: Exchange) -> int:
    """A deterministic order for breaking calls (a set's order is not)."""
    return exchange.serial
