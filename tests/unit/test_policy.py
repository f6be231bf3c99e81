"""Tests for dltmw.core.policy: the endorsement policy language and its evaluation."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import combinations, permutations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dltmw.core.policy import (
    MAX_DEPTH,
    MAX_PRINCIPALS,
    ROLES,
    OutOf,
    Policy,
    PolicyError,
    PolicyResult,
    Principal,
    SignedBy,
    Signer,
    check_policy_orgs,
    evaluate,
    format_policy,
    parse_policy,
    policy_orgs,
)

SAT = PolicyResult.SATISFIED
PENDING = PolicyResult.PENDING
UNSAT = PolicyResult.UNSATISFIABLE


def who(spec: str) -> Signer:
    """Signer from "Org1.peer+admin#2": org Org1, roles {peer, admin}, identity "Org1.peer+admin#2".

    The whole spec is the identity, so the same spec twice is the same identity.
    """
    org, _, roles = spec.partition("#")[0].partition(".")
    return Signer(spec.encode(), org, frozenset(r for r in roles.split("+") if r))


def people(specs: str) -> list[Signer]:
    return [who(s) for s in specs.split()]


def leaf(org: str, role: str) -> SignedBy:
    return SignedBy(Principal(org, role))


# --------------------------------------------------------------------------------------------
# evaluate: table of specifications
# --------------------------------------------------------------------------------------------

# (policy, signed, outstanding, expected)
EVALUATE_CASES: list[tuple[str, str, str, PolicyResult]] = [
    ("AND(Org1.peer, Org2.peer)", "Org1.peer#1 Org2.peer#1", "", SAT),
    ("AND(Org1.peer, Org2.peer)", "Org1.peer#1", "", UNSAT),
    ("AND(Org1.peer, Org2.peer)", "Org1.peer#1", "Org2.peer#1", PENDING),
    ("AND(Org1.peer, Org2.peer)", "Org1.peer#1", "Org1.peer#2", UNSAT),
    ("OR(Org1.peer, Org2.peer)", "Org2.peer#1", "", SAT),
    ("OR(Org1.peer, Org2.peer)", "", "", UNSAT),
    ("OR(Org1.peer, Org2.peer)", "", "Org1.peer#1", PENDING),
    ("OutOf(2, Org1.peer, Org2.peer, Org3.peer)", "Org1.peer#1 Org3.peer#1", "", SAT),
    ("OutOf(2, Org1.peer, Org2.peer, Org3.peer)", "Org1.peer#1", "Org2.peer#1", PENDING),
    ("OutOf(2, Org1.peer, Org2.peer, Org3.peer)", "Org1.peer#1", "Org1.peer#2", UNSAT),
    ("OutOf(3, Org1.peer, Org2.peer, Org3.peer)", "Org1.peer#1 Org2.peer#1", "", UNSAT),
    ("AND(Org1.peer, Org1.peer)", "Org1.peer#1 Org1.peer#2", "", SAT),
    ("AND(Org1.peer, Org1.peer)", "Org1.peer#1 Org1.peer#1", "", UNSAT),
    ("AND(Org1.peer, Org1.peer)", "Org1.peer#1", "Org1.peer#1", UNSAT),
    ("AND(Org1.peer, Org1.peer)", "Org1.peer#1 Org1.peer#1", "Org1.peer#2", PENDING),
    ("OutOf(2, Org1.member, Org1.member, Org1.member)", "Org1.admin#1 Org1.admin#1", "", UNSAT),
    ("AND(Org1.peer, Org1.admin)", "Org1.peer+admin#1", "", UNSAT),
    ("AND(Org1.peer, Org1.admin)", "Org1.peer+admin#1 Org1.admin#2", "", SAT),
    ("OR(AND(A.peer, B.peer), AND(C.peer, D.peer))", "C.peer#1 D.peer#1", "", SAT),
    ("OR(AND(A.peer, B.peer), AND(C.peer, D.peer))", "A.peer#1 C.peer#1", "B.peer#1", PENDING),
    ("OR(AND(A.peer, B.peer), AND(C.peer, D.peer))", "A.peer#1 C.peer#1", "A.peer#2", UNSAT),
    (
        "AND(OutOf(2, A.peer, B.peer, C.peer), OR(A.admin, D.member))",
        "A.peer#1 B.peer#1",
        "",
        UNSAT,
    ),
    (
        "AND(OutOf(2, A.peer, B.peer, C.peer), OR(A.admin, D.member))",
        "A.peer#1 B.peer#1 D.client#1",
        "",
        SAT,
    ),
    ("AND(Org1.member, Org1.peer)", "Org1.peer#1 Org1.client#1", "", SAT),
    (
        "OR(AND(Org1.member, Org2.peer), AND(Org1.admin, Org3.member))",
        "Org1.admin#1 Org3.x#1",
        "",
        SAT,
    ),
    ("Org1.peer", "Org9.peer#1", "", UNSAT),
    ("Org1.peer", "Org9.peer#1", "Org9.peer#2", UNSAT),
    ("Org1.peer", "Org9.peer#1 Org1.peer#1", "", SAT),
    ("Org1.member", "Org1.client#1", "", SAT),
    ("Org1.member", "Org1.orderer#1", "", SAT),
    ("Org1.member", "Org1#1", "", SAT),
    ("Org1.admin", "Org1.peer#1", "", UNSAT),
    ("Org1.admin", "Org1.peer#1", "Org1.admin#1", PENDING),
    ("Org1.peer", "Org2.peer#1", "", UNSAT),
    ("AND(Org1.peer, Org2.peer, Org3.peer)", "", "Org1.peer#1 Org2.peer#1 Org3.peer#1", PENDING),
]

EVALUATE_IDS = [
    "AND of two orgs is satisfied when a peer of each org signed",
    "AND of two orgs with only Org1 signed is unsatisfiable when nothing is outstanding",
    "AND of two orgs with only Org1 signed is pending while an Org2 peer is outstanding",
    "AND of two orgs with only Org1 signed is unsatisfiable when only more Org1 is outstanding",
    "OR of two orgs is satisfied by either org alone",
    "OR with no signer and nothing outstanding is unsatisfiable",
    "OR with no signer is pending while a matching signer is outstanding",
    "OutOf 2 of 3 is satisfied by any two of the orgs",
    "OutOf 2 of 3 with one org signed is pending while a second org is outstanding",
    "OutOf 2 of 3 with one org signed is unsatisfiable when only the same org is outstanding",
    "OutOf 3 of 3 with two orgs signed is unsatisfiable",
    "the same org twice is satisfied by two distinct Org1 peer identities",
    "the same org twice is not satisfied by one Org1 peer identity listed twice",
    "an outstanding identity that already signed adds nothing",
    "one identity listed twice is pending while a second distinct identity is outstanding",
    "OutOf 2 member leaves of one org needs two identities not one repeated",
    "one identity holding peer and admin cannot fill both a peer and an admin leaf",
    "an identity holding peer and admin plus a separate admin fill both leaves",
    "nested OR of ANDs is satisfied by its second branch",
    "nested OR of ANDs is pending when the outstanding signer completes a branch",
    "nested OR of ANDs is unsatisfiable when the outstanding signer completes no branch",
    "nested AND needs the inner OR too and the Org A peers are already used",
    "nested AND is satisfied when a D member completes the inner OR",
    "greedy trap: the peer must go to the peer leaf and the client to the member leaf",
    "greedy trap: the Org1 admin must be kept for the second OR branch",
    "a signer of an org the policy never names is useless",
    "an outstanding signer of an org the policy never names cannot make it pending",
    "a signer of an unknown org does not spoil a satisfied policy",
    "member is matched by a client identity",
    "member is matched by an orderer identity",
    "member is matched by an identity with no roles at all",
    "admin is not matched by a peer identity",
    "admin is pending while an admin of the org is outstanding",
    "a peer of another org does not match",
    "nothing signed yet but every required signer outstanding is pending",
]


@pytest.mark.parametrize(
    ("policy", "signed", "outstanding", "expected"), EVALUATE_CASES, ids=EVALUATE_IDS
)
def test_evaluate(policy: str, signed: str, outstanding: str, expected: PolicyResult) -> None:
    assert evaluate(parse_policy(policy), people(signed), people(outstanding)) is expected


def _greedy_first_fit(policy: Policy, signers: Sequence[Signer]) -> bool:
    """The WRONG algorithm: each leaf, left to right, takes the first unused matching signer."""
    used: set[bytes] = set()
    truth: list[bool] = []
    for principal in _leaves(policy):
        match = next(
            (s for s in signers if s.identity_id not in used and _matches(principal, s)), None
        )
        if match is not None:
            used.add(match.identity_id)
        truth.append(match is not None)
    return _holds(policy, iter(truth))


@pytest.mark.parametrize(
    ("policy", "signed"),
    [
        ("AND(Org1.member, Org1.peer)", "Org1.peer#1 Org1.client#1"),
        ("OR(AND(Org1.member, Org2.peer), AND(Org1.admin, Org3.member))", "Org1.admin#1 Org3.x#1"),
        ("OutOf(2, OR(Org1.member, Org2.admin), Org1.admin)", "Org1.admin#1 Org2.admin#1"),
        (
            "AND(Org1.member, Org1.admin, OR(Org1.peer, Org2.peer))",
            "Org1.admin#1 Org1.peer#1 Org2.peer#1",
        ),
    ],
    ids=[
        "a signer that fits two leaves must not be spent on the first one",
        "a signer spent on a failing OR branch must be released for the next branch",
        "a signer that fits an OR and a later leaf must go to the leaf only it can fill",
        "the member leaf must take the Org1 peer so the Org1 admin is left for the admin leaf",
    ],
)
def test_evaluate_is_not_greedy(policy: str, signed: str) -> None:
    parsed, signers = parse_policy(policy), people(signed)
    assert not _greedy_first_fit(parsed, signers)  # the case really defeats first-fit
    assert evaluate(parsed, signers) is SAT


def test_evaluate_accepts_one_shot_iterators() -> None:
    policy = parse_policy("AND(Org1.peer, Org2.peer)")
    signed = iter(people("Org1.peer#1"))
    outstanding = iter(people("Org2.peer#1"))
    assert evaluate(policy, signed, outstanding) is PENDING


def test_evaluate_a_wide_threshold_with_many_identities_is_fast() -> None:
    policy = OutOf(150, tuple(leaf(f"Org{i % 3}", "peer") for i in range(300)))
    signers = [who(f"Org{i % 3}.peer#{i}") for i in range(200)]
    assert evaluate(policy, signers) is SAT
    assert evaluate(policy, signers[:149], signers[149:]) is PENDING
    assert evaluate(policy, signers[:149]) is UNSAT


# --------------------------------------------------------------------------------------------
# policy_orgs / check_policy_orgs / data types
# --------------------------------------------------------------------------------------------


def test_policy_orgs_names_every_org_at_any_depth() -> None:
    policy = parse_policy("OR(Org1.peer, AND(Org2.admin, OutOf(1, Org3.member, Org1.client)))")
    assert policy_orgs(policy) == frozenset({"Org1", "Org2", "Org3"})


def test_check_policy_orgs_accepts_a_policy_naming_only_known_orgs() -> None:
    check_policy_orgs(parse_policy("AND(Org1.peer, Org2.peer)"), ["Org1", "Org2", "Org3"])


def test_check_policy_orgs_names_every_unknown_org() -> None:
    policy = parse_policy("OR(Org1.peer, AND(OrgX.peer, OrgY.admin))")
    with pytest.raises(PolicyError, match=r"unknown org\(s\) OrgX, OrgY \(known: Org1, Org2\)"):
        check_policy_orgs(policy, iter(["Org2", "Org1"]))


def test_principal_prints_as_org_dot_role() -> None:
    assert str(Principal("Org1", "peer")) == "Org1.peer"


@pytest.mark.parametrize(
    ("org", "role", "message"),
    [
        ("Org1", "king", "unknown role 'king'"),
        ("-Org", "peer", "invalid org id"),
        ("", "peer", "invalid org id"),
    ],
    ids=["a role outside ROLES", "an org id starting with a dash", "an empty org id"],
)
def test_principal_refuses_invalid_fields(org: str, role: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        Principal(org, role)


@pytest.mark.parametrize("n", [0, 3, -1], ids=["n of zero", "n above the rule count", "n < 0"])
def test_outof_refuses_n_out_of_range(n: int) -> None:
    with pytest.raises(PolicyError, match="between 1 and the number of rules"):
        OutOf(n, (leaf("A", "peer"), leaf("B", "peer")))


def test_roles_are_fabrics_five() -> None:
    assert frozenset({"member", "peer", "admin", "client", "orderer"}) == ROLES


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------

A_PEER, B_PEER = leaf("Org1", "peer"), leaf("Org2", "peer")

VALID_CASES: list[tuple[str, Policy]] = [
    ("Org1.peer", A_PEER),
    ("'Org1.peer'", A_PEER),
    ("AND(Org1.peer, Org2.peer)", OutOf(2, (A_PEER, B_PEER))),
    ("OR('Org1.peer','Org2.peer')", OutOf(1, (A_PEER, B_PEER))),
    ("OutOf(1, Org1.peer, Org2.peer)", OutOf(1, (A_PEER, B_PEER))),
    ("and(Org1.peer, Org2.peer)", OutOf(2, (A_PEER, B_PEER))),
    ("Or(Org1.peer, Org2.peer)", OutOf(1, (A_PEER, B_PEER))),
    ("OUTOF(2, Org1.peer, Org2.peer)", OutOf(2, (A_PEER, B_PEER))),
    (" \n\tAND ( Org1.peer ,\n 'Org2.peer' ) \t", OutOf(2, (A_PEER, B_PEER))),
    ("OR(AND(Org1.peer))", OutOf(1, (OutOf(1, (A_PEER,)),))),
    ("'Org1MSP.admin'", leaf("Org1MSP", "admin")),
    ("'my-org_2.member'", leaf("my-org_2", "member")),
    ("9lives.client", leaf("9lives", "client")),
    ("AND.orderer", leaf("AND", "orderer")),
    (
        "OutOf(007, A.peer, B.peer, C.peer, D.peer, E.peer, F.peer, G.peer)",
        OutOf(7, tuple(leaf(org, "peer") for org in "ABCDEFG")),
    ),
]

VALID_IDS = [
    "a bare principal",
    "a single-quoted principal as Fabric writes it",
    "AND is OutOf all",
    "OR is OutOf one, quoted principals without spaces",
    "explicit OutOf",
    "lower-case and",
    "mixed-case Or",
    "upper-case OUTOF",
    "whitespace and newlines between every token",
    "single-rule operators nest",
    "an MSP id as org",
    "org ids may contain dashes and underscores",
    "org ids may start with a digit",
    "an org named like a keyword is a principal when followed by a dot",
    "a count with leading zeros",
]


@pytest.mark.parametrize(("text", "expected"), VALID_CASES, ids=VALID_IDS)
def test_parse_valid(text: str, expected: Policy) -> None:
    assert parse_policy(text) == expected


INVALID_CASES: list[tuple[str, str]] = [
    ("", "empty policy"),
    ("   ", "empty policy"),
    ("AND()", "AND() needs at least one rule"),
    ("or( )", "or() needs at least one rule"),
    ("OutOf(0, Org1.peer)", "OutOf(0, ...) needs 1 <= n <= number of rules (1) at offset 6"),
    ("OutOf(3, Org1.peer, Org2.peer)", "needs 1 <= n <= number of rules (2)"),
    ("OutOf(-1, Org1.peer)", "expected a non-negative integer count at offset 6"),
    ("OutOf(Org1.peer)", "expected a non-negative integer count at offset 6"),
    ("OutOf(1 Org1.peer)", "expected ',' after the count"),
    ("OutOf(99999999999, Org1.peer)", "too large"),
    ("OutOf(1)", "expected ',' after the count"),
    ("Org1.peer Org2.peer", "unexpected trailing input after the policy at offset 10"),
    ("AND(Org1.peer))", "unexpected trailing input after the policy at offset 14"),
    ("AND(Org1.peer", "expected ',' or ')' in AND(...) at offset 13 (found end of input)"),
    ("AND(Org1.peer Org2.peer)", "expected ',' or ')' in AND(...) at offset 14"),
    ("AND(Org1.peer,)", "expected a principal 'Org.role' or AND/OR/OutOf at offset 14"),
    ("AND Org1.peer", "expected '(' after 'AND' at offset 4"),
    ("XOR(Org1.peer)", "unknown operator 'XOR': expected AND, OR or OutOf at offset 0"),
    ("Org1", "expected '.' and a role after 'Org1' at offset 4"),
    ("Org1.", "unknown role '' in principal Org1."),
    ("Org1.king", "unknown role 'king'"),
    ("Org1.Peer", "unknown role 'Peer'"),
    ("Org1.peer.x", "unexpected trailing input after the policy at offset 9"),
    ("'Org1.peer", "unterminated quoted principal"),
    ("'Org1.peer '", 'expected the closing "\'" of a quoted principal at offset 10'),
    ("' Org1.peer'", "expected an org id"),
    ("'Org1'", "expected '.' and a role after 'Org1' at offset 5"),
    ("'AND(Org1.peer)'", "expected '.' and a role after 'AND'"),
    ('"Org1.peer"', "expected a principal 'Org.role' or AND/OR/OutOf at offset 0"),
    ("_Org.peer", "expected a principal 'Org.role' or AND/OR/OutOf at offset 0"),
    ("Or g1.peer", "expected '(' after 'Or' at offset 3"),
    ("AND(Org1.peer; Org2.peer)", "at offset 13 (found '; Org2.peer)')"),
]

INVALID_IDS = [
    "empty text",
    "only whitespace",
    "empty AND",
    "empty or with a space",
    "OutOf with n of zero names the offset of n",
    "OutOf with n above the rule count",
    "OutOf with a negative n",
    "OutOf without a count",
    "OutOf count not followed by a comma",
    "OutOf with an absurd count",
    "OutOf with a count but no rules",
    "two policies side by side",
    "an extra closing parenthesis",
    "a missing closing parenthesis",
    "rules not separated by a comma",
    "a trailing comma",
    "a keyword without parentheses",
    "an unknown operator",
    "an org without a role",
    "an org with a dot but no role",
    "a role outside ROLES",
    "roles are case-sensitive",
    "a dotted suffix after the role",
    "an unterminated quote",
    "whitespace inside a quoted principal before the closing quote",
    "whitespace inside a quoted principal after the opening quote",
    "a quoted org without a role",
    "an operator inside quotes",
    "double quotes",
    "an org id starting with an underscore",
    "whitespace inside a principal",
    "a semicolon as separator",
]


@pytest.mark.parametrize(("text", "message"), INVALID_CASES, ids=INVALID_IDS)
def test_parse_invalid(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(text)
    assert message in str(info.value)


def _nested(depth: int) -> str:
    return "AND(" * depth + "Org1.peer" + ")" * depth


def test_parse_accepts_the_maximum_nesting_depth() -> None:
    policy = parse_policy(_nested(MAX_DEPTH))
    for _ in range(MAX_DEPTH):
        assert isinstance(policy, OutOf)
        policy = policy.rules[0]
    assert policy == A_PEER


def test_parse_refuses_nesting_one_level_deeper_than_the_maximum() -> None:
    with pytest.raises(PolicyError, match=f"deeper than {MAX_DEPTH} levels at offset 128"):
        parse_policy(_nested(MAX_DEPTH + 1))


def test_parse_refuses_hostile_nesting_without_recursion_error() -> None:
    with pytest.raises(PolicyError, match="deeper than"):
        parse_policy(_nested(100_000))


def test_parse_accepts_the_maximum_number_of_principals() -> None:
    policy = parse_policy("OR(" + ", ".join(["Org1.peer"] * MAX_PRINCIPALS) + ")")
    assert isinstance(policy, OutOf)
    assert len(policy.rules) == MAX_PRINCIPALS


def test_parse_refuses_one_principal_more_than_the_maximum() -> None:
    text = "OR(" + ", ".join(["Org1.peer"] * (MAX_PRINCIPALS + 1)) + ")"
    with pytest.raises(PolicyError, match=f"more than {MAX_PRINCIPALS} principals"):
        parse_policy(text)


# --------------------------------------------------------------------------------------------
# format / parse round trip
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("org1.peer", "'org1.peer'"),
        ("and( A.peer ,'B.admin')", "AND('A.peer', 'B.admin')"),
        ("outof(1, A.peer, B.peer)", "OR('A.peer', 'B.peer')"),
        ("OutOf(2, A.peer, B.peer, C.peer)", "OutOf(2, 'A.peer', 'B.peer', 'C.peer')"),
        ("OR(A.member)", "AND('A.member')"),
        ("or(and(A.peer, B.peer), outof(2, C.peer, D.admin, E.member))", None),
    ],
    ids=[
        "a principal is quoted",
        "AND is spelled upper-case with one space after commas",
        "OutOf 1 is written as OR",
        "a true threshold stays OutOf",
        "a single rule is written as AND",
        "nested operators",
    ],
)
def test_format_is_canonical_and_parses_back(text: str, canonical: str | None) -> None:
    policy = parse_policy(text)
    formatted = format_policy(policy)
    if canonical is not None:
        assert formatted == canonical
    assert parse_policy(formatted) == policy
    assert format_policy(parse_policy(formatted)) == formatted


# --------------------------------------------------------------------------------------------
# Property: evaluate agrees with a brute-force model
# --------------------------------------------------------------------------------------------


def _leaves(policy: Policy) -> list[Principal]:
    if isinstance(policy, SignedBy):
        return [policy.principal]
    return [p for rule in policy.rules for p in _leaves(rule)]


def _holds(policy: Policy, truth: Iterator[bool]) -> bool:
    """Evaluate the tree with leaf truth values taken left to right from `truth`."""
    if isinstance(policy, SignedBy):
        return next(truth)
    met = [_holds(rule, truth) for rule in policy.rules]  # a list: consume every leaf
    return sum(met) >= policy.n


def _matches(principal: Principal, signer: Signer) -> bool:
    return signer.org_id == principal.org_id and (
        principal.role == "member" or principal.role in signer.roles
    )


def naive_satisfiable(policy: Policy, signers: Sequence[Signer]) -> bool:
    """Brute force: some set of leaves makes the tree true and has an injective signer map."""
    unique: dict[bytes, Signer] = {}
    for s in signers:
        unique.setdefault(s.identity_id, s)
    leaves = _leaves(policy)
    for k in range(min(len(leaves), len(unique)) + 1):
        for chosen in combinations(range(len(leaves)), k):
            truth = [i in chosen for i in range(len(leaves))]
            if not _holds(policy, iter(truth)):
                continue
            for assigned in permutations(unique.values(), k):
                if all(_matches(leaves[i], s) for i, s in zip(chosen, assigned, strict=True)):
                    return True
    return False


ORGS = ["Org1", "Org2", "Org3", "Org4"]
PRINCIPAL_ROLES = ["member", "member", "peer", "admin", "client"]


def _tree(draw: st.DrawFn, orgs: list[str], leaves: int, depth: int) -> Policy:
    """A random policy over `orgs` with exactly `leaves` leaves."""
    if leaves == 1 and (depth >= 3 or draw(st.integers(0, 3)) > 0):
        role = draw(st.sampled_from(PRINCIPAL_ROLES))
        return SignedBy(Principal(draw(st.sampled_from(orgs)), role))
    cuts: list[int] = []
    if leaves > 1:
        parts = draw(st.integers(1 if depth < 3 else 2, min(3, leaves)))
        cut = st.integers(1, leaves - 1)
        cuts = sorted(draw(st.lists(cut, min_size=parts - 1, max_size=parts - 1, unique=True)))
    sizes = [b - a for a, b in zip([0, *cuts], [*cuts, leaves], strict=True)]
    rules = tuple(_tree(draw, orgs, size, depth + 1) for size in sizes)
    n = draw(st.sampled_from([1, len(rules), draw(st.integers(1, len(rules)))]))
    return OutOf(n, rules)


@st.composite
def policies(draw: st.DrawFn, orgs: list[str] = ORGS[:3], max_leaves: int = 6) -> Policy:
    return _tree(draw, orgs, draw(st.integers(1, max_leaves)), depth=0)


@st.composite
def cases(draw: st.DrawFn) -> tuple[Policy, list[Signer], list[Signer]]:
    """(policy, signed, outstanding): a policy of up to 6 leaves over 1 to 3 of the orgs, and
    a pool of at most 5 identities (of those orgs or the never-named Org4) split between
    signed and outstanding; signed may list an identity more than once."""
    orgs = draw(st.sampled_from([ORGS[:1], ORGS[:2], ORGS[:3]]))
    policy = draw(policies(orgs))
    pool = draw(
        st.lists(
            st.tuples(
                st.sampled_from([*orgs, "Org4"]),
                st.frozensets(st.sampled_from(["peer", "admin", "client"]), max_size=3),
                st.sampled_from(["signed", "signed", "signed", "outstanding", "both", "neither"]),
            ),
            min_size=1,
            max_size=5,
        )
    )
    identities = [(Signer(bytes([i]), org, roles), at) for i, (org, roles, at) in enumerate(pool)]
    signed = [s for s, at in identities if at in ("signed", "both")]
    outstanding = [s for s, at in identities if at in ("outstanding", "both")]
    if signed:
        signed += draw(st.lists(st.sampled_from(signed), max_size=2))  # repeated identities
    return policy, draw(st.permutations(signed)), outstanding


@settings(max_examples=300, deadline=None)
@given(case=cases())
def test_evaluate_agrees_with_brute_force(case: tuple[Policy, list[Signer], list[Signer]]) -> None:
    policy, signed, outstanding = case
    if naive_satisfiable(policy, signed):
        expected = SAT
    elif naive_satisfiable(policy, signed + outstanding):
        expected = PENDING
    else:
        expected = UNSAT
    assert evaluate(policy, signed, outstanding) is expected
    assert evaluate(policy, list(reversed(signed)), outstanding) is expected


@settings(max_examples=200, deadline=None)
@given(policy=policies(ORGS))
def test_format_then_parse_is_identity(policy: Policy) -> None:
    assert parse_policy(format_policy(policy)) == policy
