"""Unit tier for the bench client's own per-item costs (`bench/runner.Tally`,
`bench/flow_drivers.NotaryDriver`): what it records stays per item while the work around each
item is batched or removed."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from dltmw.bench.driver import Outcome
from dltmw.bench.flow_drivers import VALID, NotaryDriver, answers
from dltmw.bench.runner import Tally
from dltmw.bench.workloads import Op
from dltmw.v1 import errors_pb2, notarisation_pb2

Result = notarisation_pb2.NotarisationResult


def _outcome(i: int, code: int | None) -> Outcome:
    return Outcome(f"t{i}", code, None if code else "X", float(i), float(i) + 0.5)


def test_the_progress_line_is_shown_per_chunk_and_every_outcome_is_kept() -> None:
    shown: list[tuple[int, str]] = []
    records: list[tuple[Op, Outcome]] = []
    tally = Tally(records, lambda done, figures: shown.append((done, figures)), every=256)
    op = Op("bench0", "kv", "put", ("k", "v"))
    for i in range(1000):
        tally.record(op, _outcome(i, None if i % 100 == 0 else VALID if i % 2 else 2))
    assert [done for done, _ in shown] == [256, 512, 768]  # not one update per outcome
    tally.flush()
    assert shown[-1][0] == 1000 and "valid 500 invalid 490 failed 10" in shown[-1][1]
    assert len(records) == 1000 and records[7][1].latency_s == 0.5  # latency still per item


class _Members:
    """Stands in for a member's Coalescer: `submit` hands out futures the test settles."""

    def __init__(self) -> None:
        self.futures: list[asyncio.Future[Result]] = []

    def submit(self, item: Any) -> asyncio.Future[Result]:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return future

    async def call(self, item: Any) -> Result:
        return await self.submit(item)


def _signed() -> Result:
    result = Result()
    result.response.notary_signature.signature = b"sig"
    return result


async def test_a_cluster_notarisation_makes_no_task_per_member_asked() -> None:
    members = ["n0", "n1", "n2", "n3"]
    coalescers = {m: _Members() for m in members}
    party = SimpleNamespace(signer=SimpleNamespace(identity_bytes=b"party-0"))
    batches: Any = {(0, m): (None, coalescers[m]) for m in members}
    attest: Any = {(0, m): coalescers[m] for m in members}
    driver = NotaryDriver([party], batches, "n0", members, attest)  # type: ignore[list-item]
    op = Op("bench0", "notary", "notarise", ("00" * 16, "ab" * 32))
    before = len(asyncio.all_tasks())
    run = asyncio.ensure_future(driver.execute(op))
    for _ in range(10):  # a few loop turns, until execute has asked f+1 = 2 members
        if sum(len(c.futures) for c in coalescers.values()) == 2:
            break
        await asyncio.sleep(0)
    assert len(asyncio.all_tasks()) == before + 1  # the caller's own task only
    for c in coalescers.values():
        for f in c.futures:
            f.set_result(_signed())
    assert (await run).code == VALID


async def test_one_members_failure_fails_the_request_and_leaves_no_unread_outcome() -> None:
    loop = asyncio.get_running_loop()
    first, second, third = loop.create_future(), loop.create_future(), loop.create_future()
    first.set_exception(ConnectionError("member gone"))
    second.set_exception(TimeoutError())
    with pytest.raises(ConnectionError):
        await answers([first, second, third])
    assert third.cancelled()  # not sent yet: withdrawn
    assert second._log_traceback is False  # read: no "exception was never retrieved"


async def test_answers_come_back_in_the_order_members_were_asked() -> None:
    loop = asyncio.get_running_loop()
    a, b = loop.create_future(), loop.create_future()
    b.set_result(Result(reason=errors_pb2.ERROR_REASON_INPUT_CONSUMED))
    loop.call_soon(a.set_result, _signed())
    got = await answers([a, b])
    assert got[0].response.notary_signature.signature == b"sig" and got[1].reason
