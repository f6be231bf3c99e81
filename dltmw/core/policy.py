"""Endorsement policies: a small language, its parser and Fabric's signature-policy semantics.

A policy is a tree. Leaves are `SignedBy(Principal)` ("a signature by an `Org.role` identity");
inner nodes are `OutOf(n, rules)` ("at least n of these rules hold"). The text form is Fabric's:
`AND(a, b)` is `OutOf(2, a, b)`, `OR(a, b)` is `OutOf(1, a, b)`, principals are `Org1.peer` or
Fabric-quoted `'Org1MSP.peer'`. `parse_policy` refuses anything malformed with a `PolicyError`
naming the character offset, and bounds nesting depth and size so hostile configuration cannot
exhaust the stack or the CPU of whoever parses it. `format_policy` is its canonical inverse.

Why each identity counts once
-----------------------------
Fabric evaluates a signature policy by consuming signatures: a signature used to satisfy one
leaf is no longer available to any other leaf. Without that rule `AND(Org1.peer, Org1.peer)`
("two Org1 peers") would be met by one peer signing twice (or by the same signature attached
twice), so a single compromised or lazy peer could impersonate a quorum. We therefore collapse
signers by `identity_id` and require an *injective* assignment of identities to leaves such that
every `OutOf(n, ...)` has at least n satisfied children.

That makes satisfaction an assignment problem, and greedy first-fit is wrong: in
`AND(Org1.member, Org1.peer)` with an Org1 peer and an Org1 client, giving the peer to the
first leaf leaves nobody for the second. `evaluate` searches exhaustively but cheaply:
identities are reduced to *classes* (org plus the roles the policy can ask of that org), since
two identities of one class are interchangeable; a state is the vector of identities still
available per class; and for each node we compute, with memoisation, the set of
Pareto-maximal vectors that can remain after satisfying it. Keeping only maximal vectors is
sound because satisfiability is monotone: more available signers never hurt.

Why tri-state
-------------
An endorsement collector must decide when to stop waiting. `evaluate` answers SATISFIED (the
signatures in hand suffice), PENDING (not yet, but the identities still outstanding could
complete it: keep waiting) or UNSATISFIABLE (even if every outstanding identity signs, it
cannot be met: fail now instead of timing out). Identities of orgs the policy never names are
simply useless to it, never an error; `check_policy_orgs` is the separate, configuration-time
check that a policy only names known orgs.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypeAlias

__all__ = [
    "MAX_DEPTH",
    "MAX_PRINCIPALS",
    "ROLES",
    "OutOf",
    "Policy",
    "PolicyError",
    "PolicyResult",
    "Principal",
    "SignedBy",
    "Signer",
    "check_policy_orgs",
    "evaluate",
    "format_policy",
    "parse_policy",
    "policy_orgs",
]

ROLES = frozenset({"member", "peer", "admin", "client", "orderer"})
MEMBER = "member"
MAX_DEPTH = 32
"""Maximum number of nested AND/OR/OutOf operators the parser accepts."""
MAX_PRINCIPALS = 1000
"""Maximum number of principals (leaves) the parser accepts."""

_ORG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_ROLE_RE = re.compile(r"[A-Za-z0-9_-]*")
_WS_RE = re.compile(r"\s*")
_INT_RE = re.compile(r"[0-9]+")
_KEYWORDS = frozenset({"and", "or", "outof"})


class PolicyResult(enum.Enum):
    """Outcome of evaluating a policy against signatures in hand and identities outstanding."""

    PENDING = "pending"
    SATISFIED = "satisfied"
    UNSATISFIABLE = "unsatisfiable"


class PolicyError(ValueError):
    """A policy is malformed, too large, or names something unknown."""


@dataclass(frozen=True)
class Principal:
    """An `Org.role` principal: any identity of `org_id` holding `role` ("member": any role)."""

    org_id: str
    role: str

    def __post_init__(self) -> None:
        if _ORG_RE.fullmatch(self.org_id) is None:
            raise PolicyError(f"invalid org id {self.org_id!r}: expected [A-Za-z0-9][A-Za-z0-9_-]*")
        if self.role not in ROLES:
            raise PolicyError(f"unknown role {self.role!r}: expected one of {_roles_text()}")

    def __str__(self) -> str:
        return f"{self.org_id}.{self.role}"


@dataclass(frozen=True)
class SignedBy:
    """Leaf: satisfied by one identity matching `principal`."""

    principal: Principal


@dataclass(frozen=True)
class OutOf:
    """Satisfied when at least `n` of `rules` are, each identity counting once overall."""

    n: int
    rules: tuple[Policy, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", tuple(self.rules))
        for rule in self.rules:
            if not isinstance(rule, SignedBy | OutOf):
                raise PolicyError(
                    f"OutOf rules must be SignedBy or OutOf, not {type(rule).__name__}"
                )
        if not 1 <= self.n <= len(self.rules):
            raise PolicyError(
                f"OutOf n={self.n} must be between 1 and the number of rules ({len(self.rules)})"
            )


Policy: TypeAlias = SignedBy | OutOf


@dataclass(frozen=True)
class Signer:
    """One identity that signed (or may still sign); "member" is implied for every identity."""

    identity_id: bytes
    org_id: str
    roles: frozenset[str]

    def __post_init__(self) -> None:
        object.__setattr__(self, "roles", frozenset(self.roles))


def _roles_text() -> str:
    return ", ".join(sorted(ROLES))


# --------------------------------------------------------------------------------------------
# Parsing and formatting
# --------------------------------------------------------------------------------------------


class _Parser:
    """Recursive-descent parser over `text`; `pos` is the current character offset."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.principals = 0

    def error(self, message: str, pos: int | None = None) -> PolicyError:
        at = self.pos if pos is None else pos
        return PolicyError(f"{message} at offset {at}{self.found(at)}")

    def found(self, at: int) -> str:
        if at >= len(self.text):
            return " (found end of input)"
        return f" (found {self.text[at : at + 12]!r})"

    def skip_ws(self) -> None:
        match = _WS_RE.match(self.text, self.pos)
        if match is not None:
            self.pos = match.end()

    def expect(self, char: str, what: str) -> None:
        self.skip_ws()
        if not self.text.startswith(char, self.pos):
            raise self.error(f"expected {what}")
        self.pos += 1

    def parse(self) -> Policy:
        self.skip_ws()
        if self.pos >= len(self.text):
            raise PolicyError("empty policy: expected a principal or AND/OR/OutOf at offset 0")
        policy = self.policy(depth=0)
        self.skip_ws()
        if self.pos < len(self.text):
            raise self.error("unexpected trailing input after the policy")
        return policy

    def policy(self, depth: int) -> Policy:
        self.skip_ws()
        start = self.pos
        if self.text.startswith("'", start):
            return self.quoted_principal()
        word = _ORG_RE.match(self.text, start)
        if word is None:
            raise self.error("expected a principal 'Org.role' or AND/OR/OutOf")
        if self.text.startswith(".", word.end()):
            return self.leaf(self.principal(start, len(self.text)), start)
        keyword = word.group().lower()
        if keyword not in _KEYWORDS:
            self.pos = word.end()
            self.skip_ws()
            if self.text.startswith("(", self.pos):
                raise self.error(
                    f"unknown operator {word.group()!r}: expected AND, OR or OutOf", start
                )
            raise self.error(f"expected '.' and a role after {word.group()!r}", word.end())
        if depth >= MAX_DEPTH:
            raise self.error(f"policy nests deeper than {MAX_DEPTH} levels", start)
        self.pos = word.end()
        self.expect("(", f"'(' after {word.group()!r}")
        return self.operator(keyword, word.group(), start, depth)

    def operator(self, keyword: str, name: str, start: int, depth: int) -> Policy:
        n: int | None = None
        n_pos = self.pos
        if keyword == "outof":
            self.skip_ws()
            n_pos = self.pos
            n = self.integer()
            self.expect(",", f"',' after the count of {name}")
        rules = self.rules(name, depth)
        if keyword == "and":
            n = len(rules)
        elif keyword == "or":
            n = 1
        if n is None or not 1 <= n <= len(rules):
            raise self.error(
                f"{name}({n}, ...) needs 1 <= n <= number of rules ({len(rules)})", n_pos
            )
        return OutOf(n, rules)

    def integer(self) -> int:
        match = _INT_RE.match(self.text, self.pos)
        if match is None:
            raise self.error("expected a non-negative integer count")
        digits = match.group()
        if len(digits) > 9:
            raise self.error(f"count {digits[:12]}... is too large")
        self.pos = match.end()
        return int(digits)

    def rules(self, name: str, depth: int) -> tuple[Policy, ...]:
        self.skip_ws()
        if self.text.startswith(")", self.pos):
            raise self.error(f"{name}() needs at least one rule: expected a principal or operator")
        rules = [self.policy(depth + 1)]
        while True:
            self.skip_ws()
            if self.text.startswith(")", self.pos):
                self.pos += 1
                return tuple(rules)
            self.expect(",", f"',' or ')' in {name}(...)")
            rules.append(self.policy(depth + 1))

    def quoted_principal(self) -> Policy:
        start = self.pos
        end = self.text.find("'", start + 1)
        if end < 0:
            raise self.error('unterminated quoted principal: expected a closing "\'"', start)
        self.pos = start + 1
        principal = self.principal(start + 1, end)
        if self.pos != end:
            raise self.error('expected the closing "\'" of a quoted principal')
        self.pos = end + 1
        return self.leaf(principal, start)

    def principal(self, start: int, limit: int) -> Principal:
        """Parse `Org.role` at `start` within text[:limit]; leave `pos` after the role."""
        org = _ORG_RE.match(self.text, start, limit)
        if org is None:
            raise self.error("expected an org id [A-Za-z0-9][A-Za-z0-9_-]*", start)
        if not self.text.startswith(".", org.end()) or org.end() >= limit:
            raise self.error(f"expected '.' and a role after {org.group()!r}", org.end())
        role = _ROLE_RE.match(self.text, org.end() + 1, limit)
        role_text = "" if role is None else role.group()
        if role_text not in ROLES:
            raise self.error(
                f"unknown role {role_text!r} in principal {org.group()}.{role_text}: "
                f"expected one of {_roles_text()}",
                org.end() + 1,
            )
        self.pos = org.end() + 1 + len(role_text)
        return Principal(org.group(), role_text)

    def leaf(self, principal: Principal, start: int) -> Policy:
        self.principals += 1
        if self.principals > MAX_PRINCIPALS:
            raise self.error(f"policy names more than {MAX_PRINCIPALS} principals", start)
        return SignedBy(principal)


