"""Queued private delivery: the sender's outbox rows (ledger/private_outbox.py through
PrivateStore), the redelivery task's retry and backoff (runtime/roles/privacy/redelivery.py,
with a real store and a fake pushing channel: the I/O boundary), and which payloads a committed
block makes a node wait for (executor.owed_here). The store runs on both backends (`psite`)."""

from __future__ import annotations

import asyncio

import pytest
from private_backends import PrivateSite

from dltmw.core.errors import TransientError
from dltmw.core.privacy import agreement as ag
from dltmw.ledger.private_store import NewPayload, PrivateStore
from dltmw.runtime.roles.privacy import executor
from dltmw.runtime.roles.privacy import redelivery as rd
from dltmw.runtime.roles.privacy.executor import committed_private, owed_here
from dltmw.v1 import (
    block_pb2,
    common_pb2,
    errors_pb2,
    private_agreement_pb2,
    private_payload_pb2,
    transaction_pb2,
)

H1, H2, H3 = (bytes([i]) * 32 for i in (1, 2, 3))
ME, OTHER = b"\x0a" * 32, b"\x0b" * 32


def payload(tag: bytes) -> NewPayload:
    data = private_payload_pb2.EncryptedPayload(ciphertext=tag).SerializeToString()
    return NewPayload(tag, data, ())


@pytest.fixture
async def store(psite: PrivateSite) -> PrivateStore:
    """A private store on each backend (a sqlite file, a PostgreSQL schema)."""
    s = await psite.open()
    yield s  # type: ignore[misc]
    await s.close()


async def test_rows_are_stored_with_the_payloads_and_forgotten_when_delivered(
    store: PrivateStore,
) -> None:
    await store.store_payloads([payload(H1), payload(H2)], [(H1, "b"), (H1, "a"), (H2, "a")])
    assert await store.pending_nodes(H1) == ["a", "b"]
    assert await store.owed((b"", ""), 10) == [(H1, "a"), (H1, "b"), (H2, "a")]
    assert await store.owed((H1, "a"), 1) == [(H1, "b")]  # paging after a row
    await store.delivered([(H1, "a")])
    assert await store.pending_nodes(H1) == ["b"]
    assert await store.pending_nodes(H3) == []


async def test_a_purge_forgets_what_was_owed(store: PrivateStore) -> None:
    await store.store_payloads([payload(H1)], [(H1, "a")])
    await store.transaction(lambda txn: txn.remove_payloads([H1], "tx", 3))
    assert await store.owed((b"", ""), 10) == []
    assert await store.missing([H1, H2]) == [H2]  # a purged payload is not waited for


async def test_missing_counts_stored_and_deferred_as_held(store: PrivateStore) -> None:
    await store.store_payloads([payload(H1)])
    await store.defer_payloads([payload(H2)])
    assert await store.missing([H1, H2, H3, H3]) == [H3]


async def test_missing_answers_a_large_mixed_list_in_the_order_asked(store: PrivateStore) -> None:
    """More hashes than one `IN (...)` statement takes, stored, deferred, purged and absent
    interleaved, some asked twice: exactly the absent ones, each once, in the order asked."""
    hashes = [i.to_bytes(2, "big") * 16 for i in range(600)]
    held, deferred = hashes[0::4], hashes[1::4]
    purged, absent = hashes[2::4], hashes[3::4]
    await store.store_payloads([payload(h) for h in held])
    await store.defer_payloads([payload(h) for h in deferred])
    await store.transaction(lambda txn: txn.remove_payloads(purged, "tx", 3))
    asked = list(reversed(hashes)) + absent[:10]
    assert await store.missing(asked) == list(reversed(absent))


class FakeChannel:
    """The I/O boundary of the redelivery task: pushes fail while `down`."""

    def __init__(self, store: PrivateStore) -> None:
        self.store = store
        self.channel_id = "c"
        self.down = True
        self.pushed: list[tuple[str, list[bytes]]] = []

    async def push_payloads(
        self, node_id: str, items: list[tuple[bytes, private_payload_pb2.EncryptedPayload]]
    ) -> int:
        if self.down:
            raise TransientError(errors_pb2.ERROR_REASON_PEER_UNAVAILABLE, f"{node_id} down")
        self.pushed.append((node_id, [h for h, _ in items]))
        return len(items)


async def test_redelivery_backs_off_while_down_and_deletes_rows_once_delivered(
    store: PrivateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rd, "FIRST_DELAY_S", 0.0)
    await store.store_payloads([payload(H1), payload(H2)], [(H1, "a"), (H2, "a")])
    channel = FakeChannel(store)
    task = rd.Redelivery(channel)  # type: ignore[arg-type]
    assert await task._pass() >= 0.0  # first sight: due after FIRST_DELAY_S
    await task._pass()  # due: fails, backs off BACKOFF_MIN_S
    await task._pass()  # not due yet: nothing tried
    assert task.schedule._next["a"][1] == 1
    task.schedule._next["a"] = (0.0, 1)  # due now: fails again, the backoff doubles
    await task._pass()
    due, failures = task.schedule._next["a"]
    assert failures == 2 and due - asyncio.get_running_loop().time() > 0 and channel.pushed == []
    assert len(await store.owed((b"", ""), 10)) == 2
    channel.down = False
    task.schedule._next["a"] = (0.0, 2)  # due now
    await task._pass()
    assert channel.pushed == [("a", [H1, H2])]
    assert await store.owed((b"", ""), 10) == []
    assert await task._pass() == rd.IDLE_S


