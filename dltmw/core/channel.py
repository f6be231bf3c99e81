"""A channel's configuration as the core uses it: members, orderers, contracts and policies.

Block 0 carries the first config (sequence 0); every valid config update (`config_update.py`)
replaces it with the next one (sequence + 1), applied by every node at the same block. A view is
immutable: a change builds a new `ChannelView` (with a new `Membership`, so no cache outlives
the config that filled it), and the node swaps it into the channel's one `CurrentConfig`, which
every role and servicer of that channel reads instead of keeping a copy. Everything that checks
a signature on a channel goes through `ChannelView.membership`, so the set of trusted roots (and
revoked certificates) is exactly the one named in the channel's current config — and, on a
channel with `identity_references`, the set of nodes that may sign by reference (its peers and
orderers, `core/identity.py`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError

from dltmw.core.identity import Membership
from dltmw.core.identity_table import takes_client_references
from dltmw.core.policy import Policy, check_policy_orgs, parse_policy
from dltmw.core.privacy.agreement_policy import check_config as check_agreement_config
from dltmw.core.verified_memo import REPLICA_MEMO_GENERATION
from dltmw.v1 import algorithms_pb2, config_pb2, identity_pb2

CHANNEL_ID_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{0,63}$")
SERIAL_RE = re.compile(r"^[0-9a-f]{1,40}$")
MLKEM768_PUBLIC_BYTES = 1184
REVOKED_MAX = 10_000  # serials per organisation: a config is read by every node on every start


class ConfigError(ValueError):
    """The channel configuration is invalid."""


@dataclass(frozen=True)
class ChannelView:
    """Immutable, validated view of one channel's config."""

    config: config_pb2.ChannelConfig
    membership: Membership
    orderer_membership: Membership
    policies: dict[str, Policy]
    admin_policy: Policy | None = None

    @property
    def channel_id(self) -> str:
        """The channel's id."""
        return self.config.channel_id

    @property
    def sequence(self) -> int:
        """Config sequence: 0 for block 0's config, +1 per applied config update."""
        return self.config.sequence

    def policy_for(self, contract: str) -> Policy | None:
        """Endorsement policy of a deployed contract, or None if it is not deployed."""
        return self.policies.get(contract)

    def orderer_ids(self) -> list[str]:
        """Node ids of the ordering service."""
        return [n.node_id for n in self.config.orderers]


class CurrentConfig:
    """The one holder of a channel's current view on a node role (peer or orderer ledger).

    Roles and servicers keep this holder, never a view, so they all switch at once when the
    config block that changes it commits. `replace` is called by the role's executor right after
    that block is durable, on the event loop, so no reader sees a half-applied change.
    """

    __slots__ = ("_clients", "_view")

    def __init__(self, view: ChannelView, clients: Mapping[Any, Any] | None = None) -> None:
        """`clients`: a peer's identity table of this channel (`core/identity_table.py`, the
        ledger's), given to each view's membership whose config lets clients sign by reference
        (`ChannelConfig.client_identity_references`); None on orderers (they keep none)."""
        self._clients = clients
        self._view = self._own(view)

    def _own(self, view: ChannelView) -> ChannelView:
        """`view`, or where clients' references resolve through this holder's table, a view of
        the same config with a membership of its own given the table: the view handed in may be
        another role's too (a node that orders and keeps a peer starts both from block 0's
        view), and an orderer's membership must not resolve through a peer's table (PBFT-lite
        replicas judge a request alike only without one: `txcheck._unresolvable`)."""
        if self._clients is None or not takes_client_references(view.config):
            return view
        own = channel_view(view.config)
        own.membership.use_clients(self._clients)
        return own

    @property
    def view(self) -> ChannelView:
        """The channel's current view."""
        return self._view

    def replace(self, view: ChannelView) -> None:
        """Apply the next config; refuses anything but this channel's next sequence."""
        old = self._view
        if view.channel_id != old.channel_id or view.sequence != old.sequence + 1:
            raise ConfigError(
                f"config {view.channel_id}#{view.sequence} does not follow "
                f"{old.channel_id}#{old.sequence}"
            )
        self._view = self._own(view)


def majority_admin_policy(org_ids: list[str]) -> str:
    """MAJORITY of the member organisations' admins: more than half of them, one admin each."""
    principals = ", ".join(f"{org}.admin" for org in sorted(org_ids))
    return f"OutOf({len(org_ids) // 2 + 1}, {principals})"


def _revoked(config: config_pb2.ChannelConfig) -> dict[str, list[int]]:
    revoked: dict[str, list[int]] = {}
    for org in config.organizations:
        if len(org.revoked_serials) > REVOKED_MAX:
            raise ConfigError(f"{org.org_id}: more than {REVOKED_MAX} revoked serials")
        for serial in org.revoked_serials:
            if not SERIAL_RE.match(serial):
                raise ConfigError(f"{org.org_id}: revoked serial {serial!r} is not lower-case hex")
        revoked[org.org_id] = [int(s, 16) for s in org.revoked_serials]
    return revoked


