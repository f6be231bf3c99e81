"""Block cutting (BlockCutter) and the solo orderer handler (SoloOrderer), sans I/O.

Time is ticks: nothing here sleeps. Envelopes are opaque bytes of chosen sizes.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dltmw.core.block import block_hash, chain_error, verify_chain
from dltmw.core.cutter import BlockCutter
from dltmw.core.effects import Effects
from dltmw.core.handlers.base import DecidedBlock, PendingEnvelope
from dltmw.core.handlers.solo import SoloOrderer, Submit
from dltmw.core.hashing import ZERO_HASH, data_hash

CHANNEL = "ch1"


def env(name: str, size: int = 4) -> bytes:
    """An envelope of exactly `size` bytes that starts with `name`."""
    assert len(name) <= size
    return name.encode().ljust(size, b".")


# --- BlockCutter --------------------------------------------------------------------------------


def feed(cutter: BlockCutter, envelopes: Sequence[bytes]) -> list[list[bytes]]:
    batches: list[list[bytes]] = []
    for e in envelopes:
        batches.extend(cutter.add(e))
    return batches


@pytest.mark.parametrize(
    ("limits", "sizes", "batches", "left"),
    [
        ((3, 1000, 5), [4, 4, 4, 4], [[0, 1, 2]], [3]),
        ((3, 1000, 5), [4, 4], [], [0, 1]),
        ((10, 10, 5), [4, 4, 4], [[0, 1]], [2]),
        ((10, 8, 5), [4, 4], [], [0, 1]),
        ((10, 9, 5), [4, 4, 2], [[0, 1]], [2]),
        ((10, 8, 5), [20], [[0]], []),
        ((10, 8, 5), [4, 20], [[0], [1]], []),
        ((10, 8, 5), [4, 20, 4], [[0], [1]], [2]),
        ((2, 8, 5), [4, 4, 4, 4], [[0, 1], [2, 3]], []),
        ((1, 8, 5), [4, 20, 4], [[0], [1], [2]], []),
    ],
    ids=[
        "cuts-at-max-tx-count",
        "below-count-and-bytes-keeps-pending",
        "cuts-before-an-envelope-that-would-exceed-max-bytes",
        "exactly-max-bytes-is-not-exceeding",
        "one-byte-over-max-bytes-cuts-the-pending-batch",
        "oversize-envelope-alone-is-a-block-of-one",
        "oversize-envelope-cuts-pending-first-then-goes-alone",
        "after-oversize-the-cutter-starts-a-fresh-batch",
        "count-cuts-repeat",
        "count-one-cuts-every-envelope-even-oversize",
    ],
)
def test_cutter_add(
    limits: tuple[int, int, int], sizes: list[int], batches: list[list[int]], left: list[int]
) -> None:
    envelopes = [env(f"e{i}", size) for i, size in enumerate(sizes)]
    cutter = BlockCutter(*limits)
    assert feed(cutter, envelopes) == [[envelopes[i] for i in b] for b in batches]
    assert cutter.pending == tuple(envelopes[i] for i in left)


def test_cutter_timeout_cuts_after_timeout_ticks_since_first_envelope() -> None:
    cutter = BlockCutter(max_tx_count=10, max_bytes=1000, timeout_ticks=3)
    a, b = env("a"), env("b")
    assert cutter.add(a) == []
    assert cutter.tick() is None
    assert cutter.add(b) == []  # a later envelope does not restart the clock
    assert cutter.tick() is None
    assert cutter.tick() == [a, b]
    assert cutter.pending == ()


def test_cutter_tick_on_empty_does_nothing_and_does_not_age_the_next_batch() -> None:
    cutter = BlockCutter(max_tx_count=10, max_bytes=1000, timeout_ticks=2)
    for _ in range(5):
        assert cutter.tick() is None
    cutter.add(env("a"))
    assert cutter.tick() is None
    assert cutter.tick() == [env("a")]


def test_cutter_cut_by_count_resets_the_timeout() -> None:
    cutter = BlockCutter(max_tx_count=2, max_bytes=1000, timeout_ticks=2)
    cutter.add(env("a"))
    assert cutter.tick() is None
    assert cutter.add(env("b")) == [[env("a"), env("b")]]
    cutter.add(env("c"))
    assert cutter.tick() is None
    assert cutter.tick() == [env("c")]


@pytest.mark.parametrize(
    "limits",
    [(0, 10, 1), (1, 0, 1), (1, 10, 0), (-1, 10, 1)],
    ids=["zero-count", "zero-bytes", "zero-timeout", "negative-count"],
)
def test_cutter_refuses_non_positive_limits(limits: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError, match="positive"):
        BlockCutter(*limits)


# --- SoloOrderer --------------------------------------------------------------------------------


def solo(
    count: int = 2,
    max_bytes: int = 1000,
    timeout: int = 3,
    restored: Sequence[PendingEnvelope] = (),
    next_number: int = 1,
    last_hash: bytes = b"\x11" * 32,
) -> SoloOrderer:
    return SoloOrderer(
        CHANNEL, next_number, last_hash, BlockCutter(count, max_bytes, timeout), restored
    )


def envelopes_of(decided: DecidedBlock) -> list[bytes]:
    return list(decided.block.data.envelopes)


def test_submit_persists_with_increasing_seq_and_replies_in_order() -> None:
    orderer = solo(count=10)
    for i in range(3):
        orderer.step(Submit(env(f"e{i}"), token=f"tok{i}"))
    assert orderer.ready().is_empty()  # held until the next tick (module docstring)
    orderer.tick(1)
    ready = orderer.ready()
    assert ready.persist == tuple(PendingEnvelope(i + 1, env(f"e{i}")) for i in range(3))
    assert ready.replies == (("tok0", None), ("tok1", None), ("tok2", None))
    assert ready.decided == ()
    assert orderer.ready().is_empty()


def test_blocks_chain_and_consume_the_queue_prefix() -> None:
    last = b"\x11" * 32
    orderer = solo(count=2, last_hash=last, next_number=5)
    for i in range(5):
        orderer.step(Submit(env(f"e{i}"), token=i))
    ready = orderer.ready()
    assert [d.block.header.number for d in ready.decided] == [5, 6]
    assert [envelopes_of(d) for d in ready.decided] == [
        [env("e0"), env("e1")],
        [env("e2"), env("e3")],
    ]
    assert [d.consumed_seq for d in ready.decided] == [2, 4]
    previous = last
    for number, decided in enumerate(ready.decided, start=5):
        block = decided.block
        assert block.header.data_hash == data_hash(block.data.envelopes)
        assert chain_error(block, CHANNEL, number, previous) is None
        previous = block_hash(block)
    assert ready.replies == tuple((i, None) for i in range(4))  # e4 is held, not yet durable


def test_blocks_from_block_zero_verify_as_a_chain() -> None:
    orderer = solo(count=1, next_number=0, last_hash=ZERO_HASH)
    for i in range(3):
        orderer.step(Submit(env(f"e{i}"), token=i))
    blocks = [d.block for d in orderer.ready().decided]
    assert verify_chain(blocks, CHANNEL) == block_hash(blocks[-1])


def test_ready_drains_and_numbers_continue_across_calls() -> None:
    orderer = solo(count=1)
    orderer.step(Submit(env("a"), token="a"))
    first = orderer.ready()
    orderer.step(Submit(env("b"), token="b"))
    second = orderer.ready()
    assert [d.block.header.number for d in first.decided] == [1]
    assert [d.block.header.number for d in second.decided] == [2]
    assert second.decided[0].block.header.previous_hash == block_hash(first.decided[0].block)
    # "b" went into block 2 in the step that admitted it: the block makes it durable, so it is
    # not queued (test_envelopes_cut_in_their_own_step_are_not_queued); its seq is still 2.
    assert second.persist == ()
    assert second.decided[0].consumed_seq == 2


def test_oversize_envelope_after_pending_gives_two_blocks_with_right_seqs() -> None:
    orderer = solo(count=10, max_bytes=8)
    orderer.step(Submit(env("a", 4), token="a"))
    orderer.step(Submit(env("big", 20), token="big"))
    ready = orderer.ready()
    assert [envelopes_of(d) for d in ready.decided] == [[env("a", 4)], [env("big", 20)]]
    assert [d.consumed_seq for d in ready.decided] == [1, 2]


def test_tick_cuts_after_the_batch_timeout() -> None:
    orderer = solo(count=10, timeout=2)
    orderer.step(Submit(env("a"), token="a"))
    assert orderer.ready().is_empty()
    orderer.tick(1)  # not cut yet: queued durably and answered
    ready = orderer.ready()
    assert ready.persist == (PendingEnvelope(1, env("a")),) and ready.replies == (("a", None),)
    assert ready.decided == ()
    orderer.tick(2)
    ready = orderer.ready()
    assert [envelopes_of(d) for d in ready.decided] == [[env("a")]]
    assert ready.decided[0].consumed_seq == 1
    assert ready.persist == () and ready.replies == ()


def test_tick_with_nothing_queued_does_nothing() -> None:
    orderer = solo(timeout=1)
    for now in range(1, 4):
        orderer.tick(now)
    assert orderer.ready() == Effects()


def test_restore_re_cuts_the_same_batch_without_re_persisting() -> None:
    restored = [PendingEnvelope(7, env("x")), PendingEnvelope(8, env("y"))]
    orderer = solo(count=2, restored=restored, next_number=3)
    ready = orderer.ready()
    assert ready.persist == () and ready.replies == ()
    assert len(ready.decided) == 1
    assert envelopes_of(ready.decided[0]) == [env("x"), env("y")]
    assert ready.decided[0].consumed_seq == 8
    assert ready.decided[0].block.header.number == 3


def test_restore_partial_batch_then_new_submit_continues_the_seq() -> None:
    orderer = solo(count=2, restored=[PendingEnvelope(7, env("x"))])
    assert orderer.ready().is_empty()
    orderer.step(Submit(env("y"), token="y"))
    ready = orderer.ready()
    assert ready.persist == ()  # in the block of this step: the block makes it durable
    assert ready.replies == (("y", None),)
    assert [envelopes_of(d) for d in ready.decided] == [[env("x"), env("y")]]
    assert ready.decided[0].consumed_seq == 8


def test_restore_partial_batch_is_cut_by_timeout() -> None:
    orderer = solo(count=5, timeout=1, restored=[PendingEnvelope(3, env("x"))])
    orderer.tick(1)
    ready = orderer.ready()
    assert [envelopes_of(d) for d in ready.decided] == [[env("x")]]
    assert ready.decided[0].consumed_seq == 3


def test_step_refuses_anything_but_submit() -> None:
    with pytest.raises(TypeError):
        solo().step(b"raw envelope")


# --- adaptive cutting ("drained" events) ---------------------------------------------------------


def test_cutter_drained_cuts_the_pending_batch_and_resets_the_timeout() -> None:
    cutter = BlockCutter(max_tx_count=10, max_bytes=1000, timeout_ticks=2)
    assert cutter.drained() is None  # nothing pending: no empty block
    cutter.add(env("a"))
    assert cutter.tick() is None
    assert cutter.drained() == [env("a")]
    assert cutter.pending == ()
    cutter.add(env("b"))
    assert cutter.tick() is None  # the timeout counts from "b", not from "a"
    assert cutter.tick() == [env("b")]


def test_cutter_by_limits_only_ignores_drained() -> None:
    cutter = BlockCutter(max_tx_count=10, max_bytes=1000, timeout_ticks=2, by_limits_only=True)
    cutter.add(env("a"))
    assert cutter.drained() is None
    assert cutter.pending == (env("a"),)
    assert cutter.tick() is None
    assert cutter.tick() == [env("a")]


def test_cutter_limits_stay_upper_bounds_with_drained() -> None:
    cutter = BlockCutter(max_tx_count=2, max_bytes=1000, timeout_ticks=5)
    assert feed(cutter, [env("a"), env("b"), env("c")]) == [[env("a"), env("b")]]
    assert cutter.drained() == [env("c")]


def run_with_drains(orderer: SoloOrderer, script: Sequence[str]) -> list[list[bytes]]:
    """Feed a script: an envelope name is a Submit, "|" a drained event, "t" a tick."""
    blocks: list[list[bytes]] = []
    now = 0
    for item in script:
        if item == "|":
            orderer.drained()
        elif item == "t":
            now += 1
            orderer.tick(now)
        else:
            orderer.step(Submit(env(item), token=item))
        blocks.extend(envelopes_of(d) for d in orderer.ready().decided)
    return blocks


@given(
    st.lists(st.sampled_from(["a", "b", "c", "d", "|", "t"]), max_size=60),
    st.integers(1, 4),
    st.integers(1, 3),
)
def test_same_inputs_and_drains_give_the_same_blocks(
    script: list[str], count: int, timeout: int
) -> None:
    """Determinism of the adaptive rule, and what it promises: every block is within the
    limits, the blocks hold the submitted envelopes in order, and nothing submitted before a
    drained event is still pending after it."""
    first = run_with_drains(solo(count=count, timeout=timeout), script)
    assert first == run_with_drains(solo(count=count, timeout=timeout), script)
    submitted = [env(x) for x in script if x not in ("|", "t")]
    flat = [e for block in first for e in block]
    assert flat == submitted[: len(flat)]
    assert all(1 <= len(block) <= count for block in first)
    if "|" in script:
        before_last_drain = [x for x in script[: len(script) - script[::-1].index("|")]]
        assert len(flat) >= len([x for x in before_last_drain if x not in ("|", "t")])


def test_envelopes_cut_in_their_own_step_are_not_queued() -> None:
    """One durable write per block at low load: the block holds the envelope, and the
    acknowledgement follows the block's commit (effects order)."""
    orderer = solo(count=10)
    orderer.step(Submit(env("a"), token="a"))
    orderer.step(Submit(env("b"), token="b"))
    orderer.drained()
    ready = orderer.ready()
    assert ready.persist == ()
    assert [envelopes_of(d) for d in ready.decided] == [[env("a"), env("b")]]
    assert ready.replies == (("a", None), ("b", None))
    orderer.step(Submit(env("c"), token="c"))  # not drained: held, then queued at the tick
    assert orderer.ready().is_empty()
    orderer.tick(1)
    ready = orderer.ready()
    assert ready.persist == (PendingEnvelope(3, env("c")),) and ready.decided == ()
    assert ready.replies == (("c", None),)
    orderer.step(Submit(env("d"), token="d"))
    orderer.drained()  # "c" was queued by an earlier step, "d" by this one
    ready = orderer.ready()
    assert ready.persist == () and ready.replies == (("d", None),)
    assert [d.consumed_seq for d in ready.decided] == [4]


