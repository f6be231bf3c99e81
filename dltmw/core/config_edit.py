"""Edits of a channel config that admins propose: add or remove an organisation or one peer,
rotate a peer's identity, revoke a certificate, change a policy or the block cutting. Each
returns a NEW ChannelConfig (the input is never changed); `config_update.update_content` then
makes the bytes the admins sign.

These are conveniences for `dltmw channel update|org add|org remove|cert revoke`
(docs/governance.md); validity is not decided here but by `config_update.check_update` on every
node (a removed organisation still named by a policy, for example, makes an invalid config).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from dltmw.v1 import config_pb2

Edit = Callable[[config_pb2.ChannelConfig], config_pb2.ChannelConfig]


def _copy(config: config_pb2.ChannelConfig) -> config_pb2.ChannelConfig:
    out = config_pb2.ChannelConfig()
    out.CopyFrom(config)
    return out


def _keep(items: Any, keep: Callable[[Any], bool]) -> None:
    """Keep only the elements of a repeated proto field for which `keep` holds (in place)."""
    kept = [item for item in items if keep(item)]
    del items[:]
    items.extend(kept)


def with_org(
    config: config_pb2.ChannelConfig,
    org_id: str,
    root_certificate_pem: bytes,
    peers: Iterable[config_pb2.NodeConfig] = (),
) -> config_pb2.ChannelConfig:
    """`config` with organisation `org_id` (its root CA) and its peers added as members."""
    if any(o.org_id == org_id for o in config.organizations):
        raise ValueError(f"{org_id} is already a member")
    out = _copy(config)
    out.organizations.add(org_id=org_id, root_certificate_pem=root_certificate_pem)
    for peer in peers:
        if peer.org_id != org_id:
            raise ValueError(f"peer {peer.node_id} belongs to {peer.org_id}, not {org_id}")
        out.peers.append(peer)
    return out


def without_org(config: config_pb2.ChannelConfig, org_id: str) -> config_pb2.ChannelConfig:
    """`config` without member `org_id`, its peers and its privacy auditors."""
    if not any(o.org_id == org_id for o in config.organizations):
        raise ValueError(f"{org_id} is not a member")
    out = _copy(config)
    _keep(out.organizations, lambda o: o.org_id != org_id)
    gone = {p.node_id for p in out.peers if p.org_id == org_id}
    _keep(out.peers, lambda p: p.org_id != org_id)
    _keep(out.privacy_auditors, lambda a: a not in gone)
    return out


def with_peer(
    config: config_pb2.ChannelConfig, entry: config_pb2.NodeConfig
) -> config_pb2.ChannelConfig:
    """`config` with one more peer of a member organisation (it may then join and endorse)."""
    if not any(o.org_id == entry.org_id for o in config.organizations):
        raise ValueError(f"{entry.org_id} is not a member")
    if any(n.node_id == entry.node_id for n in [*config.peers, *config.orderers]):
        raise ValueError(f"{entry.node_id} is already in the channel")
    out = _copy(config)
    out.peers.append(entry)
    return out


def without_peer(config: config_pb2.ChannelConfig, node_id: str) -> config_pb2.ChannelConfig:
    """`config` without peer `node_id`: no gateway asks it to endorse, no endorsement of it
    counts, no client finds it. Its organisation stays a member, so its certificate still may
    read blocks: revoke it (`with_revoked`) to shut it out entirely."""
    if not any(n.node_id == node_id for n in config.peers):
        raise ValueError(f"{node_id} is not a peer of the channel")
    out = _copy(config)
    _keep(out.peers, lambda n: n.node_id != node_id)
    _keep(out.privacy_auditors, lambda a: a != node_id)
    return out


def with_orderer(
    config: config_pb2.ChannelConfig, entry: config_pb2.NodeConfig
) -> config_pb2.ChannelConfig:
    """`config` with one more orderer at the end of the list: on a PBFT-lite channel, one more
    replica from the config block on (docs/governance.md "Changing the replica set")."""
    if not any(o.org_id == entry.org_id for o in config.orderer_organizations):
        raise ValueError(f"{entry.org_id} is not an orderer organisation of the channel")
    if any(n.node_id == entry.node_id for n in [*config.peers, *config.orderers]):
        raise ValueError(f"{entry.node_id} is already in the channel")
    out = _copy(config)
    out.orderers.append(entry)
    return out


def without_orderer(config: config_pb2.ChannelConfig, node_id: str) -> config_pb2.ChannelConfig:
    """`config` without orderer `node_id` (the others keep their order)."""
    if not any(n.node_id == node_id for n in config.orderers):
        raise ValueError(f"{node_id} is not an orderer of the channel")
    out = _copy(config)
    _keep(out.orderers, lambda n: n.node_id != node_id)
    return out


def with_rotated_peer(
    config: config_pb2.ChannelConfig, entry: config_pb2.NodeConfig
) -> config_pb2.ChannelConfig:
    """`config` with peer `entry.node_id`'s identity (and privacy key) replaced by `entry`'s,
    e.g. after `dltmw cert renew --identity`; its endpoint stays unless `entry` names one."""
    out = _copy(config)
    found = next((n for n in out.peers if n.node_id == entry.node_id), None)
    if found is None:
        raise ValueError(f"{entry.node_id} is not a peer of the channel")
    if found.org_id != entry.org_id:
        raise ValueError(f"{entry.node_id} belongs to {found.org_id}, not {entry.org_id}")
    if found.identity == entry.identity and found.privacy_public_key == entry.privacy_public_key:
        raise ValueError(f"{entry.node_id}'s identity in the channel is already this one")
    found.identity = entry.identity
    found.privacy_public_key = entry.privacy_public_key
    found.endpoint = entry.endpoint or found.endpoint
    return out


def with_revoked(
    config: config_pb2.ChannelConfig, org_id: str, serials: Iterable[int]
) -> config_pb2.ChannelConfig:
    """`config` with certificate serial numbers added to `org_id`'s revocation list."""
    out = _copy(config)
    org = next((o for o in out.organizations if o.org_id == org_id), None)
    if org is None:
        raise ValueError(f"{org_id} is not a member")
    listed = set(org.revoked_serials)
    for serial in serials:
        text = f"{serial:x}"
        if text not in listed:
            org.revoked_serials.append(text)
            listed.add(text)
    return out


