"""The jetstream cutter (`core/handlers/jetstream.py`): blocks are a pure function of the stream.

Every orderer consumes the same stream; whatever its ticks, drain events, batching into steps,
and restarts (resuming after the position stored with its last block), it must cut the same
chain, and time-to-cut markers (published by any orderer, any number of times) cut block n only
while block n is pending.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dltmw.core.block import block_hash, verify_chain
from dltmw.core.cutter import BlockCutter
from dltmw.core.errors import InvariantViolation
from dltmw.core.handlers.jetstream import (
    CutBlock,
    Entry,
    JetStreamCutter,
    StreamBatch,
    StreamEnvelope,
    TimeToCut,
)
from dltmw.core.hashing import ZERO_HASH
from dltmw.v1 import common_pb2

CHANNEL = "ch1"


def env(name: str, size: int = 4) -> bytes:
    return name.encode().ljust(size, b".")


def config_update(name: str) -> bytes:
    header = common_pb2.Header(type=common_pb2.HEADER_TYPE_CONFIG_UPDATE).SerializeToString()
    payload = common_pb2.Payload(header=header, data=name.encode()).SerializeToString()
    return common_pb2.Envelope(payload=payload).SerializeToString()


def cutter(
    count: int = 3, size: int = 100, timeout: int = 2, limits_only: bool = False
) -> JetStreamCutter:
    return JetStreamCutter(
        CHANNEL, 0, ZERO_HASH, 0, BlockCutter(count, size, timeout, by_limits_only=limits_only)
    )


def stream(*items: bytes | int | tuple[bytes, ...]) -> list[Entry]:
    """Entries numbered from 1: bytes are envelopes, tuples batches of envelopes (one stream
    message), ints are markers naming a block."""
    return [
        TimeToCut(i, item)
        if isinstance(item, int)
        else StreamBatch(i, item)
        if isinstance(item, tuple)
        else StreamEnvelope(i, item)
        for i, item in enumerate(items, start=1)
    ]


def flat(entries: Sequence[Entry]) -> list[bytes]:
    """The envelopes of the stream, in order."""
    out: list[bytes] = []
    for e in entries:
        if isinstance(e, StreamEnvelope):
            out.append(e.envelope)
        elif isinstance(e, StreamBatch):
            out.extend(e.envelopes)
    return out


def run(core: JetStreamCutter, entries: Sequence[Entry]) -> list[CutBlock]:
    for entry in entries:
        core.step(entry)
    return list(core.ready().decided)


def contents(blocks: Sequence[CutBlock]) -> list[list[bytes]]:
    return [list(b.block.data.envelopes) for b in blocks]


# --- the rules ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        pytest.param((env("a"), env("b"), env("c")), [["a...", "b...", "c..."]], id="count-cuts"),
        pytest.param((env("a"), 0), [["a..."]], id="marker-for-the-pending-block-cuts-it"),
        pytest.param((env("a"), 0, 0), [["a..."]], id="duplicate-marker-is-ignored"),
        pytest.param((env("a"), 0, env("b"), 0), [["a..."]], id="stale-marker-is-ignored"),
        pytest.param((env("a"), 0, env("b"), 1), [["a..."], ["b..."]], id="next-marker-cuts-next"),
        pytest.param((env("a"), 5), [], id="marker-for-a-future-block-is-ignored"),
        pytest.param((0, env("a")), [], id="marker-with-nothing-pending-cuts-nothing"),
    ],
)
def test_cutting_rules(items: tuple[bytes | int, ...], expected: list[list[str]]) -> None:
    blocks = run(cutter(), stream(*items))
    assert contents(blocks) == [[e.encode() for e in b] for b in expected]


def test_config_update_is_cut_alone_after_the_pending_batch() -> None:
    cfg = config_update("x")
    blocks = run(cutter(), stream(env("a"), cfg, env("b")))
    assert contents(blocks) == [[b"a..."], [cfg]]
    assert [b.position for b in blocks] == [1, 2]


def test_blocks_chain_from_block_zero() -> None:
    blocks = run(cutter(count=2), stream(*(env(str(i)) for i in range(6))))
    verify_chain([b.block for b in blocks], CHANNEL)


def test_positions_split_the_stream_where_each_block_ends() -> None:
    big = env("big", 60)
    blocks = run(cutter(count=3, size=100), stream(env("a", 50), big, 1))
    # `big` overflows the bytes: block 0 ends at entry 1; marker 3 (block 1) cuts `big`
    assert contents(blocks) == [[env("a", 50)], [big]]
    assert [b.position for b in blocks] == [1, 3]


def test_a_block_may_end_inside_a_batch_and_a_restart_resumes_there() -> None:
    entries = stream(env("a"), (env("b"), env("c"), env("d"), env("e")), 1)
    blocks = run(cutter(count=3), entries)
    # block 0 = a b c ends inside entry 2 (after its 2nd envelope); block 1 = d e, cut by the
    # marker at 3
    assert contents(blocks) == [[b"a...", b"b...", b"c..."], [b"d...", b"e..."]]
    assert [(b.position, b.taken) for b in blocks] == [(1, 2), (3, 0)]
    first = blocks[0]
    again = JetStreamCutter(
        CHANNEL, 1, block_hash(first.block), first.position, BlockCutter(3, 100, 2), taken=2
    )
    assert contents(run(again, entries)) == contents(blocks[1:])


def test_a_batch_that_ends_a_block_exactly_ends_at_its_own_entry() -> None:
    blocks = run(cutter(count=3), stream((env("a"), env("b"), env("c")), env("d")))
    assert [(b.position, b.taken) for b in blocks] == [(1, 0)]


def test_redelivered_entries_are_ignored() -> None:
    entries = stream(env("a"), env("b"), env("c"))
    core = cutter()
    blocks = run(core, [*entries[:2], entries[0], entries[1], entries[2]])
    assert contents(blocks) == [[b"a...", b"b...", b"c..."]]


def test_a_gap_in_the_stream_is_a_broken_invariant() -> None:
    core = cutter()
    core.step(StreamEnvelope(1, env("a")))
    with pytest.raises(InvariantViolation, match="skipped"):
        core.step(StreamEnvelope(3, env("c")))


def test_step_refuses_anything_but_stream_entries() -> None:
    with pytest.raises(TypeError):
        cutter().step(b"raw")  # type: ignore[arg-type]


# --- markers are asked for, never cut locally ----------------------------------------------------


def test_timeout_asks_for_a_marker_and_cuts_nothing_itself() -> None:
    core = cutter(timeout=2)
    core.step(StreamEnvelope(1, env("a")))
    core.tick(1)
    assert core.ready().send == ()
    core.tick(2)
    out = core.ready()
    assert out.send == ((0, 0),)
    assert out.decided == ()


def test_a_lost_marker_is_asked_again_after_another_timeout() -> None:
    core = cutter(timeout=1)
    core.step(StreamEnvelope(1, env("a")))
    core.tick(1)
    core.tick(2)
    assert core.ready().send == ((0, 0), (0, 0))


def test_drained_asks_once_per_block_unless_limits_only() -> None:
    core = cutter()
    core.drained()
    assert core.ready().send == ()  # nothing pending
    core.step(StreamEnvelope(1, env("a")))
    core.drained()
    core.drained()
    assert core.ready().send == ((0, 0),)
    limits = cutter(limits_only=True)
    limits.step(StreamEnvelope(1, env("a")))
    limits.drained()
    assert limits.ready().send == ()


# --- the property: same stream, same chain, on every orderer --------------------------------------


@dataclass(frozen=True)
class Schedule:
    """One orderer's own life: where it steps, ticks, drains, and restarts."""

    actions: tuple[tuple[str, int], ...]


