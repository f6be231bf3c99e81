"""Privacy groups (core/privacy/groups.py): the membership rules (ADD and REMOVE, also as a
Hypothesis property against a naive model of the membership), groups and the no-group state
never mixing (a Hypothesis property over random interleavings), hashed keys scoped by the
group so the conflict rule holds across an ADD, and a purge of group keys by the group."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from private_backends import PrivateSite

from dltmw.contracts import builtin_contract
from dltmw.core.contract import Contract
from dltmw.core.privacy import conflict, groups
from dltmw.core.privacy.execution import CONTRACT_FAILED, EXECUTED, PrivateOutcome, execute
from dltmw.core.privacy.purge import Purged, purge_decision
from dltmw.core.rwset import StateEntry, StateWrite, Version
from dltmw.core.statehash import accumulate
from dltmw.core.validation import PRIVATE_STATE_CONFLICT, VALID, TxForMvcc, validate_block
from dltmw.ledger import private_groups
from dltmw.ledger.private_store import SCHEMA, PrivateTxn
from dltmw.v1 import private_agreement_pb2, private_group_pb2, private_payload_pb2, rwset_pb2
from dltmw.v1 import private_purge_pb2 as U

KA, KB, KC, KAUD = (bytes([i]) * 32 for i in (1, 2, 3, 9))
CHANNEL = groups.Parties(
    org_of_key={KA: "A", KB: "B", KC: "C", KAUD: "Reg"},
    auditor_keys=frozenset({KAUD}),
    channel_orgs=frozenset({"A", "B", "C", "Reg", "D"}),  # D runs no privacy manager
)
AB = [KA, KB, KAUD]
ABC = [KA, KB, KC, KAUD]
Row = tuple[bytes, Version]


class State:
    """A private state (the store's committed view), writes applied as the executor does."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], Row] = {}

    def get(self, namespace: str, key: str) -> Row | None:
        return self.rows.get((namespace, key))

    def range(self, namespace: str, start: str, end: str, limit: int) -> list[StateEntry]:
        keys = sorted(
            k for ns, k in self.rows if ns == namespace and k >= start and (not end or k < end)
        )
        return [StateEntry(k, *self.rows[(namespace, k)]) for k in keys[:limit]]

    def apply(self, outcome: PrivateOutcome) -> None:
        for w in outcome.writes:
            if w.value is None:
                self.rows.pop((w.namespace, w.key), None)
            else:
                self.rows[(w.namespace, w.key)] = (w.value, w.version)

    def scope(self, group: str | None) -> dict[tuple[str, str], Row]:
        return {k: v for k, v in self.rows.items() if groups.group_of(k[0]) == group}


def contract_of(name: str) -> Contract | None:
    return builtin_contract(name)


def change(group: str, kind: int, *orgs: str) -> private_payload_pb2.PrivateInvocation:
    return private_payload_pb2.PrivateInvocation(
        group=group,
        group_change=private_group_pb2.PrivateGroupChange(
            kind=private_group_pb2.PrivateGroupChangeKind.ValueType(kind), organizations=orgs
        ),
    )


def call(group: str, function: str, *args: str) -> private_payload_pb2.PrivateInvocation:
    return private_payload_pb2.PrivateInvocation(
        contract="kv", function=function, args=[a.encode() for a in args], group=group
    )


def run(
    state: State,
    invocation: private_payload_pb2.PrivateInvocation,
    version: Version,
    sender: bytes = KA,
    recipients: list[bytes] = AB,
) -> PrivateOutcome:
    if invocation.group:
        outcome = groups.execute_group(
            contract_of, invocation, state, version, CHANNEL, sender, recipients
        )
    else:
        outcome = execute(contract_of, invocation, state, version)
    state.apply(outcome)
    return outcome


def created(group: str = "g", *orgs: str) -> State:
    state = State()
    orgs = orgs or ("A", "B")
    keys = sorted(CHANNEL.group_keys(orgs))
    assert run(state, change(group, groups.CREATE, *orgs), Version(1, 0), recipients=keys).status
    assert groups.members_of(state, group)[0] == tuple(sorted(orgs))
    return state


# --- rules ----------------------------------------------------------------------------------

CASES = [
    # (name, invocation, sender, recipients, members, reason or None)
    ("create", change("g", groups.CREATE, "A", "B"), KA, AB, None, None),
    ("create exists", change("g", groups.CREATE, "A", "B"), KA, AB, ("A", "B"), groups.EXISTS),
    (
        "create without me",
        change("g", groups.CREATE, "B", "C"),
        KA,
        [KB, KC, KAUD],
        None,
        groups.NOT_MEMBER,
    ),
    ("create stranger", change("g", groups.CREATE, "A", "X"), KA, AB, None, groups.INVALID),
    ("create keyless org", change("g", groups.CREATE, "A", "D"), KA, AB, None, groups.INVALID),
    (
        "create nobody twice",
        change("g", groups.CREATE, "A", "A"),
        KA,
        [KA, KAUD],
        None,
        groups.INVALID,
    ),
    ("bad id", change("a b", groups.CREATE, "A"), KA, [KA, KAUD], None, groups.INVALID),
    (
        "change with a call",
        private_payload_pb2.PrivateInvocation(
            contract="kv",
            group="g",
            group_change=private_group_pb2.PrivateGroupChange(
                kind=groups.CREATE, organizations=["A"]
            ),
        ),
        KA,
        [KA, KAUD],
        None,
        groups.INVALID,
    ),
    ("no kind", change("g", 0, "A"), KA, [KA, KAUD], None, groups.INVALID),
    ("add", change("g", groups.ADD, "C"), KA, AB, ("A", "B"), None),
    ("add unknown", change("g", groups.ADD, "C"), KA, AB, None, groups.UNKNOWN),
    ("add member", change("g", groups.ADD, "B"), KA, AB, ("A", "B"), groups.INVALID),
    (
        "add by outsider",
        change("g", groups.ADD, "A"),
        KC,
        [KB, KC, KAUD],
        ("B",),
        groups.NOT_MEMBER,
    ),
    ("call", call("g", "put", "k", "v"), KA, AB, ("A", "B"), None),
    ("call unknown", call("g", "put", "k", "v"), KA, AB, None, groups.UNKNOWN),
    (
        "call by outsider",
        call("g", "put", "k", "v"),
        KC,
        [KA, KB, KC, KAUD],
        ("A", "B"),
        groups.NOT_MEMBER,
    ),
    (
        "call to fewer",
        call("g", "put", "k", "v"),
        KA,
        [KA, KB],
        ("A", "B"),
        groups.RECIPIENTS_MISMATCH,
    ),
    ("call to more", call("g", "put", "k", "v"), KA, ABC, ("A", "B"), groups.RECIPIENTS_MISMATCH),
    # REMOVE is sent to the current members, the removed one included
    ("remove", change("g", groups.REMOVE, "C"), KA, ABC, ("A", "B", "C"), None),
    ("remove myself", change("g", groups.REMOVE, "A"), KA, ABC, ("A", "B", "C"), None),
    ("remove unknown", change("g", groups.REMOVE, "C"), KA, ABC, None, groups.UNKNOWN),
    ("remove a non-member", change("g", groups.REMOVE, "C"), KA, AB, ("A", "B"), groups.INVALID),
    (
        "remove by outsider",
        change("g", groups.REMOVE, "B"),
        KC,
        [KB, KC, KAUD],
        ("B",),
        groups.NOT_MEMBER,
    ),
    (
        "remove the last",
        change("g", groups.REMOVE, "A"),
        KA,
        [KA, KAUD],
        ("A",),
        groups.LAST_MEMBER,
    ),
    (
        "remove everyone",
        change("g", groups.REMOVE, "A", "B"),
        KA,
        AB,
        ("A", "B"),
        groups.LAST_MEMBER,
    ),
    (
        "remove without telling the removed",
        change("g", groups.REMOVE, "C"),
        KA,
        AB,
        ("A", "B", "C"),
        groups.RECIPIENTS_MISMATCH,
    ),
]


@pytest.mark.parametrize(
    ("invocation", "sender", "recipients", "members", "reason"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_membership_rules_at_send(
    invocation: private_payload_pb2.PrivateInvocation,
    sender: bytes,
    recipients: list[bytes],
    members: tuple[str, ...] | None,
    reason: int | None,
) -> None:
    refusal = groups.check(invocation, CHANNEL, sender, recipients, members, exact=True)
    assert (refusal[0] if refusal else None) == reason


def test_execution_accepts_a_superset_of_recipients_but_never_fewer() -> None:
    """A payload re-wrapped for a later member has more boxes than the group had then."""
    inv = call("g", "put", "k", "v")
    assert groups.check(inv, CHANNEL, KA, ABC, ("A", "B"), exact=False) is None
    refusal = groups.check(inv, CHANNEL, KA, [KA, KB], ("A", "B"), exact=False)
    assert refusal is not None and refusal[0] == groups.RECIPIENTS_MISMATCH


def test_a_refused_group_transaction_fails_alike_and_writes_nothing() -> None:
    state = created()
    before = dict(state.rows)
    outcomes = [
        run(state, change("g", groups.CREATE, "A", "B"), Version(2, 0)),  # exists
        run(state, call("g", "put", "k", "v"), Version(2, 1), sender=KC, recipients=ABC),
        run(state, call("h", "put", "k", "v"), Version(2, 2)),  # unknown
    ]
    assert [o.status for o in outcomes] == [CONTRACT_FAILED] * 3
    assert "PRIVACY_GROUP_EXISTS" in outcomes[0].response.message
    assert "PRIVACY_GROUP_NOT_MEMBER" in outcomes[1].response.message
    assert "PRIVACY_GROUP_UNKNOWN" in outcomes[2].response.message
    assert state.rows == before


def test_add_extends_the_membership_at_its_block() -> None:
    state = created()
    assert run(state, change("g", groups.ADD, "C"), Version(3, 1)).status == EXECUTED
    assert groups.members_of(state, "g") == (("A", "B", "C"), Version(3, 1))
    # C's peer is now a recipient every member requires
    assert run(state, call("g", "put", "k", "v"), Version(4, 0)).status == CONTRACT_FAILED
    assert run(state, call("g", "put", "k", "v"), Version(4, 1), recipients=ABC).status == EXECUTED


def test_remove_shrinks_the_membership_and_later_calls_go_to_the_rest_only() -> None:
    state = created("g", "A", "B", "C")
    run(state, call("g", "put", "k", "v1"), Version(2, 0), recipients=ABC)
    removed = State()  # C's node: it receives the REMOVE and executes it, then nothing more
    removed.rows = dict(state.rows)
    for copy in (state, removed):
        assert run(copy, change("g", groups.REMOVE, "C"), Version(3, 0), recipients=ABC).status
    assert groups.members_of(state, "g") == (("A", "B"), Version(3, 0))
    assert state.scope("g") == removed.scope("g")  # C holds the group as of the REMOVE
    # later calls: sealed for A, B and the auditor only (exact at Send), C no longer needed
    later = call("g", "put", "k", "v2")
    assert groups.check(later, CHANNEL, KA, AB, ("A", "B"), exact=True) is None
    refusal = groups.check(later, CHANNEL, KA, ABC, ("A", "B"), exact=True)
    assert refusal is not None and refusal[0] == groups.RECIPIENTS_MISMATCH
    assert run(state, later, Version(4, 0)).status == EXECUTED
    assert state.scope("g") != removed.scope("g")
    assert removed.get(groups.scoped("g", "kv"), "k") == (b"v1", Version(2, 0))
    # C's own node refuses its call (its record says it left), and so would every member
    by_c = groups.check(call("g", "put", "k", "x"), CHANNEL, KC, ABC, ("A", "B"), exact=True)
    assert by_c is not None and by_c[0] == groups.NOT_MEMBER
    mine = groups.members_of(removed, "g")[0]
    by_c = groups.check(call("g", "put", "k", "x"), CHANNEL, KC, [*AB, KC], mine, exact=True)
    assert by_c is not None and by_c[0] == groups.NOT_MEMBER
    assert run(state, call("g", "put", "k", "x"), Version(5, 0), KC, ABC).status == CONTRACT_FAILED
    # and it can be added again later (ADD names non-members)
    assert run(state, change("g", groups.ADD, "C"), Version(6, 0)).status == EXECUTED


def test_a_refused_remove_writes_nothing() -> None:
    state = created("g", "A")
    before = dict(state.rows)
    done = run(state, change("g", groups.REMOVE, "A"), Version(2, 0), recipients=[KA, KAUD])
    assert done.status == CONTRACT_FAILED
    assert "PRIVACY_GROUP_LAST_MEMBER" in done.response.message
    assert state.rows == before


def test_a_call_agreed_before_a_remove_and_ordered_after_it_conflicts() -> None:
    """The membership record is read by every group transaction: a call agreed while C was a
    member must not execute after C left (for a recipient set the group no longer has)."""
    state = created("g", "A", "B", "C")
    agreed = groups.execute_group(
        contract_of, call("g", "put", "k", "v"), state, Version(0, 0), CHANNEL, KA, ABC
    )
    remove = run(state, change("g", groups.REMOVE, "C"), Version(2, 0), recipients=ABC)
    record = ("_private", conflict.group_record_hash("g").hex())  # written by the CREATE
    versions: dict[tuple[str, str], Version] = {record: Version(1, 0)}
    for number, o in enumerate([remove, agreed], start=2):
        reads, writes, deletes = conflict.outcome_hashed(ABC, "kv", o)
        body = private_agreement_pb2.PrivateAgreementBody(
            hashed_reads=reads, hashed_writes=writes, hashed_deletes=deletes
        )
        codes, public = validate_block(
            number, [TxForMvcc("t", VALID, conflict.private_rwset(body))], versions, {}, set()
        )
        versions.update(((w.namespace, w.key), w.version) for w in public)
        assert codes == ([VALID] if o is remove else [PRIVATE_STATE_CONFLICT])
    # the record's public hash (the one a CREATE of the id checks at Send) moved with REMOVE
    assert versions[record] == Version(2, 0)


# --- no mixing ------------------------------------------------------------------------------

SCOPES = st.sampled_from(["", "g1", "g2"])
TX = st.tuples(
    SCOPES,
    st.sampled_from(["put", "incr", "delete", "get"]),
    st.sampled_from(["a", "b", "c"]),
    st.binary(min_size=1, max_size=3),
)
RECIPIENTS = {"": [KA, KB, KC, KAUD], "g1": AB, "g2": [KB, KC, KAUD]}
SENDER = {"": KA, "g1": KA, "g2": KC}


def _invocation(
    scope: str, fn: str, key: str, value: bytes
) -> private_payload_pb2.PrivateInvocation:
    args = [key.encode(), value] if fn == "put" else [key.encode()]
    return private_payload_pb2.PrivateInvocation(contract="kv", function=fn, args=args, group=scope)


def _play(
    txs: list[tuple[str, str, str, bytes]], only: str | None
) -> tuple[State, list[tuple[bytes, bytes, list[bytes], list[bytes]]]]:
    """Run the groups' creation, then `txs` (transaction i at version (10, i)); `only`: just
    that scope's. Returns the state and each run transaction's hashes and hashed keys."""
    state = State()
    run(state, change("g1", groups.CREATE, "A", "B"), Version(1, 0))
    run(
        state,
        change("g2", groups.CREATE, "B", "C"),
        Version(1, 1),
        sender=KC,
        recipients=RECIPIENTS["g2"],
    )
    seen = []
    for i, (scope, fn, key, value) in enumerate(txs):
        if only is not None and scope != only:
            continue
        keys = RECIPIENTS[scope]
        o = run(state, _invocation(scope, fn, key, value), Version(10, i), SENDER[scope], keys)
        reads, writes, _ = conflict.outcome_hashed(keys, "kv", o)
        seen.append((o.pre_state_hash, o.state_hash, [r.key_hash for r in reads], writes))
    return state, seen


@settings(max_examples=150, deadline=None)
@given(st.lists(TX, max_size=30))
def test_groups_and_the_no_group_state_never_read_or_write_each_others_keys(
    txs: list[tuple[str, str, str, bytes]],
) -> None:
    mixed, seen = _play(txs, None)
    hashed_by_scope: dict[str, set[bytes]] = {"": set(), "g1": set(), "g2": set()}
    for (scope, *_), (_, _, reads, writes) in zip(txs, seen, strict=True):
        hashed_by_scope[scope] |= {*reads, *writes}
    assert not hashed_by_scope["g1"] & hashed_by_scope["g2"]
    assert not (hashed_by_scope["g1"] | hashed_by_scope["g2"]) & hashed_by_scope[""]
    for scope in ("", "g1", "g2"):
        alone, alone_seen = _play(txs, scope)
        # the scope's state, its hash and every one of its transactions' hashes are those of
        # its own transactions alone: the other scopes' transactions changed nothing of it
        assert mixed.scope(scope or None) == alone.scope(scope or None)
        mine = [s for (sc, *_), s in zip(txs, seen, strict=True) if sc == scope]
        assert mine == alone_seen
    conn = _db(mixed)
    for group in ("g1", "g2"):
        expected = accumulate((ns, k, v, ver) for (ns, k), (v, ver) in mixed.scope(group).items())
        assert private_groups.group_state_hash(conn, group) == expected.digest()
    assert private_groups.group_ids(conn) == ["g1", "g2"]


def _db(state: State) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.executescript(SCHEMA)
    conn.executemany(
        "INSERT INTO pstate VALUES (?,?,?,?,?)",
        [(ns, k, v, ver.block_number, ver.tx_index) for (ns, k), (v, ver) in state.rows.items()],
    )
    return conn


# --- conflicts across an ADD ----------------------------------------------------------------


def _public(
    outcome: PrivateOutcome, recipients: list[bytes], keys_of: str
) -> rwset_pb2.ReadWriteSet:
    """The transaction's public read-write set restricted to the contract key `keys_of`."""
    reads, writes, deletes = conflict.outcome_hashed(recipients, "kv", outcome)
    wanted = conflict.key_hash(
        conflict.scope_of(outcome.group, recipients), outcome.namespace or "kv", keys_of
    )
    body = private_agreement_pb2.PrivateAgreementBody(
        hashed_reads=[r for r in reads if r.key_hash == wanted],
        hashed_writes=[w for w in writes if w == wanted],
        hashed_deletes=[d for d in deletes if d == wanted],
    )
    return conflict.private_rwset(body)


def test_the_conflict_rule_holds_across_an_add() -> None:
    """Tx1 (before C joined) writes k; tx2 (after, one more recipient) was agreed on a state
    that had not seen tx1: it must conflict, so k's hash may not depend on the recipients."""
    state = created()
    lagging = State()
    lagging.rows = dict(state.rows)
    tx1 = run(state, call("g", "put", "k", "v1"), Version(2, 0), recipients=AB)
    run(state, change("g", groups.ADD, "C"), Version(3, 0))
    run(lagging, change("g", groups.ADD, "C"), Version(3, 0))
    tx2 = run(lagging, call("g", "put", "k", "v2"), Version(4, 0), recipients=ABC)
    versions: dict[tuple[str, str], Version] = {}
    codes, writes = validate_block(
        2, [TxForMvcc("t1", VALID, _public(tx1, AB, "k"))], versions, {}, set()
    )
    assert codes == [VALID]
    versions.update(((w.namespace, w.key), w.version) for w in writes)
    codes, _ = validate_block(
        4, [TxForMvcc("t2", VALID, _public(tx2, ABC, "k"))], versions, {}, set()
    )
    assert codes == [PRIVATE_STATE_CONFLICT]
    # and a no-group transaction keeps its recipient-scoped hash (no change for it)
    plain = conflict.outcome_hashed(
        AB, "kv", execute(contract_of, call("", "put", "k", "v"), State(), Version(1, 0))
    )
    assert plain[1] == [conflict.key_hash(AB, "kv", "k")]


def test_an_add_conflicts_with_a_call_agreed_under_the_old_membership() -> None:
    """A call agreed before an ADD read the membership record: after the ADD it conflicts
    instead of executing for fewer recipients than the group now has."""
    state = created()
    agreed = groups.execute_group(
        contract_of, call("g", "put", "k", "v"), state, Version(0, 0), CHANNEL, KA, AB
    )
    add = run(state, change("g", groups.ADD, "C"), Version(2, 0))
    versions: dict[tuple[str, str], Version] = {}
    for number, (o, keys) in enumerate([(add, AB), (agreed, AB)], start=2):
        reads, writes, deletes = conflict.outcome_hashed(keys, "kv", o)
        body = private_agreement_pb2.PrivateAgreementBody(
            hashed_reads=reads, hashed_writes=writes, hashed_deletes=deletes
        )
        codes, public = validate_block(
            number, [TxForMvcc("t", VALID, conflict.private_rwset(body))], versions, {}, set()
        )
        versions.update(((w.namespace, w.key), w.version) for w in public)
    assert codes == [PRIVATE_STATE_CONFLICT]


# --- purge ----------------------------------------------------------------------------------


def _purge(
    state: State, recipients: list[bytes], group: str = "g"
) -> tuple[Purged, U.PrivatePurgeBody]:
    body = U.PrivatePurgeBody(
        tx_id="p",
        keys=[U.PrivateKeyRef(namespace="kv", key="k")],
        recipient_keys=sorted(recipients),
        group=group,
    )
    allowed = groups.group_may_purge(state, CHANNEL, body)
    decided = purge_decision(
        body, Version(5, 0), lambda _h: None, lambda ns, k: state.get(ns, k) is not None, 0, allowed
    )
    return decided, body


def test_a_purge_by_the_group_removes_its_key_and_public_hash_only_there() -> None:
    state = created()
    run(state, call("g", "put", "k", "canary"), Version(2, 0))
    run(state, call("", "put", "k", "kept"), Version(2, 1))  # the no-group key of the same name
    decided, body = _purge(state, AB)
    assert [(w.namespace, w.key, w.value) for w in decided.writes] == [
        (groups.scoped("g", "kv"), "k", None)
    ]
    written = conflict.outcome_hashed(
        AB,
        "kv",
        groups.execute_group(
            contract_of, call("g", "put", "k", "x"), state, Version(0, 0), CHANNEL, KA, AB
        ),
    )[1]
    assert [w.key for w in conflict.purge_rwset(body).writes] == [d.hex() for d in written]


@pytest.mark.parametrize("recipients", [[KA, KAUD], ABC], ids=["a subset", "outsiders"])
def test_a_purge_of_group_keys_by_other_than_the_group_keeps_them(recipients: list[bytes]) -> None:
    state = created()
    run(state, call("g", "put", "k", "canary"), Version(2, 0))
    decided, _ = _purge(state, recipients)
    assert decided.writes == () and decided.kept_keys == 1


async def test_groups_keys_with_nul_and_byte_order_are_the_same_on_both_backends(
    psite: PrivateSite,
) -> None:
    """The store's own tables (sqlite file, PostgreSQL schema): group namespaces start with NUL
    and keys may hold NUL or non-ASCII; each group's hash, the no-group hash and range reads
    (bytewise UTF-8 order, what the phantom checks compare) are those of the model."""
    rows = {
        (groups.scoped("g1", "kv"), "a\x00b"): b"1",
        (groups.scoped("g1", "kv"), "\u00e9"): b"2",
        (groups.scoped("g2", "kv"), "a"): b"3",
        ("kv", "b"): b"4",
        ("kv", "a\x00b"): b"5",
        ("kv", "a"): b"6",
        ("kv", "\u00e9"): b"7",
        ("kv", "\uffff"): b"8",
    }
    version = Version(3, 1)
    store = await psite.open()
    try:

        def write(txn: PrivateTxn) -> None:
            txn.apply(StateWrite(ns, k, v, version) for (ns, k), v in rows.items())
            txn.set_cursor(4)

        await store.transaction(write)

        def hashes(view: PrivateTxn) -> tuple[list[str], bytes, bytes, bytes]:
            return (
                private_groups.group_ids(view.db),
                private_groups.group_state_hash(view.db, "g1"),
                private_groups.group_state_hash(view.db, "g2"),
                private_groups.no_group_state_hash(view.db),
            )

        found = await store.read(hashes)

        def model(keep: Callable[[str], bool]) -> bytes:
            kept = ((ns, k, v, version) for (ns, k), v in rows.items() if keep(ns))
            return accumulate(kept).digest()

        assert found == (
            ["g1", "g2"],
            model(lambda ns: ns.startswith(groups.scoped("g1", ""))),
            model(lambda ns: ns.startswith(groups.scoped("g2", ""))),
            model(lambda ns: not ns.startswith(groups.PREFIX)),
        )
        ordered = await store.read(lambda view: [e.key for e in view.range("kv", "", "", 10)])
        assert ordered == ["a", "a\x00b", "b", "\u00e9", "\uffff"]
        assert await store.read(
            lambda view: [e.key for e in view.range("kv", "a\x00", "c", 10)]
        ) == ["a\x00b", "b"]
        audit = await store.audit(b"", 10)
        assert audit.stored_state_hash == audit.recomputed_state_hash == model(lambda ns: True)
    finally:
        await store.close()


# --- membership changes against a naive model -----------------------------------------------

NODES = {"A": KA, "B": KB, "C": KC, "Reg": KAUD}
OP = st.tuples(
    st.sampled_from(["create", "add", "remove", "call"]),
    st.sampled_from(["A", "B", "C"]),  # the sender's organisation
    st.sets(st.sampled_from(["A", "B", "C"]), min_size=1, max_size=3),
)


def _model_accepts(members: set[str] | None, kind: str, sender: str, orgs: set[str]) -> bool:
    """The rules, written plainly over a set of members (None: no group yet)."""
    if kind == "create":
        return members is None and sender in orgs
    if members is None or sender not in members:
        return False
    if kind == "add":
        return not orgs & members
    if kind == "remove":
        return orgs <= members and bool(members - orgs)
    return True


def _group_rows(state: State) -> dict[tuple[str, str], Row]:
    return state.scope("g")


@settings(max_examples=150, deadline=None)
@given(st.lists(OP, max_size=25))
def test_membership_changes_follow_a_naive_model_and_never_reach_a_removed_member(
    ops: list[tuple[str, str, set[str]]],
) -> None:
    """Each node keeps its own copy and executes only what is sealed for it; the sender's node
    checks at Send against its own copy (a removed organisation's copy is stale). Accepted at
    Send iff the model accepts; every recipient decides alike; current members and the auditor
    hold the model's membership and one group state; a removed organisation's copy never
    changes until it is added again (then it catches up, as share_history + Recover do)."""
    states = {org: State() for org in NODES}
    model: set[str] | None = None
    frozen: dict[str, dict[tuple[str, str], Row]] = {}  # removed org -> its copy at the REMOVE
    kinds = {"create": groups.CREATE, "add": groups.ADD, "remove": groups.REMOVE}
    for i, (kind, sender, orgs) in enumerate(ops):
        if kind == "call":
            inv = call("g", "put", "k", str(i))
        else:
            inv = change("g", kinds[kind], *sorted(orgs))
        view, _ = groups.members_of(states[sender], "g")
        wanted = groups.send_orgs(inv, view)
        keys = sorted(CHANNEL.group_keys(wanted) | {NODES[sender]})
        refusal = groups.check(inv, CHANNEL, NODES[sender], keys, view, exact=True)
        if refusal is None and kind == "create" and model is not None:
            refusal = (groups.ID_TAKEN, "the record's public hash exists")  # the node's check
        assert (refusal is None) == _model_accepts(model, kind, sender, orgs), (refusal, model)
        if refusal is not None:
            continue
        holders = [o for o, k in NODES.items() if k in keys]
        outcomes = {
            o: groups.execute_group(
                contract_of, inv, states[o], Version(i + 1, 0), CHANNEL, NODES[sender], keys
            )
            for o in holders
        }
        assert len({(x.status, x.state_hash, x.pre_state_hash) for x in outcomes.values()}) == 1
        assert all(x.status == EXECUTED for x in outcomes.values())
        for o in holders:
            states[o].apply(outcomes[o])
        for o in frozen:
            assert o not in holders or kind == "remove"  # a removed org gets nothing later
        if kind == "create":
            model = set(orgs)
        elif kind == "add":
            assert model is not None
            model |= orgs
            for o in orgs:  # the late member catches up (share_history + Recover)
                frozen.pop(o, None)
                states[o].rows = {**states[o].rows, **_group_rows(states["Reg"])}
        elif kind == "remove":
            assert model is not None
            model -= orgs
            frozen.update({o: _group_rows(states[o]) for o in orgs})
        for o in [*sorted(model or ()), "Reg"]:
            assert groups.members_of(states[o], "g")[0] == tuple(sorted(model or ()))
            assert _group_rows(states[o]) == _group_rows(states["Reg"])
        for o, rows_then in frozen.items():
            assert _group_rows(states[o]) == rows_then
