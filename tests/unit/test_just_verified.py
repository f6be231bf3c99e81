"""`JustVerified`: the boundary's successful check of a replica message answers the core's
check of exactly the same message once, by comparison; nothing else is answered."""

from __future__ import annotations

from dltmw.runtime.roles.orderer.just_verified import JustVerified


def test_a_verified_message_is_answered_once_for_exactly_its_signer_data_and_signature() -> None:
    memo = JustVerified()
    memo.note(1, b"payload", b"sig")
    assert not memo.take(2, b"payload", b"sig")  # another signer index
    assert not memo.take(1, b"payloaX", b"sig")  # other bytes under the same signature
    assert not memo.take(1, b"payload", b"other")  # another signature
    assert memo.take(1, b"payload", b"sig")
    assert not memo.take(1, b"payload", b"sig")  # used up: a third check verifies for real
    assert len(memo) == 0


def test_entries_nobody_asks_for_leave_first_in_first_out_within_both_bounds() -> None:
    memo = JustVerified(entries_max=3, bytes_max=10)
    for i in range(5):
        memo.note(0, b"d%d" % i, b"s%d" % i)
    assert len(memo) == 3
    assert not memo.take(0, b"d0", b"s0") and memo.take(0, b"d4", b"s4")
    memo.note(0, b"x" * 9, b"big")  # 9 + 2 + 2 bytes > 10: the oldest go
    assert len(memo) == 1 and memo.take(0, b"x" * 9, b"big")
    memo.note(0, b"y" * 11, b"huge")  # larger than the bound: never kept
    assert len(memo) == 0


def test_a_change_of_the_replica_set_forgets_everything() -> None:
    memo = JustVerified()
    memo.note(1, b"payload", b"sig")
    memo.clear()
    assert not memo.take(1, b"payload", b"sig")
