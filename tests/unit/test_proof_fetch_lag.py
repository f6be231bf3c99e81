"""`fetch_commit_proof` asks again, for a bounded time, while every peer answers that it has not
committed the transaction yet: the caller learnt of the commit from its gateway's peer, and the
attesting peers may lag it (a real run: peers reconnecting to a restarted orderer, issue 19's
transfer after an orderer kill, failed PROOF_UNAVAILABLE without this)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from dltmw.client import crosschain
from dltmw.core.errors import DltmwError, PeerError
from dltmw.v1 import crosschain_pb2, errors_pb2

LAGGING = PeerError(errors_pb2.ERROR_REASON_PROOF_UNAVAILABLE, "not committed here")
PEERS: Sequence[Any] = [("peer0.org1", None), ("peer0.org2", None)]


def _script(monkeypatch: pytest.MonkeyPatch, answers: list[list[Any]]) -> list[int]:
    calls: list[int] = []

    async def ask(*_: Any) -> list[Any]:
        calls.append(1)
        return answers[min(len(calls), len(answers)) - 1]

    monkeypatch.setattr(crosschain, "_ask", ask)
    monkeypatch.setattr(crosschain, "LAG_BACKOFF_FIRST_S", 0.01)
    return calls


async def test_peers_that_lag_are_asked_again_until_one_has_committed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proof = crosschain_pb2.CommitProof(tx_index=3)
    calls = _script(monkeypatch, [[LAGGING, LAGGING], [LAGGING, LAGGING], [proof, LAGGING]])
    answers = await crosschain._ask_until_one_has_it(PEERS, "ch", "tx", 1.0, lag_s=5.0)
    assert answers[0] == proof and len(calls) == 3


async def test_the_lag_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _script(monkeypatch, [[LAGGING, LAGGING]])
    answers = await crosschain._ask_until_one_has_it(PEERS, "ch", "tx", 1.0, lag_s=0.1)
    assert all(isinstance(a, DltmwError) for a in answers)
    assert 2 <= len(calls) <= 10


async def test_any_other_answer_ends_the_wait_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    other = PeerError(errors_pb2.ERROR_REASON_PROOF_MISMATCH, "another block")
    calls = _script(monkeypatch, [[LAGGING, other]])
    await crosschain._ask_until_one_has_it(PEERS, "ch", "tx", 1.0, lag_s=5.0)
    assert len(calls) == 1
