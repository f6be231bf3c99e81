"""The notary-cluster replica's record appends (`cluster_effects.ReplicaExecutor.persist`): a
step of stable checkpoints only costs no durable transaction of its own, it lands first in the
next append, in order; every other step is durable at once (before its messages leave)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import cast

from pbft_messages import KEYS

from dltmw.core.pbft import DecidedRecord, StableRecord, batch_digest
from dltmw.ledger.pbft_store import RecordStore
from dltmw.runtime.roles.notary.cluster_effects import MemberRole, ReplicaExecutor
from dltmw.v1 import replica_pb2


def _decided(seq: int) -> DecidedRecord:
    requests = [KEYS.make_request(0, seq)]
    return DecidedRecord(
        replica_pb2.DecidedBatch(sequence=seq, digest=batch_digest(requests), requests=requests)
    )


def _stable(seq: int) -> StableRecord:
    return StableRecord(seq, bytes([seq]) * 32, ())


async def test_a_stable_only_step_rides_with_the_next_append_in_order(tmp_path: Path) -> None:
    log = await RecordStore.open(tmp_path / "r.sqlite")
    role = SimpleNamespace(records=log, config=SimpleNamespace(decided_retain=1024))
    executor = ReplicaExecutor(cast(MemberRole, role))
    try:
        await executor.persist([_decided(1)])
        assert await log.load() == [_decided(1)]  # durable at once: the checkpoint vote needs it
        await executor.persist([_stable(1)])
        assert await log.load() == [_decided(1)]  # held: no transaction of its own
        await executor.persist([_decided(2), _stable(2)])  # not stable-only: durable at once
        assert await log.load() == [_decided(1), _stable(1), _decided(2), _stable(2)]
    finally:
        await log.close()
