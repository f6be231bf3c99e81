"""PBFT-lite backups apply Broadcast's admission rule to forwarded and proposed requests.

Core level (simulation keys, `Keys.request_ok` as the rule): a backup drops an inadmissible
forwarded request, refuses to prepare a pre-prepare whose batch holds one, and a primary that
insists is replaced by the request timer's view change, after which the valid requests are
decided and the junk never is. Runtime level (real keys): `RequestAdmission` is
`core/txcheck.check_orderable` plus the size bound, clock-free, cached, with a rate-limited log.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from ledger_parties import (
    CHANNEL,
    NOW,
    endorser_tx,
    header,
    kv_rwset,
    make_parties,
    seal,
)
from pbft_messages import KEYS, pre_prepare, signed

from dltmw.core.errors import ClientError
from dltmw.core.pbft import ClientRequest, Envelope, PbftConfig, Replica, request_id
from dltmw.core.txcheck import check_envelope, check_orderable
from dltmw.runtime.roles.orderer import pbft_admission
from dltmw.runtime.roles.orderer.byzantine import poison_envelopes
from dltmw.runtime.roles.orderer.pbft_admission import RequestAdmission
from dltmw.v1 import replica_pb2

CONFIG = PbftConfig(n=4, checkpoint_interval=2, batch_size_max=2, request_timeout_ticks=5)
REQS = [KEYS.make_request(0, i) for i in range(6)]
JUNK = b"c0.99|not-the-client-mac"  # looks like a request, but no client made it
PARTIES = make_parties()


def replica(me: int, request_ok=KEYS.request_ok) -> Replica:  # type: ignore[no-untyped-def]
    return Replica(CONFIG, me, KEYS.signer(me), KEYS.verify, request_ok=request_ok)


def forwarded(by: int, requests: list[bytes]) -> Envelope:
    message = replica_pb2.ReplicaMessage(forwarded=replica_pb2.ForwardedRequests(requests=requests))
    return signed(by, message)


# --- core -------------------------------------------------------------------------------------


def test_backup_drops_an_inadmissible_forwarded_request_and_counts_it() -> None:
    backup = replica(1)
    backup.step(forwarded(3, [JUNK, REQS[0]]))
    assert set(backup.pending) == {request_id(REQS[0])}
    assert backup.counters["inadmissible-request"] == 1


def test_backup_refuses_to_prepare_a_pre_prepare_carrying_junk() -> None:
    backup = replica(1)
    backup.step(pre_prepare(0, 1, [REQS[0], JUNK]))
    out = backup.ready()
    assert not out.send and not out.persist, "a prepare for junk was sent"
    assert backup.counters["batch-with-inadmissible-request"] == 1
    backup.step(pre_prepare(0, 1, [REQS[0], REQS[1]]))  # the same slot, a clean batch: prepared
    assert any(isinstance(e, Envelope) for _, e in backup.ready().send)


class Cluster:
    """Four replicas wired directly; replica 0 (primary of view 0) is byzantine: each of its
    pre-prepares is replaced by one that adds JUNK to the batch (re-signed as itself)."""

    def __init__(self) -> None:
        self.replicas = [replica(i) for i in range(4)]
        self.decided: list[list[bytes]] = [[] for _ in range(4)]
        self.queue: list[tuple[int, Envelope]] = []
        self.junk_proposals = 0

    def flush(self, i: int) -> None:
        out = self.replicas[i].ready()
        for decided in out.decided:
            self.decided[i].extend(decided.requests)
        for destination, envelope in out.send:
            self.queue.append((destination, self._corrupt(i, envelope)))

    def _corrupt(self, sender: int, envelope: Envelope) -> Envelope:
        message = replica_pb2.ReplicaMessage.FromString(envelope.payload)
        if sender != 0 or message.WhichOneof("body") != "pre_prepare":
            return envelope
        pp = message.pre_prepare
        requests = [*pp.requests[:1], JUNK]
        self.junk_proposals += 1
        return pre_prepare(pp.view, pp.sequence, requests, by=0)

    def run(self, ticks: int) -> None:
        for _ in range(ticks):
            for i in range(4):
                self.replicas[i].tick(self.replicas[i].now + 1)
                self.flush(i)
            for _ in range(10_000):
                if not self.queue:
                    break
                destination, envelope = self.queue.pop(0)
                self.replicas[destination].step(envelope)
                self.flush(destination)


def test_a_primary_that_insists_on_junk_is_replaced_and_junk_is_never_decided() -> None:
    cluster = Cluster()
    for i, request in enumerate(REQS):
        backup = 1 + i % 3
        cluster.replicas[backup].step(ClientRequest(request))
        cluster.flush(backup)
    cluster.run(60)
    honest = cluster.replicas[1:]
    assert cluster.junk_proposals > 0, "the byzantine primary never proposed"
    assert all(r.view >= 1 for r in honest), "the request timer did not replace the primary"
    assert all(r.counters["batch-with-inadmissible-request"] > 0 for r in honest)
    for i in (1, 2, 3):
        assert JUNK not in cluster.decided[i]
        assert set(cluster.decided[i]) >= set(REQS), f"replica {i} did not decide everything"
    assert cluster.decided[1] == cluster.decided[2] == cluster.decided[3]


# --- runtime: the ordering rule with real keys ------------------------------------------------


def test_admission_admits_a_valid_envelope_and_refuses_the_finding() -> None:
    admission = RequestAdmission(PARTIES.view, size_max=1 << 20)
    good = endorser_tx(PARTIES, kv_rwset(writes=[("k", b"v")]))
    h = header(PARTIES.orderers[0])
    h.timestamp.nanos = 1_000_000_000
    finding = seal(PARTIES.orderers[0], h.SerializeToString(), b"")
    assert admission(good) and admission.reason(good) == ""
    assert not admission(finding) and admission.reason(finding) == "INVALID_FIELD"
    assert not admission(b"x" * ((1 << 20) + 1)) and admission.refused["TOO_LARGE"] == 1


def test_replica_with_the_real_rule_never_keeps_the_finding_envelope() -> None:
    admission = RequestAdmission(PARTIES.view, size_max=1 << 20)
    backup = replica(1, request_ok=admission)
    h = header(PARTIES.orderers[0])
    h.timestamp.nanos = 1_000_000_000
    finding = seal(PARTIES.orderers[0], h.SerializeToString(), b"")
    good = endorser_tx(PARTIES, kv_rwset(writes=[("k", b"v")]))
    backup.step(forwarded(3, [finding, good]))
    assert set(backup.pending) == {request_id(good)}


def test_every_poison_kind_is_refused_with_a_reason() -> None:
    admission = RequestAdmission(PARTIES.view, size_max=1 << 20)
    template = endorser_tx(PARTIES, kv_rwset(writes=[("k", b"v")]))
    for poison in poison_envelopes(CHANNEL, PARTIES.orderers[0], 7, template):
        assert admission.reason(poison.envelope), poison.kind


def test_the_rule_ignores_the_clock_but_broadcast_does_not() -> None:
    """Decision (runtime/roles/orderer/pbft_admission.py): replicas' clocks differ, so backups do
    not check the time window; the certificate is judged at the header timestamp instead."""
    old = header(PARTIES.user, at=NOW - timedelta(minutes=30))  # certificates: from NOW - 1 h
    envelope = endorser_tx(PARTIES, kv_rwset(writes=[("k", b"v")]), h=old)
    check_orderable(envelope, PARTIES.views)
    with pytest.raises(ClientError) as exc:
        check_envelope(envelope, PARTIES.views, NOW, 900.0)
    assert exc.value.reason_name == "TIMESTAMP_OUT_OF_WINDOW"


def counted_checks(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The requests the ordering rule judges from now on (`check_orderable` calls)."""
    calls: list[bytes] = []
    real = pbft_admission.check_orderable

    def counting(request: bytes, views: object) -> object:
        calls.append(request)
        return real(request, views)  # type: ignore[arg-type]

    monkeypatch.setattr(pbft_admission, "check_orderable", counting)
    return calls