def test_an_envelope_held_for_a_busy_follower_is_made_durable_by_its_block_alone() -> None:
    """The lone transaction that arrives during a block's write (lane lat16): its step does not
    cut (the followers have not taken the last block yet), the next step does (a nudge: they
    have): one durable write, the block's, and the answer after it — no queue write between."""
    orderer = solo(count=10)
    orderer.step(Submit(env("a"), token="a"))  # the driver says nothing: downstream busy
    assert orderer.ready().is_empty()  # neither queued nor answered yet
    orderer.drained()  # the nudge's step
    ready = orderer.ready()
    assert ready.persist == ()
    assert [envelopes_of(d) for d in ready.decided] == [[env("a")]]
    assert ready.replies == (("a", None),)
    orderer.tick(1)  # nothing left held: the tick queues nothing
    assert orderer.ready().is_empty()


@given(
    st.lists(st.sampled_from(["a", "b", "bb", "c", "|", "t", "r"]), max_size=80),
    st.integers(1, 4),
    st.integers(1, 3),
)
def test_an_answered_envelope_is_durable_and_every_envelope_is_answered_by_the_next_tick(
    script: list[str], count: int, timeout: int
) -> None:
    """The durability rule with held envelopes: whenever `ready()` answers a submission, its
    envelope is in a block of this or an earlier `ready()` (applied before the answer) or was
    queued durably by this or an earlier one — never answered on the promise of a later write;
    each is answered exactly once; and none is still unanswered after a tick ("r" = the driver
    executes `ready()`; "bb" is larger than the batch's byte limit)."""
    orderer = solo(count=count, max_bytes=8, timeout=timeout)
    seq_of: dict[str, int] = {}
    durable: set[int] = set()
    consumed = 0
    answered: list[str] = []
    now = 0

    def execute() -> None:
        nonlocal consumed
        ready = orderer.ready()
        durable.update(p.seq for p in ready.persist)  # persist, then apply, then reply
        for decided in ready.decided:
            consumed = max(consumed, decided.consumed_seq)
        for token, _ in ready.replies:
            seq = seq_of[token]
            assert seq in durable or seq <= consumed, f"{token} answered before it was durable"
            answered.append(token)

    for i, item in enumerate(script):
        if item == "|":
            orderer.drained()
        elif item == "t":
            now += 1
            orderer.tick(now)
            execute()
            assert sorted(answered) == sorted(seq_of), "an envelope outlived a tick unanswered"
        elif item == "r":
            execute()
        else:
            token = f"{item}{i}"
            seq_of[token] = len(seq_of) + 1
            orderer.step(Submit(env(item, 10 if item == "bb" else 4), token=token))
    orderer.tick(now + 1)
    execute()
    assert sorted(answered) == sorted(seq_of) and len(set(answered)) == len(answered)