def _parsed(text: str, orgs: dict[str, bytes], what: str) -> Policy:
    try:
        policy = parse_policy(text)
        check_policy_orgs(policy, orgs)
    except ValueError as exc:
        raise ConfigError(f"{what}: {exc}") from exc
    return policy


def _check_key_wrap(config: config_pb2.ChannelConfig) -> None:
    """A hybrid channel publishes an ML-KEM-768 key for every peer with a privacy key (else no
    payload could be wrapped for it). A wrap this node does not know is not refused here: the
    node still follows the public ledger; its privacy manager refuses such payloads."""
    if config.private_key_wrap != algorithms_pb2.KEY_WRAP_ALGORITHM_X25519_MLKEM768:
        return
    for peer in config.peers:
        if peer.privacy_public_key and len(peer.privacy_kem_public_key) != MLKEM768_PUBLIC_BYTES:
            raise ConfigError(
                f"peer {peer.node_id}: a hybrid channel needs its {MLKEM768_PUBLIC_BYTES}-byte"
                " ML-KEM-768 key (privacy_kem_public_key)"
            )


def _check_trusted_channels(config: config_pb2.ChannelConfig) -> None:
    """Each trusted channel named once, by a valid id other than this one, with a block hash."""
    seen: set[str] = set()
    for t in config.trusted_channels:
        if not CHANNEL_ID_RE.match(t.channel_id) or t.channel_id == config.channel_id:
            raise ConfigError(f"trusted channel {t.channel_id!r}: not another channel's id")
        if t.channel_id in seen or len(t.genesis_hash) != 32:
            raise ConfigError(f"trusted channel {t.channel_id!r}: twice, or no 32-byte hash")
        seen.add(t.channel_id)


def _check_trusted_notaries(config: config_pb2.ChannelConfig) -> None:
    """Each trusted notary named once, by a serialised Identity with an organisation and a
    certificate (its key is what a notarisation's signature is checked against)."""
    seen: set[bytes] = set()
    for raw in config.trusted_notaries:
        try:
            who = identity_pb2.Identity.FromString(raw)
        except DecodeError:
            who = identity_pb2.Identity()
        if not who.org_id or not who.certificate_der or raw in seen:
            raise ConfigError("trusted notary: twice, or not an identity with a certificate")
        seen.add(raw)


def channel_view(config: config_pb2.ChannelConfig) -> ChannelView:
    """Validate a ChannelConfig and build its view; raises ConfigError."""
    if not CHANNEL_ID_RE.match(config.channel_id):
        raise ConfigError(f"invalid channel id {config.channel_id!r}")
    if not config.organizations or not config.orderers:
        raise ConfigError("a channel needs member organisations and at least one orderer")
    roots = {o.org_id: o.root_certificate_pem for o in config.organizations}
    if len(roots) != len(config.organizations):
        raise ConfigError("an organisation is listed twice")
    orderer_roots = {o.org_id: o.root_certificate_pem for o in config.orderer_organizations}
    if config.batch.max_tx_count < 1 or config.batch.max_bytes < 1 or config.batch.timeout_ms < 1:
        raise ConfigError("batch limits must be positive")
    policies: dict[str, Policy] = {}
    for contract in config.contracts:
        text = contract.endorsement_policy or config.default_endorsement_policy
        policies[contract.name] = _parsed(text, roots, f"contract {contract.name!r}")
    admin_text = config.admin_policy or majority_admin_policy(list(roots))
    admin_policy = _parsed(admin_text, roots, "admin policy")
    if config.lifecycle_policy:
        _parsed(config.lifecycle_policy, roots, "lifecycle policy")
    if config.commit_proof_policy:
        _parsed(config.commit_proof_policy, roots, "commit proof policy")
    _check_key_wrap(config)
    try:
        check_agreement_config(config, roots)
    except ValueError as exc:
        raise ConfigError(f"private agreement policy: {exc}") from exc
    _check_trusted_channels(config)
    _check_trusted_notaries(config)
    # The config's nodes may sign by reference on a channel that says so (core/identity.py).
    referable = (
        [n.identity for n in (*config.peers, *config.orderers)]
        if config.identity_references
        else None
    )
    try:
        membership = Membership(roots, _revoked(config), references=referable)
        orderer_membership = Membership(
            orderer_roots, memo_generation=REPLICA_MEMO_GENERATION, references=referable
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    return ChannelView(
        config=config,
        membership=membership,
        orderer_membership=orderer_membership,
        policies=policies,
        admin_policy=admin_policy,
    )
