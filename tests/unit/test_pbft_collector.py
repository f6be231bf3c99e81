"""PBFT-lite with a vote collector (`core/pbft/collector.py`): who sends what to whom, and the
certificates a backup refuses (nothing changes) or accepts (prepared / decided as in PBFT)."""

from __future__ import annotations

from dataclasses import replace

import test_pbft_replica as replica_tests
from pbft_messages import KEYS, pre_prepare, signed, vote

from dltmw.core.handlers.pbft_speculative import certified_claims
from dltmw.core.pbft import (
    ClientRequest,
    Envelope,
    PbftConfig,
    PbftEffects,
    PreparedRecord,
    Record,
    Replica,
    batch_digest,
)
from dltmw.v1 import replica_pb2

CONFIG = PbftConfig(
    n=4, checkpoint_interval=2, batch_size_max=2, request_timeout_ticks=50, collector=True
)
REQS = [KEYS.make_request(0, i) for i in range(8)]
DIGEST = batch_digest(REQS[:2])


def replica(me: int, config: PbftConfig = CONFIG, records: list[Record] | None = None) -> Replica:
    if records is not None:
        return Replica.restore(
            config, me, KEYS.signer(me), KEYS.verify, records, request_ok=KEYS.request_ok
        )
    return Replica(config, me, KEYS.signer(me), KEYS.verify, request_ok=KEYS.request_ok)


def kind(envelope: Envelope) -> str:
    return str(replica_pb2.ReplicaMessage.FromString(envelope.payload).WhichOneof("body"))


class Cluster(replica_tests.Cluster):
    """Four collecting replicas wired directly; every message sent is logged as (from, to,
    kind)."""

    def __init__(self) -> None:
        super().__init__()
        self.replicas = [replica(i) for i in range(4)]
        self.log: list[tuple[int, int, str]] = []

    def flush(self, i: int) -> PbftEffects:
        out = super().flush(i)
        self.log += [(i, dst, kind(env)) for dst, env in out.send if isinstance(env, Envelope)]
        return out


def test_backups_vote_to_the_collector_only_and_every_replica_decides_alike() -> None:
    cluster = Cluster()
    cluster.replicas[0].step(ClientRequest(REQS[0]))
    cluster.replicas[0].step(ClientRequest(REQS[1]))
    cluster.flush(0)
    cluster.settle()
    assert all(d == [DIGEST] for d in cluster.decided)
    slot = [(s, d, k) for s, d, k in cluster.log if k not in ("checkpoint",)]
    votes = [(s, d) for s, d, k in slot if k in ("prepare", "commit")]
    assert votes and all(d == 0 for _s, d in votes)  # no vote goes from backup to backup
    assert sorted(k for s, _d, k in slot if s == 1) == ["commit", "prepare"]
    by_primary = sorted((d, k) for s, d, k in slot if s == 0)
    assert by_primary == sorted(
        (d, k)
        for d in (1, 2, 3)
        for k in ("pre_prepare", "prepared_certificate", "commit_certificate")
    )


def _prepared_at_collector() -> tuple[Replica, Envelope, Envelope]:
    """A collector that prepared slot 1: (collector, its certificate, its commit certificate
    once backups 1 and 2 committed)."""
    primary = replica(0)
    primary.step(ClientRequest(REQS[0]))
    primary.step(ClientRequest(REQS[1]))
    primary.ready()
    primary.step(vote("prepare", 1, 0, 1, DIGEST))
    primary.step(vote("prepare", 2, 0, 1, DIGEST))
    cert = next(e for _p, e in primary.ready().send if kind(e) == "prepared_certificate")
    primary.step(vote("commit", 1, 0, 1, DIGEST))
    primary.step(vote("commit", 2, 0, 1, DIGEST))
    sent = [e for _p, e in primary.ready().send if kind(e) == "commit_certificate"]
    return primary, cert, sent[0]


def _backup_with_pre_prepare(me: int = 3) -> Replica:
    backup = replica(me)
    backup.step(pre_prepare(0, 1, REQS[:2]))
    backup.ready()
    return backup


def _resigned(mutate, envelope: Envelope) -> Envelope:  # type: ignore[no-untyped-def]
    message = replica_pb2.ReplicaMessage.FromString(envelope.payload)
    mutate(message)
    return signed(0, message)


def test_a_valid_prepared_certificate_prepares_a_backup_as_its_prepares_would() -> None:
    _primary, cert, _decided = _prepared_at_collector()
    backup = _backup_with_pre_prepare()
    backup.step(cert)
    out = backup.ready()
    assert [type(r) for r in out.persist] == [PreparedRecord, type(out.persist[1])]
    assert [(p, kind(e)) for p, e in out.send] == [(0, "commit")]
    assert backup.prepared[1].prepares  # the certificate it persisted, for a view change


def test_a_prepared_certificate_carries_a_lost_pre_prepare() -> None:
    _primary, cert, _decided = _prepared_at_collector()
    backup = replica(3)
    backup.step(cert)
    assert sorted(kind(e) for _p, e in backup.ready().send) == ["commit", "prepare"]


def _drop_last(m: replica_pb2.ReplicaMessage) -> None:
    del m.prepared_certificate.prepares[-1:]


def _duplicate_first(m: replica_pb2.ReplicaMessage) -> None:
    first = replica_pb2.SignedReplicaMessage()
    first.CopyFrom(m.prepared_certificate.prepares[0])
    del m.prepared_certificate.prepares[:]
    m.prepared_certificate.prepares.extend([first, first])


