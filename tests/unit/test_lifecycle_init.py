"""`init_required` (core/lifecycle_init.py): endorsers run `init` once per definition sequence
before anything else, and validation enforces it from the read/write set alone; contracts can
never write the reserved marker themselves."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from ledger_parties import make_parties

from dltmw.contract_sdk.testing import ContractTester
from dltmw.core import lifecycle as lc
from dltmw.core.contract import Context, Contract
from dltmw.core.lifecycle_init import NOT_INITIALISED, VALID, InitRequired, init_code, init_key
from dltmw.core.rwset import Version
from dltmw.v1 import rwset_pb2


class Counter(Contract):
    name = "counter"

    def init(self, ctx: Context, args: Sequence[bytes]) -> bytes:
        ctx.put("n", b"0")
        return b"ready"

    def bump(self, ctx: Context, args: Sequence[bytes]) -> bytes:
        ctx.put("n", str(int(ctx.get("n") or b"0") + 1).encode())
        return b"ok"

    def forge(self, ctx: Context, args: Sequence[bytes]) -> bytes:
        ctx.put(init_key(int(args[0])), b"1")
        return b"forged"


def test_init_runs_first_and_once_per_sequence() -> None:
    bench = ContractTester(InitRequired(Counter(), 2))
    first = bench.submit("bump")
    assert first.status == 412 and "requires 'init' first" in first.message
    assert bench.submit("init").status == 200
    assert bench.state.get("counter", init_key(2)) is not None  # the marker, written by the rule
    again = bench.submit("init")
    assert again.status == 409 and "initialised already" in again.message
    after = bench.submit("bump")
    assert after.status == 200
    [marker] = [r for r in after.result.rwset.reads if r.key == init_key(2)]
    assert marker.HasField("version")  # what validation checks: the marker read as present
    # an upgrade to sequence 3 with init_required needs its own init
    assert ContractTester(InitRequired(Counter(), 3), bench.state).submit("bump").status == 412


def test_a_contract_cannot_write_a_reserved_key() -> None:
    refused = ContractTester(Counter()).submit("forge", "2")
    assert refused.status == 500 and "reserved" in refused.message


def _rwset(
    marker: Version | str | None, writes: Sequence[str] = (), sequence: int = 2
) -> rwset_pb2.ReadWriteSet:
    """A `counter` read/write set; `marker`: the marker's read version, None (read as absent)
    or "unread"."""
    rwset = rwset_pb2.ReadWriteSet(namespace="counter")
    if marker != "unread":
        read = rwset.reads.add(key=init_key(sequence))
        if isinstance(marker, Version):
            read.version.CopyFrom(marker.to_proto())
    for key in writes:
        rwset.writes.add(key=key, value=b"1")
    return rwset


M2 = init_key(2)


@pytest.mark.parametrize(
    ("rwset", "init_sequence", "expected"),
    [
        (_rwset(None, [M2, "n"]), 2, VALID),  # the init
        (_rwset(Version(5, 0), ["n"]), 2, VALID),  # after the init
        (_rwset("unread", ["n"]), 2, NOT_INITIALISED),  # skipped the rule
        (_rwset(None, ["n"]), 2, NOT_INITIALISED),  # marker absent and not written
        (_rwset(Version(5, 0), [M2, "n"]), 2, NOT_INITIALISED),  # a second init, forged
        (_rwset(Version(5, 0), ["n"], sequence=1), 2, NOT_INITIALISED),  # an older sequence's
        (_rwset(None, [M2, init_key(7)]), 2, NOT_INITIALISED),  # another reserved write
        (_rwset("unread", ["n"]), None, VALID),  # no init_required
        (_rwset("unread", [M2]), None, NOT_INITIALISED),  # a forged marker, no init_required
    ],
    ids=[
        "init",
        "after-init",
        "unread-marker",
        "absent-not-written",
        "second-init",
        "old-sequence",
        "extra-reserved-write",
        "not-required",
        "forged-without-rule",
    ],
)
def test_init_code(rwset: rwset_pb2.ReadWriteSet, init_sequence: int | None, expected: int) -> None:
    assert init_code(rwset, init_sequence) == expected


def test_validation_applies_the_rule_of_the_committed_definition() -> None:
    """`transaction_code` takes init_required and the sequence from the committed definition."""
    parties = make_parties()
    policy = lc.canonical_policy("Org1.peer")
    counter = lc.Definition("counter", "1.0", 2, "c" * 64, policy, init_required=True)
    view = lc.committed_view(parties.view, {"counter": counter})
    skipped = _rwset("unread", ["n"])
    skipped.contract_sequence = 2
    assert lc.transaction_code(view, skipped, "Org1", frozenset({"client"})) == NOT_INITIALISED
    after = _rwset(Version(5, 0), ["n"])
    after.contract_sequence = 2
    assert lc.transaction_code(view, after, "Org1", frozenset({"client"})) == VALID
