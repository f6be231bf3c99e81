"""Queued private delivery: the sender's outbox rows (ledger/private_outbox.py through
PrivateStore), the redelivery task's retry and backoff (runtime/roles/privacy/redelivery.py,
with a real store and a fake pushing channel: the I/O boundary), and which payloads a committed
block makes a node wait for (executor.owed_here). The store runs on both backends (`psite`)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from private_backends import PrivateSite

from dltmw.aio.outbox_retry import PAGE_S
from dltmw.core.errors import TransientError
from dltmw.core.privacy import agreement as ag
from dltmw.ledger import private_outbox as outbox
from dltmw.ledger.private_store import NewPayload, PrivateStore
from dltmw.runtime.roles.privacy import executor
from dltmw.runtime.roles.privacy import redelivery as rd
from dltmw.runtime.roles.privacy.executor import committed_private, owed_here
from dltmw.v1 import (
    block_pb2,
    common_pb2,
    errors_pb2,
    privacy_manager_service_pb2,
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
    assert await store.owed((b"", ""), 10) == [(H1, "a", None), (H1, "b", None), (H2, "a", None)]
    assert await store.owed((H1, "a"), 1) == [(H1, "b", None)]  # paging after a row
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
        self.nodes = {"a", "b"}  # members of the channel config in force
        self.rotated: set[str] = set()  # members whose key is not the payloads' any more
        self.delivery_expiry_s = 0.0  # never

    def members(self) -> frozenset[str]:
        return frozenset(self.nodes)

    def still_recipient(self, raw: bytes, node_id: str) -> bool:
        return node_id not in self.rotated

    async def left_group(self, node_id: str, items: list[tuple[bytes, bytes]]) -> list[bytes]:
        return []  # no payload of a privacy group (test_private_given_up.py)

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


class FakeClock:
    """The redelivery's clock (`loop_now`), moved by the test: no timed assertion."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_node_heard_from_is_pushed_before_its_backoff_would_allow(
    store: PrivateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """review of priv14, item 4: a recipient back (it answered a collection's AgreeBatch, or a
    Send's push) waited for the rest of its backoff, up to BACKOFF_MAX_S, before the queue
    pushed. Now `heard_from` makes it due within BACKOFF_MIN_S. Red with `heard_from` a no-op:
    half a second later nothing was pushed (its backoff is at least 5 s)."""
    clock = FakeClock()
    monkeypatch.setattr(rd, "loop_now", clock)
    monkeypatch.setattr(rd, "FIRST_DELAY_S", 0.0)
    await store.store_payloads([payload(H1)], [(H1, "a")])
    channel = FakeChannel(store)
    task = rd.Redelivery(channel)  # type: ignore[arg-type]
    await task._pass()  # first sight
    for _ in range(6):  # six failed pushes, each when due: the backoff reaches its ceiling
        await task._pass()
        clock.now = task.schedule._next["a"][0]
    await task._pass()
    due, failures = task.schedule._next["a"]
    assert failures == 7 and due - clock.now >= rd.BACKOFF_MAX_S / 2
    channel.down = False
    task.heard_from("a")  # it answered another call
    task.heard_from("b")  # nothing owed to b: no entry made (it would spin the task)
    assert "b" not in task.schedule._next
    clock.now += rd.BACKOFF_MIN_S
    await task._pass()
    assert channel.pushed == [("a", [H1])]
    assert await store.owed((b"", ""), 10) == []