def parse_policy(text: str) -> Policy:
    """Parse a policy such as `OR(AND('Org1.peer', 'Org2.peer'), Org3.admin)`.

    Keywords are case-insensitive, whitespace is free between tokens, principals may be
    single-quoted. Raises `PolicyError` naming the offending character offset.
    """
    return _Parser(text).parse()


def format_policy(policy: Policy) -> str:
    """Canonical text of `policy`; `parse_policy(format_policy(p)) == p`."""
    if isinstance(policy, SignedBy):
        return f"'{policy.principal}'"
    inner = ", ".join(format_policy(rule) for rule in policy.rules)
    if policy.n == len(policy.rules):
        return f"AND({inner})"
    if policy.n == 1:
        return f"OR({inner})"
    return f"OutOf({policy.n}, {inner})"


def _principals(policy: Policy) -> Iterator[Principal]:
    """Every principal of `policy`, left to right, without recursion."""
    stack: list[Policy] = [policy]
    while stack:
        node = stack.pop()
        if isinstance(node, SignedBy):
            yield node.principal
        else:
            stack.extend(reversed(node.rules))


def policy_orgs(policy: Policy) -> frozenset[str]:
    """Every org id the policy names."""
    return frozenset(p.org_id for p in _principals(policy))


def check_policy_orgs(policy: Policy, known_orgs: Iterable[str]) -> None:
    """Raise `PolicyError` naming every org the policy names that is not in `known_orgs`."""
    known = frozenset(known_orgs)
    unknown = policy_orgs(policy) - known
    if unknown:
        raise PolicyError(
            f"policy names unknown org(s) {', '.join(sorted(unknown))}"
            f" (known: {', '.join(sorted(known)) or 'none'})"
        )


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------

