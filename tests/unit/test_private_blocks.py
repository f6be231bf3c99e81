"""The private executor's core: reads see the core's own pending writes over the store (a
property against a naive merged state), and a block the feed repeats is skipped."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from dltmw.core.privacy.blocks import CURSOR_EVERY, PendingWrites, PrivateBlock, PrivateExecution
from dltmw.core.privacy.envelope import PrivacyKey
from dltmw.core.rwset import StateEntry, StateWrite, Version

NS = "bank"
KEYS = st.sampled_from(["a", "b", "c", "d", "e", "f"])


class Store:
    """A committed private state (the store's view)."""

    def __init__(self, state: dict[str, bytes]) -> None:
        self.state = state

    def get(self, namespace: str, key: str) -> tuple[bytes, Version] | None:
        value = self.state.get(key) if namespace == NS else None
        return None if value is None else (value, Version(1, 0))

    def range(self, namespace: str, start: str, end: str, limit: int) -> list[StateEntry]:
        keys = sorted(
            k for k in self.state if namespace == NS and k >= start and (not end or k < end)
        )
        return [StateEntry(k, self.state[k], Version(1, 0)) for k in keys[:limit]]

    def payload(self, payload_hash: bytes) -> bytes | None:
        return None


@settings(max_examples=200, deadline=None)
@given(
    committed=st.dictionaries(KEYS, st.binary(min_size=1, max_size=2)),
    writes=st.dictionaries(KEYS, st.none() | st.binary(min_size=1, max_size=2)),
    start=KEYS,
    end=st.sampled_from(["", "c", "e", "g"]),
    limit=st.integers(0, 7),
)
def test_pending_writes_over_the_store_read_like_the_merged_state(
    committed: dict[str, bytes],
    writes: dict[str, bytes | None],
    start: str,
    end: str,
    limit: int,
) -> None:
    pending = {(NS, k): StateWrite(NS, k, v, Version(2, 0)) for k, v in writes.items()}
    view = PendingWrites(Store(committed), pending)
    merged = {**committed, **writes}
    model = sorted(
        k for k, v in merged.items() if v is not None and k >= start and (not end or k < end)
    )
    assert [e.key for e in view.range(NS, start, end, limit)] == model[:limit]
    for entry in view.range(NS, start, end, limit):
        assert entry.value == merged[entry.key]
    for key in "abcdefg":
        got = view.get(NS, key)
        assert (None if got is None else got[0]) == merged.get(key)


def test_a_block_below_the_cursor_is_skipped_and_heights_are_reported() -> None:
    core = PrivateExecution(PrivacyKey(os.urandom(32)), lambda _name: None, next_block=5)
    view = Store({})
    core.step(PrivateBlock(4, ((0, "t", b"h" * 32),), view))  # a restarted feed repeats it
    core.step(PrivateBlock(5, (), view))
    core.step(PrivateBlock(6, ((0, "t6", b"x" * 32),), view))
    effects = core.ready()
    assert effects.replies == ((5, 6), (6, 7))
    assert [e.number for e in effects.decided] == [6]
    (outcome,) = effects.decided[0].outcomes
    assert outcome.tx_id == "t6" and outcome.writes == ()  # not held: the hash is recorded only
    assert core.next_block == 7 and core.ready().is_empty()


def test_the_cursor_is_recorded_every_cursor_every_blocks_without_private_effects() -> None:
    """A run of blocks with no private transaction still moves the stored cursor (an empty
    `Executed`), so a restart does not re-read them all from the last private block."""
    core = PrivateExecution(PrivacyKey(os.urandom(32)), lambda _name: None, next_block=10)
    view = Store({})
    for number in range(10, 10 + 3 * CURSOR_EVERY + 5):
        core.step(PrivateBlock(number, (), view))
    decided = core.ready().decided
    assert [e.number + 1 for e in decided] == [10 + k * CURSOR_EVERY for k in (1, 2, 3)]
    assert all(e.outcomes == () and e.purges == () for e in decided)
    core.step(PrivateBlock(10 + 3 * CURSOR_EVERY + 5, ((0, "t", b"h" * 32),), view))
    (with_tx,) = core.ready().decided  # a block with effects is recorded at once, as before
    assert with_tx.number == 10 + 3 * CURSOR_EVERY + 5 and len(with_tx.outcomes) == 1


class Untouchable:
    """A view whose every read fails: the store thread's connection, touched off that thread."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the step read the store ({name}) for a block with nothing private")


def test_a_block_without_private_transactions_reads_nothing_from_the_store() -> None:
    """What lets the driver step such blocks on the loop (`executor.nothing_private`): the
    store's view belongs to the store thread, and only blocks with private work may read it."""
    from dltmw.runtime.roles.privacy.executor import nothing_private

    core = PrivateExecution(PrivacyKey(os.urandom(32)), lambda _name: None, next_block=0)
    blocks = [PrivateBlock(n, (), Untouchable()) for n in range(CURSOR_EVERY + 2)]
    assert nothing_private(blocks)
    for block in blocks:
        core.step(block)
    assert [e.number for e in core.ready().decided] == [CURSOR_EVERY - 1]  # the cursor alone
    with_tx = PrivateBlock(CURSOR_EVERY + 2, ((0, "t", b"h" * 32),), Store({}))
    purge_only = PrivateBlock(CURSOR_EVERY + 3, (), Store({}), purges=((0, object()),))  # type: ignore[arg-type]
    assert not nothing_private([*blocks, with_tx])
    assert not nothing_private([purge_only])
