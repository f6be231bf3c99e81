"""The contract lifecycle: definitions, per-organisation approvals, commit, upgrade (pure).

Fabric's model, kept small. A *definition* says how a channel runs a contract: {name, version,
sequence, package id, endorsement policy, init required}. Each member organisation's admin
*approves* an exact definition; once the channel's lifecycle policy is met (`approvals_meet`:
the config's `lifecycle_policy` over the approving organisations' admins, or by default MAJORITY
of member organisations, `approvals_needed`) any admin may *commit* it, and only with sequence = the
committed sequence + 1 (the first definition of a new name has sequence 1; an upgrade is the
next sequence). Contracts deployed by the channel's genesis config count as committed
definitions with sequence 1 (`genesis_definitions`), so a network built by `dltmw init` needs
no lifecycle transaction to start.

Where the state lives. In the world state, namespace `_lifecycle` (`NAMESPACE`), written only by
ordinary endorsed transactions of the system contract `core/lifecycle_contract.py`:

    definition/<name>                                  -> the committed Definition (canonical JSON)
    approval/<name>/<sequence:020d>/<digest>/<org>     -> the approved Definition

An approval key names the SHA-256 of the definition it approves (`Definition.digest`), so a
changed definition (another package, policy, version...) needs fresh approvals: its key is a
different key. So lifecycle state is ordered, MVCC-validated, replicated and readable at any
height like every other key.

Why a commit is safe without trusting the endorsers. The commit's simulation reads the approval
key of every member organisation for the exact definition (a present key records its version,
an absent one records "absent"). At validation `lifecycle_code` counts the approvals from those
recorded reads, and MVCC then refuses the transaction unless every one of those reads is still
current at its height: a read claiming an approval that does not exist can never pass MVCC. The
same function checks that the creator is an admin of a member organisation, that an approval
is written for the creator's own organisation, and that the sequence is the committed one + 1
(`sequences`: the committed definitions at the start of the block; a second commit of the same
name later in the block fails MVCC on its read of `definition/<name>`).

Why a definition read matters to every other transaction. Endorsers record the sequence of the
definition they simulated under in `ReadWriteSet.contract_sequence`; validation compares it with
the committed sequence at the transaction's height (`definition_code`; a commit of the name
earlier in the same block counts, `changed_in_block`). A transaction endorsed under sequence k
and ordered after k+1 committed is CONTRACT_DEFINITION_CHANGED: it ran code or a policy the
channel no longer runs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Container, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields

from dltmw.core.channel import ChannelView
from dltmw.core.hashing import sha256
from dltmw.core.lifecycle_init import init_code
from dltmw.core.policy import (
    Policy,
    PolicyError,
    PolicyResult,
    Signer,
    check_policy_orgs,
    evaluate,
    format_policy,
    parse_policy,
)
from dltmw.core.rwset import StateEntry
from dltmw.v1 import config_pb2, rwset_pb2, transaction_pb2

NAMESPACE = "_lifecycle"
DEFINITION_PREFIX = "definition/"
DEFINITIONS_END = "definition0"  # just past every "definition/..." key ("/" + 1 = "0")
APPROVAL_PREFIX = "approval/"
GENESIS_SEQUENCE = 1
GENESIS_VERSION = "genesis"
DEFINITIONS_MAX = 1000  # committed definitions a channel may hold (each peer keeps them in memory)
DEFINITION_BYTES_MAX = 16 * 1024
SEQUENCE_MAX = 2**63 - 1
NAME = re.compile(r"[a-z][a-z0-9_]{0,63}\Z")  # as a package manifest's name
VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,31}\Z")
PACKAGE_ID = re.compile(r"[0-9a-f]{64}\Z")

VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
DEFINITION_CHANGED = transaction_pb2.TX_VALIDATION_CODE_CONTRACT_DEFINITION_CHANGED
NOT_ADMIN = transaction_pb2.TX_VALIDATION_CODE_LIFECYCLE_NOT_ADMIN
INVALID = transaction_pb2.TX_VALIDATION_CODE_LIFECYCLE_INVALID


class LifecycleError(ValueError):
    """A definition or lifecycle request that breaks a rule; the message says which."""


@dataclass(frozen=True)
class Definition:
    """How a channel runs one contract. `package_id` "" is a built-in (genesis only)."""

    name: str
    version: str
    sequence: int
    package_id: str
    endorsement_policy: str
    init_required: bool = False

    def to_bytes(self) -> bytes:
        """Canonical JSON: sorted keys, no spaces (what approvals hash and the state holds)."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @property
    def digest(self) -> str:
        """Lower-case hex SHA-256 of the canonical bytes: what an approval approves."""
        return sha256(self.to_bytes()).hex()

    def approval_key(self, org_id: str) -> str:
        """The key `org_id`'s approval of exactly this definition is stored under."""
        return f"{APPROVAL_PREFIX}{self.name}/{self.sequence:020d}/{self.digest}/{org_id}"