_Vec: TypeAlias = tuple[int, ...]
_Mask: TypeAlias = tuple[bool, ...]


@dataclass(frozen=True)
class _Leaf:
    index: int
    own: _Mask  # classes whose identities satisfy this leaf
    keep: _Mask  # classes that leaves outside this node still need: report what is left of them
    classes: tuple[int, ...]  # the indices set in `own`


@dataclass(frozen=True)
class _Gate:
    index: int
    own: _Mask  # classes some leaf below this gate can use
    keep: _Mask
    n: int
    children: tuple[_Leaf | _Gate, ...]  # reordered so children using the same classes are adjacent
    live: tuple[_Mask, ...]  # live[i]: classes still needed once children[: i + 1] are done


_Node: TypeAlias = _Leaf | _Gate


@dataclass(frozen=True)
class _Raw:
    """First compilation pass: a policy node with the set of classes its leaves can use."""

    policy: Policy
    own: frozenset[int]
    children: tuple[_Raw, ...]


@dataclass(frozen=True)
class _SignerClass:
    org_id: str
    roles: frozenset[str]  # roles the policy asks of this org that the identities hold

    def matches(self, principal: Principal) -> bool:
        return self.org_id == principal.org_id and (
            principal.role == MEMBER or principal.role in self.roles
        )


