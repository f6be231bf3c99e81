"""The component groups a notary recomputes for every request (`core/utxo/model.py`
`visible_components`, `tx_id_of`): the cached and constant groups (no references, the same
notary, the unbounded window) equal the definition — H(tag, parts) = SHA-256(tag || u32 count ||
SHA-256(part)...) and tx_id = hex SHA-256(domain || seven groups) — written out here
independently, for any inputs, references, notary and window, in any order of calls."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dltmw.core.errors import ClientError
from dltmw.core.utxo.model import (
    MAX_REFS,
    TX_DOMAIN,
    UNBOUNDED,
    Components,
    Ref,
    Window,
    refs_and_group,
    tx_id_of,
    visible_components,
    window_of,
)
from dltmw.v1 import errors_pb2 as R
from dltmw.v1 import utxo_pb2
from dltmw.v1.notarisation_pb2 import StateRef

REFS = st.lists(
    st.builds(Ref, st.sampled_from(["ab" * 32, "cd" * 32, "0f" * 32]), st.integers(0, 2**32 - 1)),
    max_size=3,
    unique=True,
)
ENDS = st.none() | st.integers(-(2**63), 2**63 - 1)
WINDOWS = st.sampled_from([UNBOUNDED, Window()]) | st.builds(Window, ENDS, ENDS)
NOTARIES = st.sampled_from(["notary0", "notary1", "n\u00e9"])


def naive_group(tag: str, parts: list[bytes]) -> bytes:
    h = hashlib.sha256(tag.encode() + len(parts).to_bytes(4, "big"))
    for p in parts:
        h.update(hashlib.sha256(p).digest())
    return h.digest()


def naive_key(ref: Ref) -> bytes:
    return bytes.fromhex(ref.tx_id) + ref.index.to_bytes(4, "big")


def naive_window(w: Window) -> bytes:
    return b"".join(
        b"\x00" if e is None else b"\x01" + e.to_bytes(8, "big", signed=True)
        for e in (w.from_ns, w.until_ns)
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(REFS, REFS, NOTARIES, WINDOWS), min_size=1, max_size=6))
def test_visible_groups_equal_the_definition_whatever_was_computed_before(
    calls: list[tuple[list[Ref], list[Ref], str, Window]],
) -> None:
    for inputs, references, notary, window in calls:  # several calls: the caches are warm
        got = visible_components(inputs, references, notary, window)
        assert got == (
            naive_group("inputs", [naive_key(r) for r in inputs]),
            naive_group("references", [naive_key(r) for r in references]),
            naive_group("notary", [notary.encode()]),
            naive_group("time_window", [naive_window(window)]),
        )


@given(st.lists(st.binary(min_size=32, max_size=32), min_size=7, max_size=7))
def test_tx_id_of_is_the_hash_of_the_domain_and_the_seven_groups(parts: list[bytes]) -> None:
    expected = hashlib.sha256(TX_DOMAIN + b"".join(parts)).hexdigest()
    assert tx_id_of(parts) == expected == Components(*parts).tx_id()


def test_no_time_window_is_the_unbounded_window() -> None:
    assert window_of(None) is UNBOUNDED and Window() == UNBOUNDED


def test_a_ref_is_an_immutable_value_ordered_by_tx_id_then_index() -> None:
    a, b = Ref("ab" * 32, 2), Ref("ab" * 32, 10)
    assert a < b < Ref("cd" * 32, 0) and sorted([b, a]) == [a, b]
    assert Ref("ab" * 32, 2) == a and hash(Ref("ab" * 32, 2)) == hash(a) and {a: 1}[a] == 1
    assert Ref.from_key(a.key) == a and str(a) == f"{'ab' * 32}:2"
    try:
        a.index = 3  # type: ignore[misc]
    except AttributeError:
        pass
    else:
        raise AssertionError("a Ref can be changed")


def naive_refs(msgs: Sequence[StateRef], what: str) -> tuple[Ref, ...]:
    """The references check as written before `refs_and_group` fused it with the hash: build
    every Ref, then the count, then each id in order, then the duplicates."""
    refs = tuple(Ref(m.tx_id, m.index) for m in msgs)
    if len(refs) > MAX_REFS:
        raise ClientError(R.ERROR_REASON_INVALID_FIELD, f"more than {MAX_REFS} {what}")
    for ref in refs:
        if not (len(ref.tx_id) == 64 and all(c in "0123456789abcdef" for c in ref.tx_id)):
            raise ClientError(R.ERROR_REASON_INVALID_FIELD, f"{what}: bad tx_id {ref.tx_id!r}")
    if len(set(refs)) != len(refs):
        raise ClientError(R.ERROR_REASON_INVALID_FIELD, f"{what} name a state twice")
    return refs


TX_IDS = st.sampled_from(
    ["ab" * 32, "cd" * 32, "AB" * 32, "ab" * 31, "ab" * 31 + " a", "zz" * 32, ""]
)
STATE_REFS = st.lists(st.tuples(TX_IDS, st.integers(0, 3)), max_size=4)


@settings(max_examples=400, deadline=None)
@given(STATE_REFS, st.sampled_from(["inputs", "references"]))
def test_refs_and_group_is_the_checked_refs_and_their_group_hash(
    pairs: list[tuple[str, int]], tag: str
) -> None:
    """Same Refs, or the same refusal (reason and message: the first bad id in order, then
    duplicates), as checking them one step after the other; the hash is the definition's."""
    tx = utxo_pb2.UtxoTransaction(inputs=[StateRef(tx_id=t, index=i) for t, i in pairs])
    msgs = tx.inputs  # the repeated field itself, as admission passes it
    try:
        expected = naive_refs(msgs, tag)
    except ClientError as exc:
        with pytest.raises(ClientError) as got:
            refs_and_group(msgs, tag)
        assert (got.value.reason, str(got.value)) == (exc.reason, str(exc))
        return
    refs, group = refs_and_group(msgs, tag)
    assert refs == expected and all(type(r) is Ref for r in refs)
    assert group == naive_group(tag, [naive_key(r) for r in expected])


def test_refs_and_group_refuses_more_than_max_refs() -> None:
    msgs = [StateRef(tx_id="ab" * 32, index=i) for i in range(MAX_REFS + 1)]
    with pytest.raises(ClientError, match=f"more than {MAX_REFS} inputs"):
        refs_and_group(msgs, "inputs")