async def test_a_node_whose_rows_all_went_stops_setting_the_pace(
    store: PrivateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node whose rows went without a delivery (purged) kept its schedule entry, whose due
    time in the past made every pass wait PAGE_S while another node stayed pending: a pass
    over the outbox every 50 ms. Red without `RetrySchedule.retain` at the end of a pass."""
    clock = FakeClock()
    monkeypatch.setattr(rd, "loop_now", clock)
    monkeypatch.setattr(rd, "FIRST_DELAY_S", 0.0)
    await store.store_payloads([payload(H1), payload(H2)], [(H1, "a"), (H2, "b")])
    channel = FakeChannel(store)
    task = rd.Redelivery(channel)  # type: ignore[arg-type]
    await task._pass()  # first sight of both
    await task._pass()  # both fail, back off
    await store.transaction(lambda txn: txn.remove_payloads([H1], "tx", 3))  # a's row goes
    clock.now += rd.BACKOFF_MAX_S  # a's entry (and b's) long due
    wait = await task._pass()  # b fails again; a is not in the table
    assert "a" not in task.schedule._next
    assert wait > PAGE_S


def test_what_a_pass_gives_up_is_decided_from_the_rows_alone() -> None:
    page = [(H1, "a", 100.0), (H2, "gone", 100.0), (H3, "a", 190.0), (H3, "b", None)]
    removed, expired, unstamped = rd.give_up(page, {"a", "b"}, 200.0, 50.0)
    assert removed == [(H2, "gone")]  # not a member of the config in force: whatever its age
    assert expired == [(H1, "a")]  # queued 100 s ago, 50 s allowed
    assert unstamped == [(H3, "b")]  # from before the column: stamped now, not expired now
    assert rd.give_up(page, {"a", "b"}, 200.0, 0.0)[1] == []  # 0: never expires


async def test_a_row_given_up_stays_for_the_senders_view_and_is_no_longer_owed(
    store: PrivateStore,
) -> None:
    await store.store_payloads([payload(H1), payload(H2)], [(H1, "a"), (H2, "a")], 5.0)
    assert await store.give_up([([(H1, "a")], outbox.EXPIRED)]) == [1]
    assert await store.give_up([([(H1, "a")], outbox.EXPIRED)]) == [0]  # once
    assert await store.owed((b"", ""), 10) == [(H2, "a", 5.0)]
    assert await store.pending_nodes(H1) == []
    assert await store.delivery_states(H1) == {"a": outbox.EXPIRED}
    assert await store.outbox_rows((b"", ""), 10) == [
        (H1, "a", 5.0, outbox.EXPIRED),
        (H2, "a", 5.0, outbox.OWED),
    ]
    await store.store_payloads([], [(H1, "a")], 9.0)  # queued again: it stays given up
    assert await store.delivery_states(H1) == {"a": outbox.EXPIRED}


async def test_redelivery_gives_up_removed_expired_and_rekeyed_recipients_once(
    store: PrivateStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """review of priv14, item 1: a row for a node that left the channel, or that never came
    back, was pushed every <= 10 s for ever. Now it is given up with one WARNING and kept
    for the sender's view. Red without the pass's `_settle` (or the rekey check in
    `_deliver`): the rows stay owed and "gone", "a" and "b" are pushed again and again."""
    clock = FakeClock()
    monkeypatch.setattr(rd, "loop_now", clock)
    monkeypatch.setattr(rd, "FIRST_DELAY_S", 0.0)
    wall = [datetime(2026, 12, 5, 4, 0, tzinfo=UTC)]
    monkeypatch.setattr(rd, "utc_now", lambda: wall[0])
    queued_at = wall[0].timestamp()
    await store.store_payloads(
        [payload(H1), payload(H2), payload(H3)],
        [(H1, "gone"), (H2, "a"), (H3, "b")],
        queued_at,
    )
    channel = FakeChannel(store)
    channel.down = False
    channel.nodes = {"a", "b"}  # "gone" left the channel
    channel.rotated = {"b"}  # b's key is not the one H3 was sealed for
    channel.delivery_expiry_s = 3600.0
    task = rd.Redelivery(channel)  # type: ignore[arg-type]
    channel.down = True  # a is down: its row stays owed until it expires
    with caplog.at_level("WARNING", logger=rd.__name__):
        for _ in range(3):  # first sight, then due: a fails; "gone" and b given up
            await task._pass()
            clock.now += rd.BACKOFF_MAX_S
        assert await store.delivery_states(H1) == {"gone": outbox.REMOVED}
        assert await store.delivery_states(H3) == {"b": outbox.REMOVED}
        assert await store.delivery_states(H2) == {"a": outbox.OWED}
        wall[0] += timedelta(seconds=3601)  # a never came back
        for _ in range(3):
            await task._pass()
            clock.now += rd.BACKOFF_MAX_S
    assert await store.owed((b"", ""), 10) == []
    assert await store.delivery_states(H2) == {"a": outbox.EXPIRED}
    given_up = [r.getMessage() for r in caplog.records if "given up" in r.getMessage()]
    assert len(given_up) == 3, given_up  # gone, b, then a: each once
    assert channel.pushed == []  # nothing pushed to a removed or rekeyed node
    assert task.given_up_by_reason() == {"recipient_removed": 2, "expired": 1}  # the metric
    assert await task._pass() == rd.IDLE_S  # nothing owed: the task idles


async def test_rows_queued_before_the_time_was_recorded_expire_a_period_later(
    store: PrivateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upgraded sender's rows have no `since`: stamped at the first pass, never expired at
    once (an expiry counted from 1970 would drop every row of an upgraded node)."""
    monkeypatch.setattr(rd, "FIRST_DELAY_S", 3600.0)  # not pushed during the test
    await store.store_payloads([payload(H1)], [(H1, "a")])  # since: none
    channel = FakeChannel(store)
    channel.delivery_expiry_s = 60.0
    task = rd.Redelivery(channel)  # type: ignore[arg-type]
    await task._pass()
    [(_, _, since)] = await store.owed((b"", ""), 10)
    assert since is not None and abs(since - datetime.now(UTC).timestamp()) < 600


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


async def test_the_senders_listing_and_abandon(store: PrivateStore) -> None:
    """`dltmw private pending` / PendingDeliveries pages the outbox, given-up rows included;
    AbandonDelivery gives up what is still owed of one payload (then NOT_FOUND)."""
    from types import SimpleNamespace

    from dltmw.core.errors import ClientError
    from dltmw.runtime.roles.privacy.manager import PrivacyManager

    await store.store_payloads([payload(H1), payload(H2)], [(H1, "a"), (H1, "b"), (H2, "a")], 7.0)
    await store.give_up([([(H1, "b")], outbox.REMOVED)])
    manager = PrivacyManager.__new__(PrivacyManager)
    redelivery = rd.Redelivery(FakeChannel(store))  # type: ignore[arg-type]
    manager.channels = {"c": SimpleNamespace(store=store, redelivery=redelivery)}  # type: ignore[dict-item]
    P = privacy_manager_service_pb2
    page = await manager.pending_deliveries("c", (b"", ""), 2)
    assert [(d.payload_hash, d.node_id, d.state) for d in page.deliveries] == [
        (H1, "a", P.DELIVERY_STATE_PENDING),
        (H1, "b", P.DELIVERY_STATE_RECIPIENT_REMOVED),
    ]
    assert page.deliveries[0].queued_at.seconds == 7
    rest = await manager.pending_deliveries("c", (H1, "b"), 2)
    assert [(d.payload_hash, d.node_id) for d in rest.deliveries] == [(H2, "a")]
    assert (await manager.abandon_delivery("c", H1)).abandoned == 1  # b was given up already
    assert await store.delivery_states(H1) == {"a": outbox.ABANDONED, "b": outbox.REMOVED}
    assert await store.owed((b"", ""), 10) == [(H2, "a", 7.0)]
    with pytest.raises(ClientError) as nothing:
        await manager.abandon_delivery("c", H1)
    assert nothing.value.reason == errors_pb2.ERROR_REASON_NOT_FOUND


async def test_an_outbox_from_before_the_time_and_state_columns_is_migrated(
    psite: PrivateSite,
) -> None:
    """A store written by a release without `since` and `state` opens with both added: its
    rows owed, with no time (stamped by the next pass). Red without the migration (sqlite's
    ALTER in `private_outbox.setup`, PostgreSQL's ADD COLUMN IF NOT EXISTS): the read fails."""
    store = await psite.open()
    await store.close()
    psite.query("ALTER TABLE outbox DROP COLUMN since")
    psite.query("ALTER TABLE outbox DROP COLUMN state")
    psite.query("INSERT INTO outbox VALUES (?, ?)", (H1, "a"))
    store = await psite.open()
    try:
        assert await store.owed((b"", ""), 10) == [(H1, "a", None)]
        assert await store.delivery_states(H1) == {"a": outbox.OWED}
    finally:
        await store.close()


class SlowChannel(FakeChannel):
    """A push that waits (a connection to a node coming back) until `go` is set."""

    def __init__(self, store: PrivateStore) -> None:
        super().__init__(store)
        self.down = False
        self.started = asyncio.Event()
        self.go = asyncio.Event()

    async def push_payloads(
        self, node_id: str, items: list[tuple[bytes, private_payload_pb2.EncryptedPayload]]
    ) -> int:
        self.started.set()
        await self.go.wait()
        return await super().push_payloads(node_id, items)


async def test_abandon_waits_for_a_push_under_way_and_nothing_is_pushed_after_it(
    store: PrivateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AbandonDelivery while a pass is pushing the payload (review57: the push landed after
    the abandon answered, and its acknowledgement deleted the ABANDONED row): the abandon
    answers only once that push ended, and no later pass pushes it. Red without the pass's
    lock (`Redelivery._passing`): the abandon answers while the push is still waiting."""
    monkeypatch.setattr(rd, "FIRST_DELAY_S", 0.0)
    await store.store_payloads([payload(H1), payload(H2)], [(H1, "a"), (H2, "a")], 7.0)
    channel = SlowChannel(store)
    task = rd.Redelivery(channel)  # type: ignore[arg-type]
    await task._pass()  # first sight of "a": due now
    pushing = asyncio.create_task(task._pass())
    await asyncio.wait_for(channel.started.wait(), 5)
    abandoning = asyncio.create_task(task.abandon(H1))
    for _ in range(20):  # bounded: let the abandon run as far as it can
        await asyncio.sleep(0)
    assert not abandoning.done(), "abandoned while its push was under way"
    channel.go.set()
    await asyncio.wait_for(pushing, 5)
    assert await asyncio.wait_for(abandoning, 5) == []  # delivered first: nothing left owed
    assert channel.pushed == [("a", [H1, H2])]
    # a payload owed again and abandoned between passes is pushed no more
    await store.store_payloads([payload(H3)], [(H3, "a")], 8.0)
    assert await task.abandon(H3) == ["a"]
    task.schedule._next.pop("a", None)
    await task._pass()
    await task._pass()
    assert channel.pushed == [("a", [H1, H2])]
    assert await store.delivery_states(H3) == {"a": outbox.ABANDONED}