async def test_redelivery_resumes_from_the_table_after_a_restart(store: PrivateStore) -> None:
    """A new task (a restarted node) finds the rows and delivers them."""
    await store.store_payloads([payload(H3)], [(H3, "b")])
    channel = FakeChannel(store)
    channel.down = False
    task = rd.Redelivery(channel)  # type: ignore[arg-type]
    for _ in range(50):  # bounded: FIRST_DELAY_S, then the push
        wait = await task._pass()
        if not await store.owed((b"", ""), 10):
            break
        await asyncio.sleep(min(wait, 0.1))
    assert channel.pushed == [("b", [H3])]


def _block(
    recipients: list[bytes], code: int = transaction_pb2.TX_VALIDATION_CODE_VALID
) -> block_pb2.Block:
    body = ag.agreement_body("c", "tx", H1, (b"p" * 32, b"d" * 32), recipients, ag.AGREE)
    ptx = transaction_pb2.PrivateTransaction(
        payload_hash=H1, agreements=[private_agreement_pb2.PrivateAgreement(body=body)]
    )
    header = common_pb2.Header(type=common_pb2.HEADER_TYPE_PRIVATE_TRANSACTION, tx_id="tx")
    data = common_pb2.Payload(header=header.SerializeToString(), data=ptx.SerializeToString())
    env = common_pb2.Envelope(payload=data.SerializeToString())
    block = block_pb2.Block()
    block.data.envelopes.append(env.SerializeToString())
    block.metadata.validation_codes.append(code)
    return block


def test_a_node_named_in_the_agreements_waits_for_the_payload() -> None:
    assert owed_here(committed_private(_block([ME, OTHER])), ME) == [H1]
    assert owed_here(committed_private(_block([OTHER])), ME) == []
    assert (
        owed_here(
            committed_private(_block([ME], transaction_pb2.TX_VALIDATION_CODE_MVCC_READ_CONFLICT)),
            ME,
        )
        == []
    )


class BrokenStore:
    """A store whose reads fail for good (not a transient fault)."""

    async def owed(self, after: object, limit: int) -> list[object]:
        raise RuntimeError("disk gone")


async def test_a_lasting_failure_ends_the_task_it_is_not_swallowed(
    store: PrivateStore,
) -> None:
    """The task's owner (`TaskOwner.forever`) turns an ending task into a stopped node with
    health NOT_SERVING; the task must therefore end, not log and go on."""
    channel = FakeChannel(store)
    channel.store = BrokenStore()  # type: ignore[assignment]
    task = rd.Redelivery(channel)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="disk gone"):
        await asyncio.wait_for(task._task._run(), 5)


async def test_an_outbox_paged_to_its_end_keeps_its_schedule(
    store: PrivateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows filling whole pages end each round with an empty page: that is the end of the
    table, not an empty table. Taken for one, it wiped the schedule every round, so every node
    was "first seen" again and never came due (the outbox never drained)."""
    monkeypatch.setattr(rd, "FIRST_DELAY_S", 0.0)
    monkeypatch.setattr(rd, "BATCH", 1)
    await store.store_payloads([payload(H1)], [(H1, "a")])
    channel = FakeChannel(store)
    channel.down = False
    task = rd.Redelivery(channel)  # type: ignore[arg-type]
    for _ in range(6):  # bounded: first sight, the empty last page, then due
        await task._pass()
    assert channel.pushed == [("a", [H1])]
    assert await store.owed((b"", ""), 10) == []


def test_a_committed_block_is_parsed_once_for_the_wait_and_the_execution(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The feed parses each VALID private envelope of a block once (`committed_private`); the
    wait for owed payloads and the executor's input read that, not the block again."""
    parsed_data: list[bytes] = []
    real = executor.committed_transaction

    def counting(data: bytes) -> transaction_pb2.PrivateTransaction | None:
        parsed_data.append(data)
        return real(data)

    monkeypatch.setattr(executor, "committed_transaction", counting)
    block = _block([ME, OTHER])
    block.data.envelopes.append(block.data.envelopes[0])
    block.metadata.validation_codes.append(transaction_pb2.TX_VALIDATION_CODE_VALID)
    parsed = committed_private(block)
    assert owed_here(parsed, ME) == [H1, H1]
    item = executor.private_block(parsed, None)  # type: ignore[arg-type]
    assert item.items == ((0, "tx", H1), (1, "tx", H1))
    assert item.agreed == {0: (b"p" * 32, b"d" * 32), 1: (b"p" * 32, b"d" * 32)}
    assert len(parsed_data) == 2  # one per private envelope, for all three readings
