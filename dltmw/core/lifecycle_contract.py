"""The `_lifecycle` system contract: approve and commit contract definitions (pure).

It runs like every contract (`core/contract.simulate`, endorsed under the channel's default
endorsement policy, ordered, MVCC-validated), so lifecycle state is replicated and validated
like any other state (`core/lifecycle.py` has the rules and the theory). Endorsers admit a
`_lifecycle` proposal only from an admin identity (PERMISSION_DENIED otherwise), and validation
re-checks everything that matters (`lifecycle.lifecycle_code`) so a dishonest endorser cannot
commit what the rules refuse.

Functions (arguments are bytes, the definition as canonical JSON, `Definition.to_bytes`):

- `approve(definition)`: the creator's organisation approves exactly this definition; its
  sequence must be the committed one + 1. Returns the definition's digest (hex).
- `commit(definition)`: commits it once approvals of exactly it meet the lifecycle policy;
  refused (400) naming who approved and how many are needed.
- `definitions()`: the committed definitions as a JSON list (genesis ones included).
- `approvals(definition)`: the organisations that approved exactly this definition (JSON list).

A refusal of approve/commit is status 400: the caller's request does not fit the state.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict

from dltmw.core.contract import Context, Contract, ContractError
from dltmw.core.lifecycle import (
    DEFINITION_PREFIX,
    DEFINITIONS_END,
    DEFINITIONS_MAX,
    NAMESPACE,
    Definition,
    LifecycleError,
    approvals_meet,
    definition_key,
    next_sequence_error,
    parse_definition,
    policy_text,
)
from dltmw.core.policy import Policy

ADMIN_FUNCTIONS = frozenset({"approve", "commit"})  # endorsers admit these from admins only


class LifecycleContract(Contract):
    """The lifecycle of one channel: its member organisations and genesis definitions."""

    name = NAMESPACE

    def __init__(
        self,
        members: Sequence[str],
        genesis: Mapping[str, Definition],
        policy: Policy | None = None,
    ) -> None:
        self._members = tuple(sorted(members))
        self._genesis = dict(genesis)
        self._policy = policy  # the channel's lifecycle policy; None: MAJORITY

    def approve(self, ctx: Context, args: Sequence[bytes]) -> bytes:
        """Approve a definition for the creator's organisation."""
        definition = self._next(ctx, args)
        org = ctx.tx.creator_org if ctx.tx is not None else ""
        if org not in self._members:
            raise ContractError(f"{org!r} is not a member organisation of the channel", 403)
        ctx.put(definition.approval_key(org), definition.to_bytes())
        return definition.digest.encode()

    def commit(self, ctx: Context, args: Sequence[bytes]) -> bytes:
        """Commit a definition whose approvals meet the channel's lifecycle policy."""
        definition = self._next(ctx, args)
        approved = [m for m in self._members if ctx.get(definition.approval_key(m)) is not None]
        if not approvals_meet(approved, self._members, self._policy):
            raise ContractError(
                f"definition {definition.name!r} sequence {definition.sequence} is approved by "
                f"{', '.join(approved) or 'no organisation'}: it needs "
                f"{policy_text(self._policy, self._members)}"
            )
        if definition.sequence == 1:
            self._room_for_one_more(ctx)
        ctx.put(definition_key(definition.name), definition.to_bytes())
        return definition.digest.encode()

    def _room_for_one_more(self, ctx: Context) -> None:
        """Refuse a new name once the channel holds DEFINITIONS_MAX definitions (every peer
        keeps them in memory); the range read is recorded, so a phantom fails validation."""
        stored = ctx.range(DEFINITION_PREFIX, DEFINITIONS_END)
        held = len(set(self._genesis) | {k.removeprefix(DEFINITION_PREFIX) for k, _ in stored})
        if held >= DEFINITIONS_MAX:
            raise ContractError(f"the channel holds {DEFINITIONS_MAX} contract definitions")

    def definitions(self, ctx: Context, args: Sequence[bytes]) -> bytes:
        """The committed definitions, by name (JSON list of objects)."""
        found = dict(self._genesis)
        for key, value in ctx.range(DEFINITION_PREFIX, DEFINITIONS_END):
            found[key.removeprefix(DEFINITION_PREFIX)] = parse_definition(value, self._members)
        listed = [asdict(found[name]) for name in sorted(found)][:DEFINITIONS_MAX]
        return json.dumps(listed, sort_keys=True).encode()

    def approvals(self, ctx: Context, args: Sequence[bytes]) -> bytes:
        """The member organisations that approved exactly this definition (JSON list)."""
        definition = self._parse(args)
        orgs = [m for m in self._members if ctx.get(definition.approval_key(m)) is not None]
        return json.dumps(orgs).encode()

    def _parse(self, args: Sequence[bytes]) -> Definition:
        if len(args) != 1:
            raise ContractError("expected one argument: the definition (canonical JSON)")
        try:
            return parse_definition(args[0], self._members)
        except LifecycleError as exc:
            raise ContractError(f"invalid definition: {exc}") from exc

    def _next(self, ctx: Context, args: Sequence[bytes]) -> Definition:
        """The definition in `args`, refused unless its sequence is the committed one + 1
        (the read of the committed definition is recorded: MVCC guards it to commit)."""
        definition = self._parse(args)
        current = ctx.get(definition_key(definition.name))
        if current is not None:
            sequence = parse_definition(current, self._members).sequence
        else:
            genesis = self._genesis.get(definition.name)
            sequence = genesis.sequence if genesis is not None else 0
        error = next_sequence_error(definition, sequence)
        if error:
            raise ContractError(error)
        return definition
