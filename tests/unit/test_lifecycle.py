"""The contract lifecycle core: definitions, approvals, MAJORITY, sequences, validation codes.

The `_lifecycle` system contract runs in the SDK's in-memory tester (the same `simulate` every
endorser runs); `lifecycle_code` and `validate_block` are the commit-side checks.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ledger_parties import make_parties

from dltmw.contract_sdk.testing import DEFAULT_TX, ContractTester
from dltmw.core import lifecycle as lc
from dltmw.core import lifecycle_contract
from dltmw.core.channel import ConfigError, channel_view
from dltmw.core.lifecycle_contract import LifecycleContract
from dltmw.core.policy import parse_policy
from dltmw.core.rwset import Version
from dltmw.core.validation import MVCC_READ_CONFLICT, VALID, TxForMvcc, validate_block
from dltmw.v1 import config_pb2, rwset_pb2

MEMBERS = ("Org1", "Org2", "Org3")
POLICY = lc.canonical_policy("AND(Org1.peer, Org2.peer)")
V1 = lc.Definition("assets", "1.0", 1, "a" * 64, POLICY)
ADMIN = frozenset({"admin"})


def new_bench(genesis: dict[str, lc.Definition] | None = None) -> ContractTester:
    return ContractTester(LifecycleContract(MEMBERS, genesis or {}))


def as_org(bench: ContractTester, org: str) -> ContractTester:
    bench.tx = dataclasses.replace(DEFAULT_TX, creator_org=org)
    return bench


def approve(bench: ContractTester, org: str, d: lc.Definition) -> int:
    return as_org(bench, org).submit("approve", d.to_bytes()).status


def commit(bench: ContractTester, d: lc.Definition, org: str = "Org1") -> tuple[int, str]:
    out = as_org(bench, org).submit("commit", d.to_bytes())
    return out.status, out.message


def committed(bench: ContractTester, name: str) -> lc.Definition | None:
    found = bench.state.get(lc.NAMESPACE, lc.definition_key(name))
    return lc.parse_definition(found[0], MEMBERS) if found else None


@pytest.mark.parametrize(
    ("members", "needed"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (7, 4)], ids=str
)
def test_majority_is_more_than_half_of_member_orgs(members: int, needed: int) -> None:
    assert lc.approvals_needed(members) == needed


def test_commit_needs_a_majority_of_approvals_of_the_exact_definition() -> None:
    bench = new_bench()
    assert approve(bench, "Org1", V1) == 200
    status, message = commit(bench, V1)
    assert status == 400 and "approved by Org1" in message and "needs 2 of 3" in message
    assert committed(bench, "assets") is None  # state unchanged
    other = dataclasses.replace(V1, package_id="b" * 64)  # Org2 approves another package
    assert approve(bench, "Org2", other) == 200
    assert commit(bench, V1)[0] == 400
    assert approve(bench, "Org3", V1) == 200
    assert commit(bench, V1, org="Org2") == (200, "")
    assert committed(bench, "assets") == V1


def test_sequence_must_be_the_committed_one_plus_one() -> None:
    bench = new_bench()
    too_far = dataclasses.replace(V1, sequence=2)
    out = as_org(bench, "Org1").submit("approve", too_far.to_bytes())
    assert out.status == 400 and "the next is 1" in out.message
    for org in ("Org1", "Org2"):
        approve(bench, org, V1)
    assert commit(bench, V1)[0] == 200
    assert approve(bench, "Org3", V1) == 400  # sequence 1 is committed: nothing to approve
    assert commit(bench, V1)[0] == 400  # nor to commit again


def test_an_upgrade_needs_fresh_approvals() -> None:
    bench = new_bench()
    for org in ("Org1", "Org2"):
        approve(bench, org, V1)
    commit(bench, V1)
    v2 = dataclasses.replace(V1, version="2.0", sequence=2, package_id="c" * 64)
    assert commit(bench, v2)[0] == 400  # the approvals of sequence 1 do not count
    approve(bench, "Org2", v2)
    approve(bench, "Org3", v2)
    assert commit(bench, v2)[0] == 200
    assert committed(bench, "assets") == v2


def test_a_genesis_contract_is_committed_at_sequence_1() -> None:
    config = config_pb2.ChannelConfig(default_endorsement_policy="OR(Org1.peer, Org2.peer)")
    config.contracts.add(name="bank")
    config.contracts.add(name="kv", endorsement_policy="Org1.peer")
    genesis = lc.genesis_definitions(config)
    assert genesis["bank"].sequence == 1 and genesis["kv"].endorsement_policy == "'Org1.peer'"
    bench = new_bench(genesis)
    bank1 = dataclasses.replace(genesis["bank"], version="1", package_id="d" * 64)
    assert approve(bench, "Org1", bank1) == 400  # sequence 1 exists already
    bank2 = dataclasses.replace(bank1, sequence=2)
    for org in ("Org1", "Org3"):
        assert approve(bench, org, bank2) == 200
    assert commit(bench, bank2)[0] == 200


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"{", "not a JSON object"),
        (b"[]", "not in canonical form"),
        (V1.to_bytes().replace(b'"name"', b' "name"'), "canonical form"),
        (dataclasses.replace(V1, name="Bad").to_bytes(), "contract name"),
        (dataclasses.replace(V1, package_id="x").to_bytes(), "package id"),
        (dataclasses.replace(V1, sequence=0).to_bytes(), "sequence"),
        (dataclasses.replace(V1, endorsement_policy="Org9.peer").to_bytes(), "unknown org"),
        (dataclasses.replace(V1, endorsement_policy="Org1.peer").to_bytes(), "canonical form"),
    ],
    ids=["json", "list", "spaces", "name", "package", "sequence", "org", "policy-text"],
)
def test_malformed_definitions_are_refused_with_the_rule(data: bytes, fragment: str) -> None:
    with pytest.raises(lc.LifecycleError, match=fragment):
        lc.parse_definition(data, MEMBERS)


# --- validation of lifecycle transactions -------------------------------------------------


def approval_rwset(d: lc.Definition, org: str) -> rwset_pb2.ReadWriteSet:
    write = rwset_pb2.KVWrite(key=d.approval_key(org), value=d.to_bytes())
    return rwset_pb2.ReadWriteSet(namespace=lc.NAMESPACE, writes=[write])


def commit_rwset(d: lc.Definition, approved: set[str]) -> rwset_pb2.ReadWriteSet:
    reads = [rwset_pb2.KVRead(key=lc.definition_key(d.name))]
    for org in MEMBERS:
        read = rwset_pb2.KVRead(key=d.approval_key(org))
        if org in approved:
            read.version.CopyFrom(Version(3, MEMBERS.index(org)).to_proto())
        reads.append(read)
    write = rwset_pb2.KVWrite(key=lc.definition_key(d.name), value=d.to_bytes())
    return rwset_pb2.ReadWriteSet(namespace=lc.NAMESPACE, reads=reads, writes=[write])


def code(rwset: rwset_pb2.ReadWriteSet, org: str = "Org1", roles: frozenset[str] = ADMIN) -> int:
    return lc.lifecycle_code(rwset, org, roles, MEMBERS, {})


@pytest.mark.parametrize(
    ("rwset", "org", "roles", "expected"),
    [
        (approval_rwset(V1, "Org1"), "Org1", ADMIN, lc.VALID),
        (approval_rwset(V1, "Org1"), "Org1", frozenset({"client"}), lc.NOT_ADMIN),
        (approval_rwset(V1, "Org2"), "Org1", ADMIN, lc.NOT_ADMIN),
        (approval_rwset(V1, "Org9"), "Org9", ADMIN, lc.NOT_ADMIN),
        (approval_rwset(dataclasses.replace(V1, sequence=2), "Org1"), "Org1", ADMIN, lc.INVALID),
        (commit_rwset(V1, {"Org1", "Org3"}), "Org2", ADMIN, lc.VALID),
        (commit_rwset(V1, {"Org1"}), "Org1", ADMIN, lc.INVALID),
        (commit_rwset(V1, {"Org1", "Org2"}), "Org1", frozenset({"peer"}), lc.NOT_ADMIN),
        (rwset_pb2.ReadWriteSet(namespace=lc.NAMESPACE), "Org1", ADMIN, lc.INVALID),
    ],
    ids=[
        "approve-own-org",
        "approve-by-client",
        "approve-for-another-org",
        "approve-by-non-member",
        "approve-sequence-skips",
        "commit-majority",
        "commit-under-approved",
        "commit-by-peer",
        "no-write",
    ],
)
def test_lifecycle_code(
    rwset: rwset_pb2.ReadWriteSet, org: str, roles: frozenset[str], expected: int
) -> None:
    assert code(rwset, org, roles) == expected


def test_a_commit_at_a_stale_sequence_is_invalid() -> None:
    rwset = commit_rwset(V1, {"Org1", "Org2"})
    assert lc.lifecycle_code(rwset, "Org1", ADMIN, MEMBERS, {"assets": 1}) == lc.INVALID


def test_a_commit_claiming_approvals_that_do_not_exist_fails_mvcc() -> None:
    """The approvals are counted from the reads; MVCC proves each read still holds."""
    rwset = commit_rwset(V1, {"Org1", "Org2"})
    assert code(rwset) == lc.VALID
    honest = {(lc.NAMESPACE, V1.approval_key("Org1")): Version(3, 0)}  # Org2 never approved
    codes, writes = validate_block(9, [TxForMvcc("t", VALID, rwset)], honest, {}, set())
    assert codes == [MVCC_READ_CONFLICT] and writes == []


@given(st.sets(st.sampled_from(MEMBERS)))
def test_commit_validation_agrees_with_counting_orgs(approved: set[str]) -> None:
    expected = lc.VALID if 2 * len(approved) > len(MEMBERS) else lc.INVALID
    assert code(commit_rwset(V1, approved)) == expected


@given(st.integers(1, 7).flatmap(lambda n: st.tuples(st.just(n), st.sets(st.integers(0, n - 1)))))
def test_the_contract_commits_iff_more_than_half_of_the_members_approved(
    case: tuple[int, set[int]],
) -> None:
    """The endorsers' decision (the contract) against a naive model, for 1..7 member orgs."""
    count, approving = case
    members = [f"Org{i}" for i in range(count)]
    policy = lc.canonical_policy("Org0.peer")
    d = lc.Definition("assets", "1.0", 1, "a" * 64, policy)
    bench = ContractTester(LifecycleContract(members, {}))
    for i in sorted(approving):
        assert approve(bench, f"Org{i}", d) == 200
    status, _ = commit(bench, d, org="Org0")
    assert (status == 200) == (2 * len(approving) > count)


