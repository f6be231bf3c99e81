"""The replicas' de-duplication window (`core/pbft/recent.py`): bounded, and a function of the
chain alone (a replica rebuilt from the window's records knows exactly what a running one
knows)."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st
from pbft_messages import KEYS

from dltmw.core.pbft import PbftConfig, Replica, batch_digest, request_id
from dltmw.core.pbft.recent import Recent
from dltmw.core.pbft.recovery import compaction_floor
from dltmw.v1 import replica_pb2


def test_a_key_is_known_for_window_sequences_then_forgotten() -> None:
    recent: Recent[str] = Recent(3)
    recent.add(1, ["a"])
    for seq in (2, 3):
        recent.add(seq, [])
        assert "a" in recent  # assembling seq + 1: the window is [seq - 2, seq]
    recent.add(4, ["b"])
    assert "a" not in recent and "b" in recent
    assert list(recent) == ["b"]


def test_a_key_added_again_lives_until_its_latest_sequence_leaves() -> None:
    recent: Recent[str] = Recent(2)
    recent.add(1, ["a"])
    recent.add(2, ["a"])
    recent.add(3, [])
    assert "a" in recent  # sequence 1 left, sequence 2 holds it
    recent.add(4, [])
    assert "a" not in recent


def test_memory_stays_bounded_by_the_window() -> None:
    recent: Recent[int] = Recent(16)
    for seq in range(1, 10_001):
        recent.add(seq, range(seq * 20, seq * 20 + 20))
    assert len(recent) == 16 * 20
    assert len(recent._by_seq) == 16


ADDS = st.lists(st.tuples(st.integers(1, 4), st.lists(st.integers(0, 12), max_size=4)), max_size=40)


@settings(max_examples=300, deadline=None)
@given(window=st.integers(1, 6), steps=ADDS)
def test_membership_is_the_rule_and_a_replay_of_the_window_gives_the_same(
    window: int, steps: list[tuple[int, list[int]]]
) -> None:
    """Known iff added at a sequence within `window` of the highest added; a replica rebuilt
    from only the window's sequences (what compaction keeps) knows the same keys."""
    history: list[tuple[int, list[int]]] = []
    live: Recent[int] = Recent(window)
    seq = 0
    for gap, keys in steps:
        seq += gap
        history.append((seq, keys))
        live.add(seq, keys)
    expected = {k for s, keys in history for k in keys if s > seq - window}
    assert set(live) == expected
    rebuilt: Recent[int] = Recent(window)
    for s, keys in history:
        if s >= seq - window + 1:
            rebuilt.add(s, keys)
    assert set(rebuilt) == expected


def test_compaction_keeps_the_window_of_the_next_sequence_to_deliver() -> None:
    """With delivery behind the stable checkpoint (dissemination waits for a batch), the floor
    follows delivery: every sequence of the next one's window keeps its records."""
    for stable, delivered in [(100, 100), (100, 40), (40, 100)]:
        floor = compaction_floor(stable, delivered, retain=16)
        assert floor <= (delivered + 1) - 16  # the window of sequence delivered + 1
        assert floor <= stable - 16 + 1  # state transfer still serves `retain` decided slots


CONFIG = PbftConfig(n=4, checkpoint_interval=4, batch_size_max=2, decided_retain=8)


def _decided(seq: int, requests: list[bytes]) -> replica_pb2.DecidedBatch:
    return replica_pb2.DecidedBatch(
        sequence=seq, digest=batch_digest(tuple(requests)), requests=requests
    )


def test_a_replica_remembers_executed_requests_for_the_window_only() -> None:
    """The per-transaction memory of a running replica is bounded; a copy of a request ordered
    again within the window is not fresh (not executed twice here), and one ordered after the
    window is (the peers mark that copy DUPLICATE_TXID)."""
    replica = Replica(CONFIG, 1, KEYS.signer(1), KEYS.verify, request_ok=KEYS.request_ok)
    requests = [KEYS.make_request(0, i) for i in range(400)]
    for seq in range(1, 201):
        replica.apply(_decided(seq, requests[2 * seq - 2 : 2 * seq]))
    assert len(replica.executed_ids) == CONFIG.decided_retain * 2
    assert request_id(requests[0]) not in replica.executed_ids
    assert request_id(requests[-1]) in replica.executed_ids
    replica.apply(_decided(201, [requests[-1], requests[0]]))
    assert replica.ready().decided[-1].fresh == (requests[0],)
    # Admission: a request executed within the window is not taken again.
    replica.on_request(requests[-2], forward=False)
    assert request_id(requests[-2]) not in replica.pending
    replica.on_request(requests[10], forward=False)
    assert request_id(requests[10]) in replica.pending


def test_a_small_window_config_is_the_replicas_retention() -> None:
    """One knob: the window is `decided_retain` (compaction keeps it, state transfer serves it)."""
    replica = Replica(replace(CONFIG, decided_retain=3), 0, KEYS.signer(0), KEYS.verify)
    assert replica.executed_ids.window == 3
