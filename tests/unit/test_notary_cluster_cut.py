"""When a notary cluster's primary proposes a non-full slot (`core/notary_cluster_cut.py`): at
once on a quiet cluster, only at its tick (or when full) under load."""

from __future__ import annotations

from pbft_messages import KEYS

from dltmw.core.notary_cluster_cut import NagleCut
from dltmw.core.pbft import ClientRequest, Envelope, Replica
from dltmw.runtime.roles.notary.cluster import cluster_config
from dltmw.v1 import replica_pb2

CONFIG = cluster_config(4)  # batch_size_max 4: a full slot is four wraps
REQS = [KEYS.make_request(0, i) for i in range(40)]


class Cluster:
    """Four NagleCut replicas wired directly; `drain` is what the driver does when a
    replica's intake is empty after a step."""

    def __init__(self) -> None:
        self.cuts = [
            NagleCut(Replica(CONFIG, i, KEYS.signer(i), KEYS.verify, request_ok=KEYS.request_ok))
            for i in range(4)
        ]
        self.queue: list[tuple[int, Envelope]] = []
        self.decided: list[list[int]] = [[] for _ in range(4)]  # batch sizes, per replica
        self.proposed: list[int] = []  # sizes of the primary's pre-prepares

    def flush(self, i: int) -> None:
        out = self.cuts[i].ready()
        self.decided[i].extend(len(d.requests) for d in out.decided)
        broadcast: set[int] = set()  # a broadcast is one envelope sent to every peer
        for dst, message in out.send:
            if not isinstance(message, Envelope):
                continue
            self.queue.append((dst, message))
            if i == 0 and id(message) not in broadcast:
                broadcast.add(id(message))
                body = replica_pb2.ReplicaMessage.FromString(message.payload)
                if body.WhichOneof("body") == "pre_prepare":
                    self.proposed.append(len(body.pre_prepare.requests))

    def submit(self, request: bytes, drain: bool = True) -> None:
        self.cuts[0].step(ClientRequest(request))
        if drain:
            self.cuts[0].drained()
        self.flush(0)

    def settle(self) -> None:
        for _ in range(10_000):
            if not self.queue:
                return
            dst, envelope = self.queue.pop(0)
            self.cuts[dst].step(envelope)
            self.cuts[dst].drained()
            self.flush(dst)
        raise AssertionError("messages never settled")

    def tick(self) -> None:
        for i, cut in enumerate(self.cuts):
            cut.tick(cut.replica.now + 1)
            self.flush(i)
        self.settle()


def test_a_lone_request_on_a_quiet_cluster_is_proposed_without_waiting_for_a_tick() -> None:
    cluster = Cluster()
    cluster.submit(REQS[0])
    cluster.settle()
    assert cluster.proposed == [1]
    assert all(sizes == [1] for sizes in cluster.decided)  # decided with no tick at all


def test_a_request_arriving_while_a_slot_is_in_flight_waits_for_it() -> None:
    """Nagle: with a slot proposed and not executed, a second lone request is not proposed
    on drain (the first one's execution empties the pipeline, then it goes)."""
    cluster = Cluster()
    cluster.submit(REQS[0])
    cluster.submit(REQS[1])
    assert cluster.proposed == [1]
    cluster.settle()
    assert cluster.proposed == [1, 1]


def busy_cluster() -> Cluster:
    """A cluster that executed a full slot of wraps during the last tick."""
    cluster = Cluster()
    cluster.tick()
    for request in REQS[:4]:
        cluster.submit(request, drain=False)  # full: proposed on step
    cluster.settle()
    assert cluster.proposed == [4]
    cluster.tick()  # the tick saw four wraps executed: not quiet
    assert not cluster.cuts[0].quiet
    return cluster


def test_under_load_a_non_full_slot_waits_for_the_tick() -> None:
    cluster = busy_cluster()
    cluster.submit(REQS[4])
    cluster.submit(REQS[5])
    cluster.settle()
    assert cluster.proposed == [4]  # pending, not proposed on drain
    cluster.tick()
    assert cluster.proposed == [4, 2]
    assert cluster.decided[3] == [4, 2]


def test_under_load_a_full_slot_still_leaves_at_once() -> None:
    cluster = busy_cluster()
    for request in REQS[4:8]:
        cluster.submit(request)
    cluster.settle()
    assert cluster.proposed == [4, 4]


def test_a_quiet_tick_after_load_makes_the_cluster_quiet_again() -> None:
    cluster = busy_cluster()
    cluster.tick()  # nothing executed during this tick
    assert cluster.cuts[0].quiet
    cluster.submit(REQS[4])
    cluster.settle()
    assert cluster.proposed == [4, 1]
