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


def test_only_the_boundarys_checks_are_kept_for_the_core() -> None:
    """Decision (just_verified.py): the boundary's check (`verify`) is kept for the core's
    (`check`), which takes it; the core's own checks of what nobody checks again (the acks in
    a certificate) are not kept — they held the table full (1,024 entries) on every orderer."""
    from types import SimpleNamespace

    from dltmw.runtime.roles.orderer.pbft import PbftOrdererChannel

    calls: list[bytes] = []

    class _Membership:
        def verify(self, identity: bytes, data: bytes, signature: bytes, now: object) -> None:
            calls.append(data)

    channel = PbftOrdererChannel.__new__(PbftOrdererChannel)
    channel.identities = [b"r0", b"r1"]
    channel._just_verified = JustVerified()
    channel.channel_config = SimpleNamespace(  # type: ignore[assignment]
        view=SimpleNamespace(orderer_membership=_Membership())
    )
    assert channel.verify(1, b"vote", b"sig")  # the boundary
    assert len(channel._just_verified) == 1
    assert channel.check(1, b"vote", b"sig") and calls == [b"vote"]  # answered, taken
    assert len(channel._just_verified) == 0
    assert channel.check(1, b"ack in a certificate", b"sig2")  # the core's own check
    assert calls == [b"vote", b"ack in a certificate"]
    assert len(channel._just_verified) == 0
    assert not channel.verify(2, b"vote", b"sig") and not channel.check(2, b"vote", b"sig")
