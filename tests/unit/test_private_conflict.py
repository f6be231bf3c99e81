"""Concurrent private writes (core/privacy/conflict.py): the public verdict on hashed private keys
agrees with what the recipients find at execution — a private transaction is VALID on the
ledger iff its agreed pre-state is still current where it executes (never VALID-but-STALE, never
a conflict for a current one), against a naive model of the recipients' private state."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dltmw.core.privacy import conflict
from dltmw.core.rwset import Version
from dltmw.core.validation import PRIVATE_STATE_CONFLICT, VALID, TxForMvcc, validate_block
from dltmw.v1 import private_agreement_pb2, private_purge_pb2

RECIPIENTS = [b"\x01" * 32, b"\x02" * 32]
NS = "kv"
KEYS = ["a", "b", "c"]
State = dict[str, Version]  # the recipients' private state: key -> version (absent: no key)


def body(snapshot: State, touched: list[str], written: list[str], deleted: list[str]) -> object:
    reads = [(k, snapshot.get(k)) for k in touched]
    hashed_reads, hashed_writes, hashed_deletes = conflict.hashed(
        RECIPIENTS, NS, reads, written, deleted
    )
    return private_agreement_pb2.PrivateAgreementBody(
        hashed_reads=hashed_reads, hashed_writes=hashed_writes, hashed_deletes=hashed_deletes
    )


TX = st.tuples(
    st.lists(st.sampled_from(KEYS), min_size=1, max_size=3, unique=True),  # touched
    st.lists(st.sampled_from("-wd"), min_size=3, max_size=3),  # per touched key: read only,
    # write, delete
    st.integers(0, 6),  # how many states back the parties' agreement saw (lag)
)


def run(
    blocks: list[list[tuple[list[str], str | list[str], int]]], public: bool
) -> list[tuple[int, bool]]:
    """(public code, stale at execution) of every transaction. `public`: commit checks the
    hashed keys (this change); False is the rule before it (no public read-write set)."""
    history: list[State] = [{}]  # the private state after each private transaction
    versions: dict[tuple[str, str], Version] = {}  # the public world state's versions
    out: list[tuple[int, bool]] = []
    for number, txs in enumerate(blocks, start=1):
        agreed = []
        for touched, actions, lag in txs:
            snapshot = history[max(0, len(history) - 1 - lag)]
            written = [k for k, a in zip(touched, actions, strict=False) if a != "-"]
            deleted = [k for k, a in zip(touched, actions, strict=False) if a == "d"]
            agreed.append((touched, written, deleted, snapshot))
        mvcc = [
            TxForMvcc(
                f"t{number}.{i}",
                VALID,
                conflict.private_rwset(body(snap, touched, written, deleted))  # type: ignore[arg-type]
                if public
                else None,
            )
            for i, (touched, written, deleted, snap) in enumerate(agreed)
        ]
        codes, public_writes = validate_block(number, mvcc, versions, {}, set())
        for w in public_writes:
            if w.value is None:
                versions.pop((w.namespace, w.key), None)
            else:
                versions[(w.namespace, w.key)] = w.version
        for index, ((touched, written, deleted, snap), code) in enumerate(
            zip(agreed, codes, strict=True)
        ):
            current = history[-1]
            stale = any(snap.get(k) != current.get(k) for k in touched)
            out.append((code, stale))
            if code == VALID and not stale:  # executed: its writes take (block, index)
                after = {**current, **dict.fromkeys(written, Version(number, index))}
                history.append({k: v for k, v in after.items() if k not in deleted})
    return out


@settings(max_examples=150, deadline=None)
@given(blocks=st.lists(st.lists(TX, min_size=1, max_size=5), min_size=1, max_size=5))
def test_valid_on_the_ledger_iff_current_at_the_recipients(
    blocks: list[list[tuple[list[str], str | list[str], int]]],
) -> None:
    for code, stale in run(blocks, public=True):
        assert code in (VALID, PRIVATE_STATE_CONFLICT)
        assert (code == VALID) == (not stale)


def test_negative_control_without_hashed_keys_a_stale_write_is_valid() -> None:
    """Two puts on one key agreed on the same pre-state in one block: before this change the
    second was VALID on the ledger and STALE at every recipient."""
    same_key = [(["a"], "w--", 0), (["a"], "w--", 0)]
    assert run([same_key], public=False) == [(VALID, False), (VALID, True)]
    assert run([same_key], public=True) == [(VALID, False), (PRIVATE_STATE_CONFLICT, True)]
    # and across blocks, the second agreed before the first committed
    later = [[(["a"], "w--", 0)], [(["a"], "w--", 1)]]
    assert run(later, public=True) == [(VALID, False), (PRIVATE_STATE_CONFLICT, True)]


def test_hashes_are_per_recipient_set_and_a_purge_deletes_its_keys() -> None:
    other = [b"\x03" * 32, *RECIPIENTS]
    assert conflict.key_hash(RECIPIENTS, NS, "a") != conflict.key_hash(other, NS, "a")
    assert conflict.key_hash(RECIPIENTS, NS, "a") == conflict.key_hash(RECIPIENTS[::-1], NS, "a")
    assert conflict.key_hash(RECIPIENTS, "k", "va") != conflict.key_hash(RECIPIENTS, "kv", "a")
    purge = private_purge_pb2.PrivatePurgeBody(
        keys=[private_purge_pb2.PrivateKeyRef(namespace=NS, key="a")],
        recipient_keys=RECIPIENTS,
    )
    (deleted,) = conflict.purge_rwset(purge).writes
    assert deleted.is_delete and deleted.key == conflict.key_hash(RECIPIENTS, NS, "a").hex()
