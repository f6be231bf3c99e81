"""A peer's admission duplicate check and its simulation of the same request in ONE read
transaction (`PeerChannel.admit_and_endorse`, the endorser service's batch): each read
transaction after a commit re-reads sqlite's pages (benchmarks/RESULTS.md, lanes lat15, lat16),
so the two reads the endorsement of a lone transaction made are one — with the same answers as
`admit_many` then `endorse_many`: a response per fresh proposal, DUPLICATE_TX_ID for one already
on the ledger, admission's own refusal as it was. And the gateway's own peer
(`check_many`, then `endorse_at(check_duplicates=True)`): the same, in one read transaction."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from test_endorse_in_place import _builtin, _endorser, _ledger_with_topic, _proposal

from dltmw.aio.pool import capturing
from dltmw.core.block import make_block
from dltmw.core.errors import ClientError, DltmwError, TransientError
from dltmw.core.txcheck import CheckedProposal
from dltmw.ledger import sqlite_file
from dltmw.ledger.row_batches import in_lists
from dltmw.ledger.sqlite import ChannelLedger
from dltmw.runtime.roles.peer.channel import PeerChannel
from dltmw.runtime.roles.peer.in_place import PROPOSALS_MAX
from dltmw.v1 import errors_pb2

REFUSED = ClientError(errors_pb2.ERROR_REASON_BAD_SIGNATURE, "refused by admission")


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[ChannelLedger]:
    """A real ledger holding the bus topic "orders" and transaction tx0."""
    opened = await _ledger_with_topic(tmp_path / "l.sqlite")
    yield opened
    await opened.close()


def _peer(ledger: Any, builtin_of: Any) -> Any:
    """`_endorser`'s stub with admission: a "signed proposal" here is the CheckedProposal its
    check gives, or the string "bad" that admission refuses."""
    stub = _endorser(ledger, builtin_of)

    def check(signed: Any) -> CheckedProposal:
        if signed == "bad":
            raise REFUSED
        return signed

    async def offload(fn: Any, items: Any) -> list[object]:
        return [capturing(fn, DltmwError)(item) for item in items]

    stub._check_proposal = check
    stub.offload = offload
    stub.check_many = lambda batch: PeerChannel.check_many(stub, batch)
    stub.duplicates = lambda batch: PeerChannel.duplicates(stub, batch)
    stub.endorse_at = lambda batch, blocks, dup=False: PeerChannel.endorse_at(
        stub, batch, blocks, dup
    )
    stub.applied_height = 2  # blocks 0 and 1 (the topic, tx0) committed: every reach is at once
    stub.reach = lambda number, timeout_s: PeerChannel.reach(stub, number, timeout_s)
    stub.ctx.limits = SimpleNamespace(height_wait_s=1.0)
    return stub


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every read transaction a ledger opens (in place or on its reader thread)."""
    opened: list[str] = []
    for name in ("snapshot", "snapshot_here", "read"):
        original = getattr(sqlite_file.SqliteFile, name)

        def counted(self: Any, fn: Any, _name: str = name, _original: Any = original) -> Any:
            opened.append(_name)
            return _original(self, fn)

        monkeypatch.setattr(sqlite_file.SqliteFile, name, counted)
    return opened


def _shape(answers: list[Any]) -> list[object]:
    return [(type(a).__name__, a.reason) if isinstance(a, BaseException) else a for a in answers]


@pytest.mark.parametrize(
    "builtin_of", [_builtin, lambda name: None], ids=["in-place", "reader-thread"]
)
async def test_one_read_transaction_and_the_same_answers_as_admit_then_endorse(
    ledger: ChannelLedger, monkeypatch: pytest.MonkeyPatch, builtin_of: Any
) -> None:
    batch = [_proposal("t1"), _proposal("tx0"), "bad", _proposal("t2")]
    opened = _count_reads(monkeypatch)
    answers = await PeerChannel.admit_and_endorse(_peer(ledger, builtin_of), batch)
    assert len(opened) == 1, opened
    del opened[:]
    # the reference: admit_many, then endorse_many of what it admitted
    reference = _peer(ledger, builtin_of)
    admitted = await PeerChannel.admit_many(reference, batch)
    fresh = [a for a in admitted if isinstance(a, CheckedProposal)]
    responses = iter(await PeerChannel.endorse_many(reference, fresh))
    expected = [a if isinstance(a, BaseException) else next(responses) for a in admitted]
    assert len(opened) == 2, opened
    assert _shape(answers) == _shape(expected)
    assert _shape(answers)[1:3] == [
        ("ClientError", errors_pb2.ERROR_REASON_DUPLICATE_TX_ID),
        ("ClientError", errors_pb2.ERROR_REASON_BAD_SIGNATURE),
    ]


