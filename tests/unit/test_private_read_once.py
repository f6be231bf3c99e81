"""One private execution reads each key of the private state once (`core/privacy/read_once.py`),
and gives exactly the outcome it gave reading the state every time."""

from __future__ import annotations

from collections import Counter

import pytest

from dltmw.contracts import builtin_contract
from dltmw.core.privacy.execution import execute
from dltmw.core.privacy.read_once import ReadOnce
from dltmw.core.rwset import StateEntry, Version
from dltmw.v1 import private_payload_pb2


class CountingState:
    """A private state that counts the reads reaching it (what the store would run as SQL)."""

    def __init__(self, values: dict[str, bytes]) -> None:
        self.values = values
        self.gets: Counter[str] = Counter()
        self.ranges = 0

    def get(self, namespace: str, key: str) -> tuple[bytes, Version] | None:
        self.gets[key] += 1
        v = self.values.get(key)
        return None if v is None else (v, Version(1, 0))

    def range(self, namespace: str, start: str, end: str, limit: int) -> list[StateEntry]:
        self.ranges += 1
        keys = sorted(k for k in self.values if k >= start and (not end or k < end))
        return [StateEntry(k, self.values[k], Version(1, 0)) for k in keys[:limit]]


class Uncached:
    """`ReadOnce` that passes every read through: the outcome before the memo."""

    def __init__(self, state: CountingState) -> None:
        self.get, self.range = state.get, state.range


def _inv(contract: str, function: str, *args: str) -> private_payload_pb2.PrivateInvocation:
    return private_payload_pb2.PrivateInvocation(
        contract=contract, function=function, args=[a.encode() for a in args]
    )


CASES = [
    pytest.param(_inv("kv", "put", "k", "v"), {}, id="put-of-a-fresh-key"),
    pytest.param(_inv("kv", "put", "k", "v2"), {"k": b"v1"}, id="put-over-a-value"),
    pytest.param(_inv("kv", "get", "k"), {"k": b"v1"}, id="get"),
    pytest.param(_inv("kv", "delete", "k"), {"k": b"v1"}, id="delete"),
    pytest.param(_inv("bank", "deposit", "A", "10"), {"A": b"100"}, id="bank-deposit"),
    pytest.param(_inv("bank", "withdraw", "A", "1000"), {"A": b"1"}, id="refused-withdraw"),
    pytest.param(_inv("kv", "range", "a", "z"), {"a": b"1", "b": b"2"}, id="range-then-hash"),
]


@pytest.mark.parametrize(("invocation", "values"), CASES)
def test_each_key_reaches_the_state_once(
    invocation: private_payload_pb2.PrivateInvocation, values: dict[str, bytes]
) -> None:
    state = CountingState(dict(values))
    execute(builtin_contract, invocation, state, Version(2, 0))
    assert state.gets or state.ranges  # the execution did read the state
    assert set(state.gets.values()) <= {1}, state.gets


@pytest.mark.parametrize(("invocation", "values"), CASES)
def test_the_outcome_is_the_one_without_the_memo(
    invocation: private_payload_pb2.PrivateInvocation,
    values: dict[str, bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cached = execute(builtin_contract, invocation, CountingState(dict(values)), Version(2, 0))
    monkeypatch.setattr("dltmw.core.privacy.execution.ReadOnce", Uncached)
    plain = execute(builtin_contract, invocation, CountingState(dict(values)), Version(2, 0))
    assert cached == plain


def test_range_entries_answer_later_point_reads() -> None:
    state = CountingState({"a": b"1", "b": b"2"})
    reader = ReadOnce(state)
    entries = reader.range("kv", "a", "", 10)
    assert [e.key for e in entries] == ["a", "b"]
    assert reader.get("kv", "a") == (b"1", Version(1, 0)) and reader.get("kv", "zz") is None
    assert reader.get("kv", "zz") is None
    assert state.gets == Counter({"zz": 1}) and state.ranges == 1