# --- definitions and other transactions ---------------------------------------------------


def contract_rwset(sequence: int) -> rwset_pb2.ReadWriteSet:
    write = rwset_pb2.KVWrite(key="k", value=b"v")
    return rwset_pb2.ReadWriteSet(namespace="assets", writes=[write], contract_sequence=sequence)


@pytest.mark.parametrize(
    ("endorsed", "committed", "expected"),
    [
        (1, 1, lc.VALID),
        (0, 1, lc.VALID),
        (1, 2, lc.DEFINITION_CHANGED),
        (2, 1, lc.DEFINITION_CHANGED),
    ],
    ids=["same", "unset-is-genesis", "upgraded-since", "ahead"],
)
def test_definition_code(endorsed: int, committed: int, expected: int) -> None:
    assert lc.definition_code(contract_rwset(endorsed), {"assets": committed}) == expected


def test_a_transaction_after_a_commit_of_its_definition_in_the_same_block_is_stale() -> None:
    v2 = dataclasses.replace(V1, sequence=2, version="2.0")
    upgrade = commit_rwset(v2, {"Org1", "Org2"})
    upgrade.reads[0].version.CopyFrom(Version(5, 0).to_proto())
    versions = {
        (lc.NAMESPACE, k.key): Version.from_read(k) for k in upgrade.reads if k.version.block_number
    }
    txs = [
        TxForMvcc("before", VALID, contract_rwset(1)),
        TxForMvcc("upgrade", VALID, upgrade),
        TxForMvcc("after", VALID, contract_rwset(1)),
    ]
    codes, _ = validate_block(9, txs, versions, {}, set())  # type: ignore[arg-type]
    assert codes == [VALID, VALID, lc.DEFINITION_CHANGED]