def definition_key(name: str) -> str:
    """The key the committed definition of `name` is stored under."""
    return DEFINITION_PREFIX + name


def parse_definition(data: bytes, members: Collection[str]) -> Definition:
    """The definition in `data` (canonical JSON, as `to_bytes` writes it), checked against the
    channel's member organisations; LifecycleError naming the broken rule otherwise."""
    if len(data) > DEFINITION_BYTES_MAX:
        raise LifecycleError(f"definition is larger than {DEFINITION_BYTES_MAX} bytes")
    try:
        fields = json.loads(data)
        definition = Definition(**fields) if isinstance(fields, dict) else None
    except (ValueError, TypeError) as exc:
        message = f"definition is not a JSON object of the definition fields: {exc}"
        raise LifecycleError(message) from None
    if definition is None or definition.to_bytes() != data:
        raise LifecycleError("definition is not in canonical form (sorted keys, no spaces)")
    check_definition(definition, members)
    return definition


def check_definition(d: Definition, members: Collection[str]) -> None:
    """LifecycleError unless every field of a committable definition is well formed."""
    if not isinstance(d.name, str) or not NAME.match(d.name):
        raise LifecycleError(f"contract name {d.name!r} must match {NAME.pattern}")
    if not isinstance(d.version, str) or not VERSION.match(d.version):
        raise LifecycleError(f"version {d.version!r} must match {VERSION.pattern}")
    if type(d.sequence) is not int or not 1 <= d.sequence <= SEQUENCE_MAX:
        raise LifecycleError(f"sequence {d.sequence!r} must be a positive integer")
    if not isinstance(d.package_id, str) or not PACKAGE_ID.match(d.package_id):
        raise LifecycleError(f"package id {d.package_id!r} must be 64 lower-case hex digits")
    if type(d.init_required) is not bool:
        raise LifecycleError("init_required must be true or false")
    if not isinstance(d.endorsement_policy, str):
        raise LifecycleError("endorsement_policy must be a string")
    try:
        policy = parse_policy(d.endorsement_policy)
        check_policy_orgs(policy, members)
    except PolicyError as exc:
        raise LifecycleError(f"endorsement policy: {exc}") from exc
    if format_policy(policy) != d.endorsement_policy:
        raise LifecycleError(
            f"endorsement policy must be in canonical form: {format_policy(policy)!r}"
        )


def canonical_policy(text: str) -> str:
    """The canonical text of a policy (what a definition must carry); PolicyError if invalid."""
    return format_policy(parse_policy(text))


def genesis_definitions(config: config_pb2.ChannelConfig) -> dict[str, Definition]:
    """The contracts the genesis config deploys, as committed definitions with sequence 1."""
    out: dict[str, Definition] = {}
    for c in config.contracts:
        policy = canonical_policy(c.endorsement_policy or config.default_endorsement_policy)
        out[c.name] = Definition(c.name, GENESIS_VERSION, GENESIS_SEQUENCE, c.package_id, policy)
    return out


def committed_definitions(
    entries: Iterable[StateEntry], genesis: Mapping[str, Definition], members: Collection[str]
) -> dict[str, Definition]:
    """Genesis definitions overlaid with the committed `definition/<name>` entries of the
    `_lifecycle` namespace (they were checked when committed: a bad one is a broken invariant)."""
    out = dict(genesis)
    for entry in entries:
        if not entry.key.startswith(DEFINITION_PREFIX):
            continue
        definition = parse_definition(entry.value, members)
        out[definition.name] = definition
    return out


def approvals_needed(member_count: int) -> int:
    """The default lifecycle policy, MAJORITY: more than half of the member organisations."""
    return member_count // 2 + 1


def lifecycle_policy(config: config_pb2.ChannelConfig) -> Policy | None:
    """The channel's own lifecycle policy (checked by `channel_view`), or None: MAJORITY."""
    return parse_policy(config.lifecycle_policy) if config.lifecycle_policy else None


def approvals_meet(
    approved: Collection[str], members: Collection[str], policy: Policy | None
) -> bool:
    """Whether the member organisations in `approved` meet the lifecycle policy: each counts
    as one signature of its admin; None is MAJORITY of `members`."""
    orgs = sorted(set(approved) & set(members))
    if policy is None:
        return len(orgs) >= approvals_needed(len(members))
    signers = [Signer(org.encode(), org, frozenset({"admin"})) for org in orgs]
    return evaluate(policy, signers) is PolicyResult.SATISFIED


def policy_text(policy: Policy | None, members: Collection[str]) -> str:
    """The lifecycle policy as a refusal names it."""
    if policy is None:
        return f"{approvals_needed(len(members))} of {len(members)} member organisations (MAJORITY)"
    return f"the channel's lifecycle policy {format_policy(policy)}"