def _endorsed(reads: Sequence[str], writes: Sequence[str]) -> bytes:
    from dltmw.v1 import common_pb2, proposal_pb2, rwset_pb2, transaction_pb2

    rw = rwset_pb2.ReadWriteSet(
        namespace="bank",
        reads=[rwset_pb2.KVRead(key=k) for k in reads],
        writes=[rwset_pb2.KVWrite(key=k, value=b"1") for k in writes],
    )
    response = proposal_pb2.ProposalResponsePayload(rwset=rw)
    tx = transaction_pb2.Transaction(response_payload=response.SerializeToString())
    header = common_pb2.Header(type=common_pb2.HEADER_TYPE_ENDORSER_TRANSACTION)
    payload = common_pb2.Payload(header=header.SerializeToString(), data=tx.SerializeToString())
    return common_pb2.Envelope(payload=payload.SerializeToString()).SerializeToString()


def test_a_reordering_cutter_puts_the_reader_first_and_restores_the_same_block() -> None:
    writer, reader = _endorsed([], ["k"]), _endorsed(["k"], ["other"])

    def orderer(restored: Sequence[PendingEnvelope] = ()) -> SoloOrderer:
        cutter = BlockCutter(2, 10_000, 3, reorder=True)
        return SoloOrderer(CHANNEL, 1, b"\x11" * 32, cutter, restored)

    live = orderer()
    live.step(Submit(writer, token=1))
    live.step(Submit(reader, token=2))
    (decided,) = live.ready().decided
    assert envelopes_of(decided) == [reader, writer]
    assert decided.consumed_seq == 2  # the queue prefix consumed is the same two envelopes
    plain = BlockCutter(2, 10_000, 3)
    assert plain.add(writer) == [] and plain.add(reader) == [[writer, reader]]
    (again,) = orderer([PendingEnvelope(1, writer), PendingEnvelope(2, reader)]).ready().decided
    assert again.block == decided.block  # a restart cuts the same block