def test_a_new_name_is_refused_once_the_channel_holds_the_most_definitions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(lifecycle_contract, "DEFINITIONS_MAX", 2)
    genesis = {"bank": dataclasses.replace(V1, name="bank", package_id="")}
    bench = new_bench(genesis)
    for org in ("Org1", "Org2"):
        approve(bench, org, V1)
    assert commit(bench, V1)[0] == 200  # bank + assets: 2
    other = dataclasses.replace(V1, name="other")
    for org in ("Org1", "Org2"):
        approve(bench, org, other)
    status, message = commit(bench, other)
    assert status == 400 and "holds 2 contract definitions" in message
    v2 = dataclasses.replace(V1, sequence=2)  # an upgrade adds no name
    for org in ("Org1", "Org2"):
        approve(bench, org, v2)
    assert commit(bench, v2)[0] == 200


# --- the channel's own lifecycle policy ---------------------------------------------------

EXCHANGE_AND_ONE = parse_policy("AND(Org1.admin, OutOf(1, Org2.admin, Org3.admin))")


@pytest.mark.parametrize(
    ("approving", "commits"),
    [
        ({"Org1", "Org2"}, True),
        ({"Org1", "Org3"}, True),
        ({"Org2", "Org3"}, False),
        ({"Org1"}, False),
        ({"Org1", "Org2", "Org3"}, True),
    ],
    ids=["org1+org2", "org1+org3", "a-majority-without-org1", "org1-alone", "all"],
)
def test_a_channels_lifecycle_policy_replaces_the_majority(
    approving: set[str], commits: bool
) -> None:
    """With `lifecycle_policy` "Org1 and one other", a majority without Org1 does not commit,
    at endorsement (the contract) and at validation (`lifecycle_code`) alike."""
    bench = ContractTester(LifecycleContract(MEMBERS, {}, EXCHANGE_AND_ONE))
    for org in sorted(approving):
        assert approve(bench, org, V1) == 200
    status, message = commit(bench, V1)
    assert (status == 200) == commits, message
    if not commits:
        assert "lifecycle policy" in message and committed(bench, "assets") is None
    verdict = lc.lifecycle_code(commit_rwset(V1, approving), "Org1", ADMIN, MEMBERS, {},
                                EXCHANGE_AND_ONE)  # fmt: skip
    assert verdict == (lc.VALID if commits else lc.INVALID)


def test_transaction_code_reads_the_lifecycle_policy_from_the_config() -> None:
    """`transaction_code` validates a commit under the config's `lifecycle_policy`; a config
    naming an unknown organisation in it is invalid."""
    parties = make_parties()
    config = config_pb2.ChannelConfig()
    config.CopyFrom(parties.view.config)
    config.lifecycle_policy = "AND(Org1.admin, Org2.admin)"
    view = channel_view(config)
    both, one = commit_rwset(V1, {"Org1", "Org2"}), commit_rwset(V1, {"Org1"})
    assert lc.transaction_code(view, both, "Org1", ADMIN) == lc.VALID
    assert lc.transaction_code(view, one, "Org1", ADMIN) == lc.INVALID
    config.lifecycle_policy = "AND(Org1.admin, Org7.admin)"
    with pytest.raises(ConfigError):
        channel_view(config)
