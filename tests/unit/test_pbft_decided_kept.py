"""Decided batches in memory (`PbftConfig.decided_kept`) versus in the records (`decided_retain`).

A replica keeps the last `decided_kept` decided batches in memory; a peer's catch-up for an
older retained one becomes a read of our own records (`DecidedFromStore`), whose answer
(`StoredDecided`) the replica sends on as an ordinary state reply. A notary-cluster member held
~20 MiB of batches it only needed for a rare lagging peer (issue 18).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from pbft_messages import KEYS

from dltmw.core.pbft import (
    DecidedFromStore,
    DecidedRecord,
    Envelope,
    PbftConfig,
    Replica,
    StableRecord,
    StoredDecided,
    batch_digest,
)
from dltmw.ledger.pbft_store import RecordStore
from dltmw.v1 import replica_pb2

CONFIG = PbftConfig(n=4, checkpoint_interval=4, batch_size_max=2, decided_retain=8, decided_kept=2)


def _decided(seq: int) -> replica_pb2.DecidedBatch:
    requests = [KEYS.make_request(0, seq)]
    return replica_pb2.DecidedBatch(sequence=seq, digest=batch_digest(requests), requests=requests)


def _replica(config: PbftConfig = CONFIG, upto: int = 16) -> Replica:
    """Replica 1 having executed 1..upto with checkpoint `upto` stable."""
    replica = Replica(config, 1, KEYS.signer(1), KEYS.verify, request_ok=KEYS.request_ok)
    for seq in range(1, upto + 1):
        replica.apply(_decided(seq))
    replica.learn_checkpoint(upto, replica.state_at[upto], ())
    assert replica.stable_seq == upto
    replica.ready()
    return replica


def _state_reply(replica: Replica) -> list[int]:
    """Sequences of the state reply replica 1 sent to replica 2 in its last effects."""
    sent = replica.ready().send
    assert [d for d, _m in sent] == [2]
    envelope = sent[0][1]
    assert isinstance(envelope, Envelope)
    message = replica_pb2.ReplicaMessage.FromString(envelope.payload)
    return [b.sequence for b in message.state_reply.batches]


def test_memory_holds_only_the_kept_batches_below_the_stable_checkpoint() -> None:
    replica = _replica()
    assert sorted(replica.decided) == [15, 16]


def test_kept_zero_keeps_every_retained_batch_in_memory_and_never_reads_the_records() -> None:
    replica = _replica(replace(CONFIG, decided_kept=0))
    assert sorted(replica.decided) == list(range(9, 17))
    replica.on_state_request(2, 5)  # compacted: nothing
    assert not replica.ready().send
    assert not replica.in_store(10)


def test_a_kept_batch_is_served_from_memory() -> None:
    replica = _replica()
    replica.on_state_request(2, 15)
    assert _state_reply(replica) == [15, 16]


@pytest.mark.parametrize(
    ("from_sequence", "wanted"),
    [
        pytest.param(9, DecidedFromStore(9, CONFIG.transfer_batches_max), id="oldest-retained"),
        pytest.param(14, DecidedFromStore(14, CONFIG.transfer_batches_max), id="just-below"),
        pytest.param(8, None, id="compacted-nothing"),
        pytest.param(17, None, id="not-decided-yet-nothing"),
    ],
)
def test_an_older_retained_batch_is_read_from_the_records(
    from_sequence: int, wanted: DecidedFromStore | None
) -> None:
    replica = _replica()
    replica.on_state_request(2, from_sequence)
    sent = replica.ready().send
    assert sent == (((2, wanted),) if wanted is not None else ())


def test_the_records_read_back_are_sent_on_as_a_state_reply_consecutive_only() -> None:
    replica = _replica()
    replica.step(StoredDecided(2, (_decided(10), _decided(11), _decided(13))))
    assert _state_reply(replica) == [10, 11]
    replica.step(StoredDecided(2, ()))  # compacted meanwhile: nothing
    assert not replica.ready().send


def test_one_read_per_peer_and_tick() -> None:
    replica = _replica()
    replica.on_state_request(2, 10)
    replica.on_state_request(2, 10)
    assert len(replica.ready().send) == 1
    assert replica.counters["state-request-rate"] == 1


def test_a_restart_keeps_only_the_kept_batches_in_memory() -> None:
    running = _replica()
    stable = replica_pb2.StableCheckpoint(sequence=16, state_digest=running.state_at[16])
    records = [DecidedRecord(_decided(s)) for s in range(9, 17)]
    records.append(StableRecord(stable.sequence, stable.state_digest, ()))
    restored = Replica.restore(CONFIG, 1, KEYS.signer(1), KEYS.verify, records)
    assert sorted(restored.decided) == [15, 16]
    assert len(restored.executed_ids) == 8  # the de-duplication window stays `decided_retain`


def test_kept_beyond_retain_is_retain_and_a_negative_kept_is_refused() -> None:
    assert replace(CONFIG, decided_kept=100).kept == CONFIG.decided_retain
    with pytest.raises(ValueError, match="decided_kept"):
        replace(CONFIG, decided_kept=-1)


async def test_the_record_store_reads_back_the_retained_decided_batches(tmp_path: Path) -> None:
    """`RecordStore.decided`: the batches of a range still stored (compacted ones gone), once
    each, in sequence order: what a member answers a `DecidedFromStore` with."""
    store = await RecordStore.open(tmp_path / "r.sqlite")
    await store.append([DecidedRecord(_decided(s)) for s in (3, 1, 2, 4, 5)])
    await store.append([DecidedRecord(_decided(4))])  # a duplicate row: read once
    assert [b.sequence for b in await store.decided(2, 3)] == [2, 3, 4]
    await store.compact(stable_seq=4, decided_from=3)
    assert [b.sequence for b in await store.decided(1, 16)] == [3, 4, 5]
    assert await store.decided(6, 16) == []
    assert (await store.decided(3, 1))[0] == _decided(3)
    await store.close()
