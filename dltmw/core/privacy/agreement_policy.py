"""Which agreements a private transaction needs: every recipient, or a policy expression.

A channel says it in its signed config (`ChannelConfig.private_agreement`):

* ALL_RECIPIENTS — every recipient's AGREE (sender and auditors included): one recipient down
  and no private transaction naming it can be ordered;
* EXPRESSION — `ChannelConfig.private_agreement_policy`, an expression in the endorsement-policy
  syntax (`core/policy.py`: AND / OR / OutOf over `Org.role`), e.g.
  `OutOf(2, Org1.peer, Org2.peer, Org3.peer)`. This is what lets a transaction commit while a
  recipient is down (its payload is then delivered later: docs/privacy.md "Queued delivery").

Why a projection. Recipients vary per transaction, a channel policy does not: a 2-of-3 rule
for three organisations must still let two of them trade alone. So the expression is evaluated
per transaction *projected onto the organisations of its recipients*: a principal of an
organisation with no recipient node is dropped, and an `OutOf(n, ...)` left with k < n rules
needs all k (a gate left with none is dropped). If nothing is left, the policy says nothing
about these organisations and every recipient must agree (no silent exemption).

Why the sender always. The sending node proposes the execution (its AGREE is the proposal), and
its organisation is the one ordering the transaction: it must never be the party left out. The
sender is named in every agreement body (`sender_key`, signed by each party alike).

Signers are peer nodes (role `peer`, and `member` as for every identity), each counting once; a
policy naming another role could never be met and is refused at configuration time. Every
function here is pure: every node computes the same result from the same bytes and config.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from dltmw.core.policy import (
    OutOf,
    Policy,
    PolicyError,
    PolicyResult,
    Principal,
    SignedBy,
    Signer,
    check_policy_orgs,
    evaluate,
    parse_policy,
)
from dltmw.v1 import config_pb2, private_agreement_pb2

A = private_agreement_pb2
ALL_RECIPIENTS = A.PRIVATE_AGREEMENT_POLICY_ALL_RECIPIENTS
EXPRESSION = A.PRIVATE_AGREEMENT_POLICY_EXPRESSION
SIGNER_ROLES = frozenset({"peer", "member"})
PEER_ROLES = frozenset({"peer"})


def requires_agreements(config: config_pb2.ChannelConfig) -> bool:
    """Does the channel order private transactions only with agreements (either policy)?"""
    return config.private_agreement in (ALL_RECIPIENTS, EXPRESSION)


def check_config(config: config_pb2.ChannelConfig, orgs: Iterable[str]) -> None:
    """The agreement settings of a channel config are coherent; raises PolicyError (the
    channel's config check turns it into ConfigError)."""
    text = config.private_agreement_policy
    if config.private_agreement == EXPRESSION:
        policy = parse_agreement_policy(text)
        check_policy_orgs(policy, orgs)
    elif config.private_agreement not in (A.PRIVATE_AGREEMENT_POLICY_UNSPECIFIED, ALL_RECIPIENTS):
        raise PolicyError(f"unknown private agreement policy {config.private_agreement}")
    elif text:
        raise PolicyError("private_agreement_policy is set but private_agreement is not EXPRESSION")


@functools.lru_cache(maxsize=64)
def parse_agreement_policy(text: str) -> Policy:
    """Parse an agreement policy; only principals a peer node can satisfy are accepted."""
    policy = parse_policy(text)
    for principal in _principals(policy):
        if principal.role not in SIGNER_ROLES:
            raise PolicyError(
                f"agreement policy: {principal} can never sign (agreements are signed by peer"
                " nodes: use .peer or .member)"
            )
    return policy


def project(policy: Policy, orgs: frozenset[str]) -> Policy | None:
    """`policy` restricted to `orgs` (module docstring); None if nothing is left."""
    if isinstance(policy, SignedBy):
        return policy if policy.principal.org_id in orgs else None
    rules = tuple(p for r in policy.rules if (p := project(r, orgs)) is not None)
    if not rules:
        return None
    return OutOf(min(policy.n, len(rules)), rules)


def policy_result(
    config: config_pb2.ChannelConfig,
    recipients: Iterable[bytes],
    sender: bytes,
    agreed: Iterable[bytes],
    outstanding: Iterable[bytes] = (),
) -> PolicyResult:
    """Whether the AGREEs of the nodes with privacy keys `agreed` suffice for a transaction with
    recipient keys `recipients` sent by `sender` (SATISFIED), could still with `outstanding`
    (PENDING) or cannot (UNSATISFIABLE). Keys that are not recipients never count."""
    everyone = frozenset(recipients)
    signed = frozenset(agreed) & everyone
    waiting = (frozenset(outstanding) & everyone) - signed
    orgs = {n.privacy_public_key: n.org_id for n in config.peers if n.privacy_public_key}
    policy = None
    if config.private_agreement == EXPRESSION:
        if sender not in everyone:
            return PolicyResult.UNSATISFIABLE
        policy = project(
            parse_agreement_policy(config.private_agreement_policy),
            frozenset(orgs[k] for k in everyone if k in orgs),
        )
    if policy is None:  # ALL_RECIPIENTS, or an expression naming none of these organisations
        if signed == everyone:
            return PolicyResult.SATISFIED
        return PolicyResult.PENDING if signed | waiting == everyone else PolicyResult.UNSATISFIABLE
    result = evaluate(
        policy,
        [_signer(k, orgs) for k in sorted(signed) if k in orgs],
        [_signer(k, orgs) for k in sorted(waiting) if k in orgs],
    )
    if sender in signed or result is PolicyResult.UNSATISFIABLE:
        return result
    return PolicyResult.PENDING if sender in waiting else PolicyResult.UNSATISFIABLE


def _signer(key: bytes, orgs: dict[bytes, str]) -> Signer:
    return Signer(key, orgs[key], PEER_ROLES)


def _principals(policy: Policy) -> Iterable[Principal]:
    if isinstance(policy, SignedBy):
        yield policy.principal
        return
    for rule in policy.rules:
        yield from _principals(rule)