async def test_a_batch_admission_refuses_whole_reads_nothing(
    ledger: ChannelLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = _count_reads(monkeypatch)
    answers = await PeerChannel.admit_and_endorse(_peer(ledger, _builtin), ["bad", "bad"])
    assert _shape(answers) == [("ClientError", errors_pb2.ERROR_REASON_BAD_SIGNATURE)] * 2
    assert opened == []


async def test_a_failed_read_is_each_admitted_proposals_error_as_endorse_at_gives_it(
    ledger: ChannelLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    busy = TransientError(errors_pb2.ERROR_REASON_SHUTTING_DOWN, "the ledger is closing")

    async def fails(self: Any, fn: Any) -> Any:
        raise busy

    monkeypatch.setattr(sqlite_file.SqliteFile, "snapshot_here", fails)
    answers = await PeerChannel.admit_and_endorse(_peer(ledger, _builtin), [_proposal("t1"), "bad"])
    assert answers == [busy, REFUSED]


@pytest.mark.parametrize(
    "builtin_of", [_builtin, lambda name: None], ids=["in-place", "reader-thread"]
)
async def test_the_gateways_own_peer_checks_duplicates_in_its_endorsements_read(
    ledger: ChannelLedger, monkeypatch: pytest.MonkeyPatch, builtin_of: Any
) -> None:
    """`check_many` then `endorse_at(..., check_duplicates=True)` (runtime/roles/gateway/
    endorsing.py: the local peer's first ask): ONE read transaction, and the answers
    `admit_many` then `endorse_at` gave: DUPLICATE_TX_ID for tx0, admission's refusal, a
    response for each fresh proposal. Red if the duplicate check is dropped from the read
    (tx0 gets a response) or made in a read of its own (two reads)."""
    batch = [_proposal("t1"), _proposal("tx0"), "bad", _proposal("t2")]
    opened = _count_reads(monkeypatch)
    peer = _peer(ledger, builtin_of)
    checked = await PeerChannel.check_many(peer, batch)
    assert opened == [], "admission's checks read nothing"
    admitted = [c for c in checked if isinstance(c, CheckedProposal)]
    endorsed = iter(await PeerChannel.endorse_at(peer, admitted, [0, 1, 0], True))
    answers = [c if isinstance(c, BaseException) else next(endorsed) for c in checked]
    assert len(opened) == 1, opened
    del opened[:]
    reference = _peer(ledger, builtin_of)
    old = await PeerChannel.admit_many(reference, batch)
    fresh = [a for a in old if isinstance(a, CheckedProposal)]
    responses = iter(await PeerChannel.endorse_at(reference, fresh, [0, 0]))
    expected = [a if isinstance(a, BaseException) else next(responses) for a in old]
    assert len(opened) == 2, opened
    assert _shape(answers) == _shape(expected)
    assert _shape(answers)[1:3] == [
        ("ClientError", errors_pb2.ERROR_REASON_DUPLICATE_TX_ID),
        ("ClientError", errors_pb2.ERROR_REASON_BAD_SIGNATURE),
    ]


async def test_an_ask_again_does_not_check_duplicates(
    ledger: ChannelLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without `check_duplicates` (an ask again, the default) every proposal is simulated, as
    `endorse_many` does: a response for tx0 too."""
    peer = _peer(ledger, _builtin)
    answers = await PeerChannel.endorse_at(peer, [_proposal("tx0")], [0])
    assert not isinstance(answers[0], BaseException)


def _trace_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The text of every statement run in a read transaction (in place or on the reader
    thread)."""
    statements: list[str] = []

    def traced(fn: Any) -> Any:
        def run(conn: Any) -> Any:
            conn.set_trace_callback(statements.append)
            try:
                return fn(conn)
            finally:
                conn.set_trace_callback(None)

        return run

    for name in ("snapshot", "snapshot_here"):
        original = getattr(sqlite_file.SqliteFile, name)

        def wrapped(self: Any, fn: Any, _original: Any = original) -> Any:
            return _original(self, traced(fn))

        monkeypatch.setattr(sqlite_file.SqliteFile, name, wrapped)
    return statements


@pytest.mark.parametrize(
    ("fresh", "committed", "repeats"),
    [
        (1, 2, ["d001"]),  # 4 proposals of 3 ids: one IN, in place
        (30, 100, ["a000", "d099", "d000"]),  # 133 of 130 ids = 64 + 64 + 2, reader thread
    ],
    ids=["in-place", "three-chunks"],
)
async def test_the_duplicate_check_reads_its_ids_in_a_few_statements_with_the_same_verdicts(
    ledger: ChannelLedger,
    monkeypatch: pytest.MonkeyPatch,
    fresh: int,
    committed: int,
    repeats: list[str],
) -> None:
    """`endorse_at(check_duplicates=True)` of a batch with ids on the ledger, ids not, and
    repeats within the batch: DUPLICATE_TX_ID exactly for the proposals whose id a point read
    per id (`tx_record`) finds, a response for every other one (a repeated fresh id twice), in
    one tx index statement per list of `in_lists`. The ids sort with the committed
    ones last, so the last chunk holds ids on the ledger. Red when the check reads one id
    per statement (3 or 130 statements, not 1 or 3), when the chunk loop drops its last
    chunk (d098, d099 answered), or when a chunk's IN list is built wrong (ids missed, or
    a binding error)."""
    ids = [f"d{i:03d}" for i in range(committed)]
    block = make_block("ch1", 1, ledger.last_hash, [i.encode() for i in ids])
    block.metadata.validation_codes.extend([1] * committed)
    await ledger.commit_block(block, ids)
    asked = [f"a{i:03d}" for i in range(fresh)] + ids + repeats
    batch = [_proposal(t) for t in asked]
    per_id = await ledger.read_snapshot(lambda r: {t: r.tx_record(t) for t in asked})
    statements = _trace_reads(monkeypatch)
    in_place = len(batch) <= PROPOSALS_MAX
    peer = _peer(ledger, _builtin if in_place else lambda name: None)
    peer.applied_height = 3
    raw = await PeerChannel.endorse_at(peer, batch, [0] * len(batch), True)
    refused = [isinstance(a, BaseException) for a in raw]
    assert refused == [per_id[t] is not None for t in asked]
    assert sum(refused) == committed + sum(t in ids for t in repeats)
    dup = ("ClientError", errors_pb2.ERROR_REASON_DUPLICATE_TX_ID)
    assert {a for a, no in zip(_shape(raw), refused, strict=True) if no} == {dup}
    tx_index = [s for s in statements if "FROM txs" in s]
    assert len(tx_index) == len(in_lists(sorted(set(asked)))), tx_index
    assert peer.threads and all((t == threading.get_ident()) == in_place for t in peer.threads)