def _unique(signers: Iterable[Signer], into: dict[bytes, Signer]) -> dict[bytes, Signer]:
    """Add signers to `into` by identity_id; the first occurrence of an identity wins."""
    for signer in signers:
        into.setdefault(signer.identity_id, signer)
    return into


def _classify(policy: Policy, signers: Iterable[Signer]) -> dict[_SignerClass, int]:
    """Count signers per interchangeable class; drop signers of orgs the policy never names."""
    asked: dict[str, set[str]] = {}
    for principal in _principals(policy):
        asked.setdefault(principal.org_id, set()).add(principal.role)
    counts: dict[_SignerClass, int] = {}
    for signer in signers:
        roles = asked.get(signer.org_id)
        if roles is None:
            continue
        cls = _SignerClass(signer.org_id, frozenset(signer.roles & roles - {MEMBER}))
        counts[cls] = counts.get(cls, 0) + 1
    return counts


class _Solver:
    """Memoised search: which availability vectors can remain after satisfying a node.

    A vector holds, per signer class, how many identities are still unused. Entries for classes
    that no leaf still to be visited can use are zeroed ("dead"), so that equivalent states
    coincide and frontiers stay small (e.g. OutOf(k, N distinct orgs) keeps one state per k).
    """

    def __init__(self, policy: Policy, counts: dict[_SignerClass, int]) -> None:
        self.classes = sorted(counts, key=lambda c: (c.org_id, sorted(c.roles)))
        self.uses = [0] * len(self.classes)
        self.next_index = 0
        self.root = self.build(self.scan(policy), frozenset())
        # More identities of a class than leaves it can fill are never useful; capping keeps
        # the memo keys small.
        self.start: _Vec = tuple(
            min(counts[c], u) for c, u in zip(self.classes, self.uses, strict=True)
        )
        self.memo: dict[tuple[int, _Vec], frozenset[_Vec]] = {}

    def scan(self, policy: Policy) -> _Raw:
        if isinstance(policy, SignedBy):
            fits = frozenset(i for i, c in enumerate(self.classes) if c.matches(policy.principal))
            for i in fits:
                self.uses[i] += 1
            return _Raw(policy, fits, ())
        children = tuple(self.scan(rule) for rule in policy.rules)
        return _Raw(policy, frozenset().union(*(c.own for c in children)), children)

    def mask(self, classes: frozenset[int]) -> _Mask:
        return tuple(i in classes for i in range(len(self.classes)))

    def build(self, raw: _Raw, external: frozenset[int]) -> _Node:
        """Final pass; `external` = classes that leaves visited after this node may use."""
        index = self.next_index
        self.next_index += 1
        own, keep = self.mask(raw.own), self.mask(raw.own & external)
        if isinstance(raw.policy, SignedBy):
            return _Leaf(index, own, keep, tuple(sorted(raw.own)))
        ordered = sorted(raw.children, key=lambda child: sorted(child.own))
        later: list[frozenset[int]] = [frozenset()]
        for child in reversed(ordered[1:]):
            later.append(later[-1] | child.own)
        later.reverse()
        children = tuple(
            self.build(c, external | after) for c, after in zip(ordered, later, strict=True)
        )
        live = tuple(self.mask(external | after) for after in later)
        return _Gate(index, own, keep, raw.policy.n, children, live)

    def satisfiable(self) -> bool:
        return bool(self.remaining(self.root, self.start))

    def remaining(self, node: _Node, avail: _Vec) -> frozenset[_Vec]:
        """Pareto-maximal vectors that can be left after satisfying `node` from `avail`."""
        mine = _project(avail, node.own)
        key = (node.index, mine)
        cached = self.memo.get(key)
        if cached is None:
            if isinstance(node, _Leaf):
                cached = _maximal(
                    _project((*mine[:i], mine[i] - 1, *mine[i + 1 :]), node.keep)
                    for i in node.classes
                    if mine[i]
                )
            else:
                cached = self.gate(node, mine)
            self.memo[key] = cached
        return frozenset(_merge(inner, avail, node.own) for inner in cached)

    def gate(self, node: _Gate, avail: _Vec) -> frozenset[_Vec]:
        """Dynamic programme over children: states[k] = vectors left with k children met."""
        states: dict[int, frozenset[_Vec]] = {0: frozenset({avail})}
        done: set[_Vec] = set()
        for position, child in enumerate(node.children):
            left_after = len(node.children) - position - 1
            grown: dict[int, set[_Vec]] = {}
            for met, vectors in states.items():
                for vec in vectors:
                    if met + left_after >= node.n:  # may skip this child and still reach n
                        grown.setdefault(met, set()).add(vec)
                    for rest in self.remaining(child, vec):
                        if met + 1 == node.n:
                            done.add(_project(rest, node.keep))
                        else:
                            grown.setdefault(met + 1, set()).add(rest)
            live = node.live[position]
            states = {met: _maximal(_project(v, live) for v in vs) for met, vs in grown.items()}
        return _maximal(done)