def with_settings(
    config: config_pb2.ChannelConfig,
    *,
    endorsement_policy: str | None = None,
    admin_policy: str | None = None,
    lifecycle_policy: str | None = None,
    max_tx_count: int | None = None,
    timeout_ms: int | None = None,
    privacy_auditors: Iterable[str] | None = None,
    private_agreement: tuple[int, str] | None = None,
    private_agreement_batches: bool | None = None,
    creator_batches: bool | None = None,
    endorsement_batches: bool | None = None,
    private_creator_batches: bool | None = None,
    identity_references: bool | None = None,
    client_identity_references: bool | None = None,
) -> config_pb2.ChannelConfig:
    """`config` with the given settings replaced (None: unchanged). `private_agreement` =
    (PrivateAgreementPolicy, expression text: "" unless EXPRESSION). `private_agreement_batches`
    lets parties sign one Merkle root per batch of agreements (docs/privacy.md: turning it on
    is safe for agreements in flight, turning it off refuses their batch proofs);
    `creator_batches` lets clients sign one root per request's proposals and envelopes
    (core/creator_batch.py; the same on/off rule), `private_creator_batches` their private
    transactions' envelopes too; `endorsement_batches` lets endorsers sign
    one root per batch of endorsements (core/endorsement_batch.py, the same rule);
    `identity_references` lets the config's nodes name themselves by reference
    (core/identity.py: on, the nodes sign so from the block after the config block; off,
    a reference is malformed from then on, so an endorsement made by reference before and
    committed after is invalid, like a refused batch proof);
    `client_identity_references` lets clients name themselves by reference too (with
    `identity_references`; core/identity_table.py: the table fills from the block after the
    config block on)."""
    out = _copy(config)
    if identity_references is not None:
        out.identity_references = identity_references
    if client_identity_references is not None:
        out.client_identity_references = client_identity_references
    if creator_batches is not None:
        out.creator_batches = creator_batches
    if private_creator_batches is not None:
        out.private_creator_batches = private_creator_batches
    if private_agreement is not None:
        out.private_agreement, out.private_agreement_policy = private_agreement  # type: ignore[assignment]
    if private_agreement_batches is not None:
        out.private_agreement_batches = private_agreement_batches
    if endorsement_batches is not None:
        out.endorsement_batches = endorsement_batches
    if endorsement_policy is not None:
        out.default_endorsement_policy = endorsement_policy
    if admin_policy is not None:
        out.admin_policy = admin_policy
    if lifecycle_policy is not None:
        out.lifecycle_policy = lifecycle_policy
    if max_tx_count is not None:
        out.batch.max_tx_count = max_tx_count
    if timeout_ms is not None:
        out.batch.timeout_ms = timeout_ms
    if privacy_auditors is not None:
        del out.privacy_auditors[:]
        out.privacy_auditors.extend(privacy_auditors)
    return out


def with_trusted_channel(
    config: config_pb2.ChannelConfig, channel_id: str, genesis_hash: bytes
) -> config_pb2.ChannelConfig:
    """`config` trusting `channel_id`'s block 0 `genesis_hash` for cross-channel proofs
    (replacing what it trusted for that channel before)."""
    out = _copy(config)
    _keep(out.trusted_channels, lambda t: t.channel_id != channel_id)
    out.trusted_channels.add(channel_id=channel_id, genesis_hash=genesis_hash)
    return out


def with_trusted_notary(
    config: config_pb2.ChannelConfig, identity: bytes
) -> config_pb2.ChannelConfig:
    """`config` trusting the notary that signs as `identity` (a serialised Identity) for
    cross-flow DvPs (ChannelConfig.trusted_notaries; once, however often it is added)."""
    out = _copy(config)
    if identity not in out.trusted_notaries:
        out.trusted_notaries.append(identity)
    return out