@st.composite
def streams(draw: st.DrawFn) -> list[Entry]:
    """Envelopes of varied sizes (some config updates), alone or in batches of up to 7 (one
    stream message per Broadcast batch), interleaved with markers from several orderers, each
    naming a block number near the front (stale, current, or ahead)."""

    def envelope(i: int) -> bytes:
        kind = draw(st.sampled_from(["env", "env", "env", "big", "cfg"]))
        if kind == "cfg":
            return config_update(f"c{i}")
        return env(f"e{i}", draw(st.integers(4, 70 if kind == "big" else 20)))

    items: list[bytes | int | tuple[bytes, ...]] = []
    for i in range(draw(st.integers(0, 40))):
        kind = draw(st.sampled_from(["one", "one", "batch", "marker"]))
        if kind == "marker":
            items.append(draw(st.integers(0, 12)))
        elif kind == "batch":
            items.append(tuple(envelope(i * 10 + j) for j in range(draw(st.integers(1, 7)))))
        else:
            items.append(envelope(i * 10))
    return stream(*items)


schedules = st.lists(
    st.tuples(st.sampled_from(["step", "tick", "drain", "restart"]), st.integers(1, 5)),
    max_size=60,
)


def consume(entries: Sequence[Entry], actions: Sequence[tuple[str, int]]) -> list[CutBlock]:
    """One orderer consuming `entries` under its own schedule; a restart keeps only what was
    committed (the blocks) and resumes after the last block's position."""
    chain: list[CutBlock] = []

    def fresh() -> JetStreamCutter:
        last = chain[-1] if chain else None
        number = len(chain)
        last_hash = block_hash(last.block) if last is not None else ZERO_HASH
        position = last.position if last is not None else 0
        taken = last.taken if last is not None else 0
        cutter = BlockCutter(3, 60, 2)
        return JetStreamCutter(CHANNEL, number, last_hash, position, cutter, taken=taken)

    core = fresh()
    queue = list(entries)
    now = 0
    for action, n in [*actions, ("step", len(entries) + 1)]:
        if action == "step":
            for entry in [e for e in queue if e.seq > core.position][:n]:
                core.step(entry)
        elif action == "tick":
            now += 1
            core.tick(now)
        elif action == "drain":
            core.drained()
        chain.extend(core.ready().decided)
        if action == "restart":
            core = fresh()
    return chain


@settings(max_examples=300, deadline=None)
@given(streams(), schedules, schedules)
def test_any_two_orderers_cut_the_same_chain(
    entries: list[Entry], one: list[tuple[str, int]], other: list[tuple[str, int]]
) -> None:
    a = consume(entries, one)
    b = consume(entries, other)
    assert [x.block.SerializeToString() for x in a] == [y.block.SerializeToString() for y in b]
    assert [(x.position, x.taken) for x in a] == [(y.position, y.taken) for y in b]
    verify_chain([x.block for x in a], CHANNEL)
    # every envelope is in at most one block, in stream order, and only the tail may be pending
    ordered = flat(entries)
    cut = [bytes(e) for x in a for e in x.block.data.envelopes]
    assert cut == ordered[: len(cut)]