def _project(vec: _Vec, mask: _Mask) -> _Vec:
    """`vec` with the entries outside `mask` zeroed."""
    return tuple(v if m else 0 for v, m in zip(vec, mask, strict=True))


def _merge(inner: _Vec, outer: _Vec, mask: _Mask) -> _Vec:
    """`inner` where `mask` is set, `outer` elsewhere."""
    return tuple(i if m else o for i, o, m in zip(inner, outer, mask, strict=True))


def _maximal(vectors: Iterable[_Vec]) -> frozenset[_Vec]:
    """The Pareto-maximal vectors: drop any vector dominated componentwise by another."""
    kept: list[_Vec] = []
    for vec in sorted(set(vectors), key=sum, reverse=True):
        if not any(all(k >= v for k, v in zip(other, vec, strict=True)) for other in kept):
            kept.append(vec)
    return frozenset(kept)


def _satisfiable(policy: Policy, signers: Iterable[Signer]) -> bool:
    return _satisfiable_memo(policy, tuple(signers))


@functools.lru_cache(maxsize=4096)
def _satisfiable_memo(policy: Policy, signers: tuple[Signer, ...]) -> bool:
    # Pure and deterministic, and asked the same question for every transaction (the same
    # endorsers under the same policy): the gateway and every committing peer evaluate it per
    # transaction, so the solver would otherwise cost more than a signature check.
    return _Solver(policy, _classify(policy, signers)).satisfiable()


def evaluate(
    policy: Policy, signers: Iterable[Signer], outstanding: Iterable[Signer] = ()
) -> PolicyResult:
    """Evaluate `policy`, each distinct identity counting at most once in the whole policy.

    SATISFIED if `signers` satisfy it; else PENDING if `signers` together with `outstanding`
    would; else UNSATISFIABLE. Repeated identity_ids are collapsed (first occurrence wins).
    """
    signed = _unique(signers, {})
    if _satisfiable(policy, signed.values()):
        return PolicyResult.SATISFIED
    everyone = _unique(outstanding, dict(signed))
    if len(everyone) > len(signed) and _satisfiable(policy, everyone.values()):
        return PolicyResult.PENDING
    return PolicyResult.UNSATISFIABLE