def _other_batch(m: replica_pb2.ReplicaMessage) -> None:
    m.prepared_certificate.pre_prepare.CopyFrom(pre_prepare(0, 1, [REQS[1], REQS[0]]))


def _other_commits_batch(m: replica_pb2.ReplicaMessage) -> None:
    del m.commit_certificate.requests[:]
    m.commit_certificate.requests.extend([REQS[1], REQS[0]])
    m.commit_certificate.digest = batch_digest([REQS[1], REQS[0]])


def _too_few_commits(m: replica_pb2.ReplicaMessage) -> None:
    del m.commit_certificate.commits[-1:]


def _duplicated_commits(m: replica_pb2.ReplicaMessage) -> None:
    first = replica_pb2.SignedReplicaMessage()
    first.CopyFrom(m.commit_certificate.commits[0])
    count = len(m.commit_certificate.commits)
    del m.commit_certificate.commits[:]
    m.commit_certificate.commits.extend([first] * count)


def test_a_spoiled_prepared_certificate_is_refused_and_changes_nothing() -> None:
    _primary, cert, _decided = _prepared_at_collector()
    for spoil in (_drop_last, _duplicate_first, _other_batch):
        backup = _backup_with_pre_prepare()
        backup.step(_resigned(spoil, cert))
        out = backup.ready()
        assert 1 not in backup.prepared, spoil.__name__
        assert not out.persist and "commit" not in [kind(e) for _p, e in out.send]
    assert backup.counters["bad-prepared-certificate"] == 1


def test_a_valid_commit_certificate_decides_and_spoiled_ones_are_refused() -> None:
    _primary, _cert, decided = _prepared_at_collector()
    for spoil in (_too_few_commits, _duplicated_commits, _other_commits_batch):
        backup = _backup_with_pre_prepare()
        backup.step(_resigned(spoil, decided))
        assert not backup.ready().decided, spoil.__name__
        assert backup.counters["bad-commit-certificate"] == 1
    backup = replica(3)  # saw nothing of the slot: the certificate is proof enough
    backup.step(decided)
    assert [d.digest for d in backup.ready().decided] == [DIGEST]


def test_certificates_from_a_backup_or_without_a_collector_are_refused() -> None:
    _primary, cert, decided = _prepared_at_collector()
    from_backup = signed(1, replica_pb2.ReplicaMessage.FromString(cert.payload))
    backup = _backup_with_pre_prepare()
    backup.step(from_backup)
    assert backup.counters["certificate-not-from-collector"] == 1
    plain = replica(3, replace(CONFIG, collector=False))
    plain.step(pre_prepare(0, 1, REQS[:2]))
    plain.step(cert)
    plain.step(decided)
    assert plain.counters["certificate-without-collector"] == 2
    assert 1 not in plain.prepared


def test_the_collector_resends_certificates_to_backups_that_lack_them() -> None:
    """The prepared certificate goes again to backups whose Commit the collector lacks (also
    after a restart, rebuilt from its persisted certificate); a late Commit of an executed slot
    is answered with its commit certificate."""
    primary = replica(0)
    primary.step(ClientRequest(REQS[0]))
    primary.step(ClientRequest(REQS[1]))
    records = list(primary.ready().persist)
    primary.step(vote("prepare", 1, 0, 1, DIGEST))
    primary.step(vote("prepare", 2, 0, 1, DIGEST))
    primary.step(vote("commit", 1, 0, 1, DIGEST))
    records += primary.ready().persist
    every = CONFIG.retransmit_ticks
    restarted = replica(0, records=records)
    restarted.ready()
    for r, lacking in ((primary, [2, 3]), (restarted, [1, 2, 3])):  # commits are not records
        r.tick(every)
        r.ready()
        r.tick(2 * every)
        resent = sorted(p for p, e in r.ready().send if kind(e) == "prepared_certificate")
        assert resent == lacking
    primary.step(vote("commit", 2, 0, 1, DIGEST))
    assert [d.sequence for d in primary.ready().decided] == [1]
    primary.step(vote("commit", 3, 0, 1, DIGEST))  # late, as the slowest backup's is
    assert [kind(e) for _p, e in primary.ready().send] == []
    primary.tick(primary.now + every // 2)
    primary.ready()
    primary.step(vote("commit", 3, 0, 1, DIGEST))  # resent: the certificate was lost
    assert [(p, kind(e)) for p, e in primary.ready().send] == [(3, "commit_certificate")]


def test_the_block_claims_inside_a_commit_certificate_are_found() -> None:
    """Readiness (`heard`) counts the block a peer's Commit claims; with a collector a backup
    sees peers' Commits only inside commit certificates (`certified_claims`)."""
    commits = []
    for replica_index in (0, 1, 2):
        message = replica_pb2.ReplicaMessage()
        message.commit.CopyFrom(
            replica_pb2.Vote(
                view=0, sequence=5, digest=DIGEST, block_hash=b"h", block_signature=b"s"
            )
        )
        commits.append(signed(replica_index, message))
    commits.append(vote("commit", 3, 0, 5, DIGEST))  # no block signature: no claim
    batch = replica_pb2.DecidedBatch(view=0, sequence=5, digest=DIGEST, commits=commits)
    message = replica_pb2.ReplicaMessage(commit_certificate=batch)
    assert [(c.replica, n) for c, n in certified_claims(message, 0)] == [(0, 4), (1, 4), (2, 4)]
    assert certified_claims(message, 1) == []  # another epoch's