def next_sequence_error(definition: Definition, committed_sequence: int) -> str:
    """Why `definition` may not be approved or committed now ("" when its sequence is next)."""
    if definition.sequence != committed_sequence + 1:
        return (
            f"{definition.name!r} sequence {definition.sequence} is not the next one: "
            f"the committed sequence is {committed_sequence}, so the next is "
            f"{committed_sequence + 1}"
        )
    return ""


def approvers(reads: Iterable[rwset_pb2.KVRead], definition: Definition) -> set[str]:
    """Organisations whose approval of exactly `definition` a simulation read as present."""
    prefix = definition.approval_key("")
    return {
        r.key[len(prefix) :] for r in reads if r.key.startswith(prefix) and r.HasField("version")
    }


def definition_code(rwset: rwset_pb2.ReadWriteSet, sequences: Mapping[str, int]) -> int:
    """CONTRACT_DEFINITION_CHANGED unless the sequence the endorsers simulated under is the
    committed one (0, the proto default, means the genesis sequence 1)."""
    if rwset.namespace == NAMESPACE:
        return VALID
    endorsed = rwset.contract_sequence or GENESIS_SEQUENCE
    return VALID if sequences.get(rwset.namespace) == endorsed else DEFINITION_CHANGED


def changed_in_block(namespace: str, written: Container[tuple[str, str]]) -> bool:
    """Whether a valid transaction earlier in the block committed a definition of `namespace`
    (any transaction of it later in that block was endorsed under the old one)."""
    return (NAMESPACE, definition_key(namespace)) in written


def lifecycle_code(
    rwset: rwset_pb2.ReadWriteSet,
    creator_org: str,
    creator_roles: Collection[str],
    members: Collection[str],
    sequences: Mapping[str, int],
    policy: Policy | None = None,
) -> int:
    """Validation of a `_lifecycle` transaction at its height (see the module docstring);
    `policy`: the channel's lifecycle policy (None: MAJORITY)."""
    if "admin" not in creator_roles or creator_org not in members:
        return NOT_ADMIN
    if len(rwset.writes) != 1 or rwset.writes[0].is_delete:
        return INVALID
    write = rwset.writes[0]
    try:
        definition = parse_definition(write.value, members)
    except LifecycleError:
        return INVALID
    if next_sequence_error(definition, sequences.get(definition.name, 0)):
        return INVALID
    if write.key.startswith(APPROVAL_PREFIX):
        if write.key != definition.approval_key(creator_org):
            return NOT_ADMIN if write.key.startswith(definition.approval_key("")) else INVALID
        return VALID
    if write.key != definition_key(definition.name):
        return INVALID
    approved = approvers(rwset.reads, definition)
    return VALID if approvals_meet(approved, members, policy) else INVALID


@dataclass(frozen=True)
class CommittedView(ChannelView):
    """A channel's view with its committed definitions: the endorsement policy of each contract
    is its committed definition's, and `_lifecycle` runs under the channel's default policy."""

    definitions: Mapping[str, Definition] = field(default_factory=dict)
    sequences: Mapping[str, int] = field(default_factory=dict)


def committed_view(base: ChannelView, definitions: Mapping[str, Definition]) -> CommittedView:
    """`base` with the policies and sequences of `definitions` (every field of `base` kept)."""
    policies = {name: parse_policy(d.endorsement_policy) for name, d in definitions.items()}
    policies[NAMESPACE] = parse_policy(base.config.default_endorsement_policy)
    kept = {f.name: getattr(base, f.name) for f in fields(ChannelView) if f.name != "policies"}
    sequences = {name: d.sequence for name, d in definitions.items()}
    return CommittedView(
        **kept, policies=policies, definitions=dict(definitions), sequences=sequences
    )


def transaction_code(
    channel: ChannelView, rwset: rwset_pb2.ReadWriteSet, creator_org: str, roles: Collection[str]
) -> int:
    """The lifecycle's verdict on an endorsed transaction at the height `channel` describes:
    `lifecycle_code` for `_lifecycle`, `definition_code` then `lifecycle_init.init_code` for
    every other contract. A plain
    ChannelView (no lifecycle state, e.g. a test's) holds its genesis contracts at sequence 1."""
    if isinstance(channel, CommittedView):
        sequences: Mapping[str, int] = channel.sequences
    else:
        sequences = dict.fromkeys(channel.policies, GENESIS_SEQUENCE)
    if rwset.namespace == NAMESPACE:
        members = channel.membership.org_ids
        policy = lifecycle_policy(channel.config)
        return lifecycle_code(rwset, creator_org, roles, members, sequences, policy)
    code = definition_code(rwset, sequences)
    if code != VALID:
        return code
    found = channel.definitions.get(rwset.namespace) if isinstance(channel, CommittedView) else None
    return init_code(rwset, found.sequence if found and found.init_required else None)