def test_verdicts_are_cached_and_refusals_logged_at_most_once_per_interval(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls = counted_checks(monkeypatch)
    now = [100.0]
    admission = RequestAdmission(PARTIES.view, size_max=1 << 20, clock=lambda: now[0])
    junk = [b"junk-%d" % i for i in range(50)]
    admission.warm(junk)  # what the replica servicer does on a worker thread
    assert len(calls) == len(junk) and not admission.refused, "warming is not refusing"
    with caplog.at_level(logging.WARNING, logger=pbft_admission.__name__):
        for _ in range(3):
            for request in junk:
                assert not admission(request)
        assert len(calls) == len(junk), "a verdict was computed twice"
        assert len(caplog.records) == 1 and "MALFORMED x1" in caplog.records[0].getMessage()
        now[0] += pbft_admission.LOG_EVERY_S
        assert not admission(junk[0])
        assert len(caplog.records) == 2 and "MALFORMED x150" in caplog.records[1].getMessage()
    assert not any(r.exc_info for r in caplog.records), "bad input must not log tracebacks"


@pytest.mark.parametrize(
    ("disseminates", "held"),
    [
        pytest.param(True, 0, id="disseminating-replica-holds-no-verdicts"),
        pytest.param(False, 20, id="forwarding-replica-caches-every-verdict"),
    ],
)
def test_a_disseminating_replica_judges_each_envelope_once_and_keeps_no_verdict(
    monkeypatch: pytest.MonkeyPatch, disseminates: bool, held: int
) -> None:
    """Decision (pbft_admission.py docstring): with dissemination the rule runs once per
    envelope (the core drops what it holds first) and nobody asks again, so cached verdicts were
    only memory (~4 MB at the replica a client reaches); without, forwards and pre-prepares
    bring the same requests back and the cache saves their signature checks."""
    calls = counted_checks(monkeypatch)
    admission = RequestAdmission.for_channel(PARTIES.view, 1 << 20, disseminates)
    good = endorser_tx(PARTIES, kv_rwset(writes=[("k", b"v")]))
    junk = [b"junk-%d" % i for i in range(19)]
    assert admission(good) and not any(admission(j) for j in junk)
    assert len(calls) == 20
    assert len(admission._verdicts) == held
    assert admission(good), "the verdict is the same uncached"


class _Ordered:
    """An `Ordering` double for Broadcast: accepts everything, says whether its core judges
    an admitted envelope again."""

    def __init__(self, again: bool) -> None:
        self.checks_envelopes_again = again
        self.view = PARTIES.view
        self.got: list[bytes] = []

    async def submit_many(self, envelopes: list[bytes]) -> list[None]:
        self.got += envelopes
        return [None] * len(envelopes)


@pytest.mark.parametrize("again", [False, True])
async def test_broadcast_remembers_a_creator_signature_only_where_the_core_checks_it_again(
    again: bool,
) -> None:
    """Decision (rpc/orderer.py, `Ordering.checks_envelopes_again`): a disseminating PBFT-lite
    replica, a solo or a JetStream orderer never checks an admitted envelope again, so
    remembering Broadcast's signature check only filled the memo (up to 2.4 MB, the replica a
    client reaches); without dissemination the core's rule checks it again and hits."""
    from concurrent.futures import ThreadPoolExecutor

    from dltmw.rpc.orderer import OrdererServicer
    from dltmw.v1 import orderer_service_pb2

    ordered = _Ordered(again)
    memo = PARTIES.view.membership._verified
    rwset = kv_rwset(writes=[("k", b"again %d" % again)])
    # stamped now: Broadcast checks the timestamp against the wall clock, not against NOW
    good = endorser_tx(PARTIES, rwset, h=header(PARTIES.user, at=datetime.now(UTC)))
    with ThreadPoolExecutor(1) as pool:
        servicer = OrdererServicer({CHANNEL: ordered}, 900.0, pool)  # type: ignore[dict-item]
        before = len(memo)
        request = orderer_service_pb2.BroadcastRequest(envelopes=[good])
        response = await servicer._handle(request)
    assert [r.accepted for r in response.results] == [True] and ordered.got == [good]
    assert len(memo) - before == (1 if again else 0)
