"""Which requests a PBFT-lite orderer replica lets into its log: the ordering rule, cached.

PBFT-lite orders requests as opaque bytes; the core asks an injected predicate
(`Replica(request_ok=...)`) before it keeps a client or forwarded request and before it
prepares a pre-prepare, and it refuses a batch holding one inadmissible request. This module
builds that predicate for an ordering channel from Broadcast's own admission
(`core/txcheck.check_orderable`: parse, canonical encoding, header fields, tx_id, channel,
timestamp range, orderable type, member creator with a valid signature) plus the size bound,
so a faulty orderer cannot get junk ordered by forwarding it or by proposing it as primary.

The clock, and why it is left out. The predicate must give the same verdict on every honest
replica, now and later: a backup that refused a pre-prepare another backup prepared would
trigger needless view changes, and a prepared or committed certificate carried in a view
change or a state transfer is re-checked with it, so a verdict that changed with time could
stall recovery. Hence the creator's certificate is judged at the header timestamp (as peers do
at commit) and the time window is NOT checked here. The window is enforced where a client hands
the envelope in (Broadcast on the orderer it calls). A faulty orderer cannot create member-signed
envelopes; the most it can do past this rule is delay or replay envelopes it saw — a replay has
the same bytes, so PBFT-lite dedups it (and peers mark DUPLICATE_TXID), and a delayed one is what
a slow client could also send.

Config updates, and why a verdict never turns from yes to no. The rule judges a request against
every config this replica has applied (`learn`, called by the core the moment a config block is
built or fetched): admissible if some config admits it. So a member added by an update can
transact from then on, while a verdict once given stays given — a prepared or committed
certificate carried in a view change or a state transfer holds requests admitted earlier, and a
rule that later refused them (a revoked creator, a removed org) could stall recovery. A request
of a revoked or removed creator that is ordered after the update is therefore not refused here:
it was refused at Broadcast (which checks the current config and the clock), and if it was in
flight, every peer marks it invalid at commit against the config in force at its block
(CERTIFICATE_REVOKED, NOT_A_MEMBER) — the same verdict everywhere. A learned config clears only
the cached refusals. A restarted replica knows only the config it restarted in (older requests
it now refuses cost it a catch-up by blocks, `pbft_catchup`, not safety: 2f+1 signatures).

Verdicts are cached by request id (SHA-256 of the bytes; the verdict is a function of the bytes
alone), so the checks run once per request per replica however often a request comes back in
forwards, pre-prepares, view changes and retransmissions; the replica servicer `warm`s the cache
on a worker thread before it hands forwarded requests and pre-prepares to the core, so the
signature checks stay off the event loop. With dissemination there is no cache
(`for_channel`), and the rule does not run on what Broadcast hands in: Broadcast's own check
(the same checks with the clock, against the config in force, on the verify pool) admitted it
at the replica a client reached (`ClientRequest.admitted`; judging it again cost that replica
~0.15 ms of its event loop per envelope, benchmarks/RESULTS.md, lane `bkp`); other replicas
order certificates, never judge envelopes. (The one difference: Broadcast judges the creator's
certificate now, this rule at the header timestamp; an envelope valid now but not then is
ordered and every peer marks it invalid at commit, as any inadmissible envelope a faulty
replica batches.) A verdict cache there held ~4 MB of that replica's memory and was never
hit (0 hits in 27,303 judgements, benchmarks/RESULTS.md, lane `mem2`). Refusals are counted
by reason and logged at most once per `LOG_EVERY_S` (a faulty orderer can send many; the log
must not be its amplifier), without tracebacks: bad input is not a fault of this node.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence

from dltmw.aio.throttle import LogThrottle
from dltmw.core.channel import ChannelView
from dltmw.core.errors import ClientError
from dltmw.core.pbft import request_id
from dltmw.core.txcheck import check_orderable

logger = logging.getLogger(__name__)

CACHE_MAX = 16_384
KNOWN_MAX = 64  # configs judged against (a channel's updates are rare; the oldest go first)
LOG_EVERY_S = 10.0


class RequestAdmission:
    """The ordering rule of one channel as a `request_ok` predicate (see the module docstring)."""

    def __init__(
        self,
        view: ChannelView,
        size_max: int,
        clock: Callable[[], float] = time.monotonic,
        cache_max: int = CACHE_MAX,
    ) -> None:
        self._known = [view]  # oldest first
        self._size_max = size_max
        self._cache_max = cache_max
        self._verdicts: OrderedDict[bytes, str] = OrderedDict()  # request id -> "" or reason
        self._lock = threading.Lock()  # the verdict cache may be warmed from a thread pool
        self.refused: Counter[str] = Counter()
        self._unlogged: Counter[str] = Counter()
        self._throttle = LogThrottle(LOG_EVERY_S, clock=clock)

    @classmethod
    def for_channel(cls, view: ChannelView, size_max: int, disseminates: bool) -> RequestAdmission:
        """The rule of a PBFT-lite replica of channel `view`: verdicts cached unless the
        channel disseminates (see the module docstring)."""
        return cls(view, size_max, cache_max=0 if disseminates else CACHE_MAX)

    def reason(self, request: bytes) -> str:
        """Why `request` may not be ordered ("" when it may)."""
        if self._cache_max <= 0:
            return self._judge(request)
        rid = request_id(request)
        with self._lock:
            cached = self._verdicts.get(rid)
        if cached is not None:
            return cached
        verdict = self._judge(request)
        with self._lock:
            self._verdicts[rid] = verdict
            if len(self._verdicts) > self._cache_max:
                self._verdicts.popitem(last=False)
        return verdict

    def learn(self, view: ChannelView) -> None:
        """A config update applied: admit what `view` admits too (see the module docstring)."""
        with self._lock:
            self._known = [*self._known, view][-KNOWN_MAX:]
            refused = [rid for rid, verdict in self._verdicts.items() if verdict]
            for rid in refused:
                del self._verdicts[rid]

    def warm(self, requests: Sequence[bytes]) -> None:
        """Judge `requests` ahead of the core (on a worker thread: `cryptography` releases the
        GIL, so signature checks run off the event loop and in parallel)."""
        for request in requests:
            self.reason(request)

    def __call__(self, request: bytes) -> bool:
        """The `request_ok` of the replica core: admissible or not (refusals are counted)."""
        verdict = self.reason(request)
        if verdict:
            self._count(verdict)
        return not verdict

    def _judge(self, request: bytes) -> str:
        if len(request) > self._size_max:
            return "TOO_LARGE"
        reason = ""
        for view in reversed(self._known):
            try:
                check_orderable(request, {view.channel_id: view})
            except ClientError as exc:
                reason = reason or exc.reason_name  # the newest config's
                continue
            return ""
        return reason

    def _count(self, reason: str) -> None:
        self.refused[reason] += 1
        self._unlogged[reason] += 1
        if self._throttle.admit("refused") is None:
            return
        summary = ", ".join(f"{r} x{n}" for r, n in sorted(self._unlogged.items()))
        self._unlogged.clear()
        logger.warning(
            "refused inadmissible requests to order on %s (forwarded or proposed by another "
            "orderer, or submitted): %s",
            self._known[0].channel_id,
            summary,
        )
