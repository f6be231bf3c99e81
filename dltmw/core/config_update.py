"""Channel config updates: the pure check every node applies, and the helpers that build one.

Who decides: the admins of the member organisations. A config update (a HEADER_TYPE_CONFIG_UPDATE
envelope whose data is a `ConfigUpdate`) carries the channel's complete next config and the
sequence of the config it replaces, signed by admins; it takes effect only if those signatures
satisfy the CURRENT config's admin policy (default: MAJORITY of the member organisations' admins,
`channel.majority_admin_policy`). A full config rather than a delta: every node checks exactly
the bytes it will apply, and "what changes" is a diff anyone can print.

How: the orderer checks an update at admission (`check_update`, refusing with a specific reason)
and cuts it into a block of its own (`is_config_update`, `core/cutter.py`); every peer and the
orderer itself check it again when that block commits (`config_verdict`, a validation code: the
same pure function of the bytes and the config in force, so every node reaches the same verdict
at the same height) and switch to the new view from the next block on. An update that was valid
when admitted can be stale when ordered (another update went first): it is then a
CONFIG_SEQUENCE_STALE transaction that changes nothing. Admin certificates are judged at the
envelope's header timestamp, like every commit-time check (no clock here).

The applied config is also written to the world state (`CONFIG_NAMESPACE`/`CONFIG_KEY`) in the
same sqlite transaction as its block, so a restarted node rebuilds its current view from its
ledger (`restored_view`) without scanning the chain for the latest config block.
"""

from __future__ import annotations

from datetime import datetime

from google.protobuf.message import DecodeError

from dltmw.core import policy as policy_mod
from dltmw.core.channel import ChannelView, ConfigError, channel_view
from dltmw.core.errors import ClientError, reason_value
from dltmw.core.hashing import compute_tx_id
from dltmw.core.identity import IdentityError, SigningIdentity
from dltmw.core.rwset import StateWrite, Version
from dltmw.v1 import common_pb2, config_pb2, config_update_pb2, errors_pb2, transaction_pb2

R = errors_pb2
C = transaction_pb2
CONFIG_NAMESPACE = "_config"
"""World-state namespace of the applied config (not a contract name: contracts can't reach it)."""
CONFIG_KEY = "channel"
SIGNATURES_MAX = 100  # admin signatures per update: each costs a public-key operation


class ConfigUpdateError(ClientError):
    """A config update refused: `reason` for the caller at admission, `code` for the block."""

    def __init__(
        self, reason: int, code: int, message: str, metadata: dict[str, str] | None = None
    ) -> None:
        super().__init__(reason, message, metadata)
        self.code = code


def _invalid(message: str, reason: int = R.ERROR_REASON_CONFIG_INVALID) -> ConfigUpdateError:
    return ConfigUpdateError(reason, C.TX_VALIDATION_CODE_CONFIG_UPDATE_INVALID, message)


def _denied(reason: int, message: str) -> ConfigUpdateError:
    return ConfigUpdateError(reason, C.TX_VALIDATION_CODE_CONFIG_POLICY_FAILURE, message)


def update_content(view: ChannelView, new_config: config_pb2.ChannelConfig) -> bytes:
    """The bytes admins sign: `new_config` (its sequence set to the next one) replacing `view`."""
    config = config_pb2.ChannelConfig()
    config.CopyFrom(new_config)
    config.sequence = view.sequence + 1
    return config_update_pb2.ConfigUpdateContent(
        channel_id=view.channel_id, sequence=view.sequence, config=config.SerializeToString()
    ).SerializeToString()


def add_signature(update: config_update_pb2.ConfigUpdate, admin: SigningIdentity) -> None:
    """Sign `update.content` as `admin` (in place; a partially signed update is passed on)."""
    update.signatures.add(signer=admin.identity_bytes, signature=admin.sign(update.content))


def update_envelope(
    update: config_update_pb2.ConfigUpdate,
    channel_id: str,
    creator: SigningIdentity,
    nonce: bytes,
    at: datetime,
) -> bytes:
    """The CONFIG_UPDATE envelope that submits `update`, signed by `creator` (any member)."""
    header = common_pb2.Header(
        type=common_pb2.HEADER_TYPE_CONFIG_UPDATE,
        channel_id=channel_id,
        tx_id=compute_tx_id(nonce, creator.identity_bytes),
        creator=creator.identity_bytes,
        nonce=nonce,
    )
    header.timestamp.FromDatetime(at)
    payload = common_pb2.Payload(
        header=header.SerializeToString(), data=update.SerializeToString()
    ).SerializeToString()
    return common_pb2.Envelope(payload=payload, signature=creator.sign(payload)).SerializeToString()


def _parse_update(
    data: bytes,
) -> tuple[config_update_pb2.ConfigUpdate, config_update_pb2.ConfigUpdateContent]:
    try:
        update = config_update_pb2.ConfigUpdate.FromString(data)
        content = config_update_pb2.ConfigUpdateContent.FromString(update.content)
    except DecodeError as exc:
        raise _invalid(f"config update does not parse: {exc}", R.ERROR_REASON_MALFORMED) from exc
    return update, content


def _check_signatures(
    update: config_update_pb2.ConfigUpdate, view: ChannelView, at: datetime
) -> None:
    """Every signature must verify and be an admin's; together they must meet the policy."""
    if not update.signatures:
        raise _denied(R.ERROR_REASON_CONFIG_UPDATE_UNSIGNED, "config update carries no signature")
    if len(update.signatures) > SIGNATURES_MAX:
        raise _denied(R.ERROR_REASON_INVALID_FIELD, f"more than {SIGNATURES_MAX} signatures")
    signers: list[policy_mod.Signer] = []
    for i, sig in enumerate(update.signatures):
        try:
            who = view.membership.verify(sig.signer, update.content, sig.signature, at)
        except IdentityError as exc:
            raise _denied(reason_value(exc.reason), f"signature {i}: {exc}") from exc
        if "admin" not in who.roles:
            raise _denied(
                R.ERROR_REASON_CONFIG_SIGNER_NOT_ADMIN,
                f"signature {i} is by {who.common_name!r} ({who.org_id}), not an admin",
            )
        signers.append(policy_mod.Signer(who.identity_id, who.org_id, who.roles))
    policy = view.admin_policy
    if policy is None or policy_mod.evaluate(policy, signers) != policy_mod.PolicyResult.SATISFIED:
        orgs = sorted({s.org_id for s in signers})
        text = policy_mod.format_policy(policy) if policy is not None else "none"
        raise _denied(
            R.ERROR_REASON_CONFIG_POLICY_UNSATISFIED,
            f"admins of {', '.join(orgs)} do not satisfy the admin policy {text}",
        )


def _next_view(
    content: config_update_pb2.ConfigUpdateContent, view: ChannelView, at: datetime
) -> ChannelView:
    try:
        config = config_pb2.ChannelConfig.FromString(content.config)
    except DecodeError as exc:
        raise _invalid(f"new config does not parse: {exc}", R.ERROR_REASON_MALFORMED) from exc
    if config.channel_id != view.channel_id:
        raise _invalid(f"the new config names channel {config.channel_id!r}")
    if config.sequence != view.sequence + 1:
        raise _invalid(f"the new config has sequence {config.sequence}, not {view.sequence + 1}")
    if config.ordering != view.config.ordering:
        raise _invalid("a config update cannot change the ordering type")
    try:
        nxt = channel_view(config)
    except ConfigError as exc:
        raise _invalid(f"the new config is invalid: {exc}") from exc
    if config.ordering == config_pb2.ORDERING_TYPE_PBFT:
        _check_replica_change(nxt, view, at)
    _check_peers(nxt, view, at)
    return nxt


def _check_peers(nxt: ChannelView, view: ChannelView, at: datetime) -> None:
    """Every peer of the new config is named once, and each one the update adds or changes has
    an identity that is a valid certificate of its own organisation now: a gateway must be able
    to ask it and trust its answer. (Peers it leaves as they were are not checked again: a
    revoked peer certificate must not block the update that removes the peer.)"""
    before = {p.node_id: p.SerializeToString() for p in view.config.peers}
    seen: set[str] = set()
    for peer in nxt.config.peers:
        if peer.node_id in seen:
            raise _invalid(f"peer {peer.node_id} is listed twice")
        seen.add(peer.node_id)
        if before.get(peer.node_id) == peer.SerializeToString():
            continue
        try:
            who = nxt.membership.identify(peer.identity, at)
        except IdentityError as exc:
            raise _invalid(f"peer {peer.node_id}: {exc}") from exc
        if who.org_id != peer.org_id:
            raise _invalid(f"peer {peer.node_id}'s identity belongs to {who.org_id}")


def replica_set(config: config_pb2.ChannelConfig) -> list[tuple[str, str, bytes]]:
    """Who the PBFT-lite replicas are, in replica-index order (endpoints excluded: they may
    change freely). A config block that changes it ends an epoch (`replica_set_changed`)."""
    return [(o.node_id, o.org_id, o.identity) for o in config.orderers]


def replica_set_changed(before: ChannelView, after: ChannelView) -> bool:
    """Does applying `after` over `before` start a new epoch of a PBFT-lite channel?"""
    pbft = after.config.ordering == config_pb2.ORDERING_TYPE_PBFT
    return pbft and replica_set(before.config) != replica_set(after.config)


def _replica_error(reason: int, message: str, **metadata: str) -> ConfigUpdateError:
    return ConfigUpdateError(
        reason, C.TX_VALIDATION_CODE_CONFIG_UPDATE_INVALID, message, dict(metadata)
    )


def _check_replica_change(nxt: ChannelView, view: ChannelView, at: datetime) -> None:
    """A PBFT-lite replica set changes by one replica added (at the end) or removed at a time,
    the others kept in order and unchanged, never below 4 replicas (f >= 1): one change per
    epoch keeps every boundary a single, checkable step (docs/governance.md). Re-keying a
    replica (same id, new identity) is refused: remove it, then add it under a new id."""
    old, new = replica_set(view.config), replica_set(nxt.config)
    if old == new:
        return
    if len(new) < 4:
        raise _replica_error(
            R.ERROR_REASON_REPLICA_SET_TOO_SMALL,
            f"a PBFT-lite channel needs at least 4 replicas; the update leaves {len(new)}",
            n=str(len(new)),
        )
    if len({node_id for node_id, _, _ in new}) != len(new):
        raise _replica_error(R.ERROR_REASON_REPLICA_SET_CHANGE_INVALID, "a replica is listed twice")
    if len(new) == len(old) - 1 and any(old[:i] + old[i + 1 :] == new for i in range(len(old))):
        return
    if len(new) != len(old) + 1 or new[:-1] != old:
        raise _replica_error(
            R.ERROR_REASON_REPLICA_SET_CHANGE_INVALID,
            "a config update changes a PBFT-lite replica set by one replica added at the end or "
            "one removed, the others unchanged and in order (re-keying: remove, then add)",
        )
    node_id, org_id, identity = new[-1]
    if org_id not in {o.org_id for o in nxt.config.orderer_organizations}:
        raise _replica_error(
            R.ERROR_REASON_REPLICA_ORG_UNKNOWN,
            f"replica {node_id}: {org_id!r} is not an orderer organisation of the channel",
            node=node_id,
        )
    try:
        who = nxt.orderer_membership.identify(identity, at)
    except IdentityError as exc:
        raise _replica_error(
            R.ERROR_REASON_REPLICA_IDENTITY_INVALID, f"replica {node_id}: {exc}", node=node_id
        ) from exc
    if who.org_id != org_id:
        raise _replica_error(
            R.ERROR_REASON_REPLICA_IDENTITY_INVALID,
            f"replica {node_id}'s identity belongs to {who.org_id}, not {org_id}",
            node=node_id,
        )


def check_update(data: bytes, view: ChannelView, at: datetime) -> ChannelView:
    """The pure check of a ConfigUpdate's bytes against the config in force; returns the view it
    leads to or raises ConfigUpdateError (reason and validation code). Structure first (cheap),
    then the sequence, then the signatures, then the resulting config."""
    update, content = _parse_update(data)
    if content.channel_id != view.channel_id:
        raise _invalid(f"config update is for channel {content.channel_id!r}")
    if content.sequence != view.sequence:
        raise ConfigUpdateError(
            R.ERROR_REASON_CONFIG_SEQUENCE_STALE,
            C.TX_VALIDATION_CODE_CONFIG_SEQUENCE_STALE,
            f"config update applies to sequence {content.sequence}; the channel is at "
            f"{view.sequence}",
            {"sequence": str(view.sequence)},
        )
    _check_signatures(update, view, at)
    return _next_view(content, view, at)


def config_verdict(data: bytes, view: ChannelView, at: datetime) -> tuple[int, ChannelView | None]:
    """Commit-time verdict on an authenticated config update: (code, the new view if VALID)."""
    try:
        return C.TX_VALIDATION_CODE_VALID, check_update(data, view, at)
    except ConfigUpdateError as exc:
        return exc.code, None


def header_type(envelope: bytes) -> int:
    """The header type an envelope claims (0 if it does not parse): for cutting, not trust."""
    try:
        payload = common_pb2.Payload.FromString(common_pb2.Envelope.FromString(envelope).payload)
        return common_pb2.Header.FromString(payload.header).type
    except DecodeError:
        return common_pb2.HEADER_TYPE_UNSPECIFIED


def is_config_update(envelope: bytes) -> bool:
    """True for an envelope that claims to be a config update (cut alone, whatever its fate)."""
    return header_type(envelope) == common_pb2.HEADER_TYPE_CONFIG_UPDATE


def config_write(view: ChannelView, block_number: int) -> StateWrite:
    """The world-state write that records `view` as applied by block `block_number`."""
    value = view.config.SerializeToString()
    return StateWrite(CONFIG_NAMESPACE, CONFIG_KEY, value, Version(block_number, 0))


EPOCH_KEY = "replica_epoch"
"""World-state key (in CONFIG_NAMESPACE) of the current PBFT-lite epoch: the number of the config
block that last changed the replica set, written with that block (absent: epoch 0)."""


def epoch_write(block_number: int) -> StateWrite:
    """The world-state write that records the epoch config block `block_number` starts."""
    value = str(block_number).encode()
    return StateWrite(CONFIG_NAMESPACE, EPOCH_KEY, value, Version(block_number, 0))


def restored_epoch(value: bytes | None) -> int:
    """The epoch an orderer's ledger recorded (`epoch_write`); 0 when none was."""
    if value is None:
        return 0
    try:
        epoch = int(value.decode())
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"stored replica epoch {value!r} is not a block number") from exc
    if epoch < 0:
        raise ConfigError(f"stored replica epoch {epoch} is negative")
    return epoch


def restored_view(value: bytes, genesis: ChannelView) -> ChannelView:
    """The view a node's ledger recorded last (`config_write`), checked against block 0's."""
    try:
        config = config_pb2.ChannelConfig.FromString(value)
    except DecodeError as exc:
        raise ConfigError(f"stored config does not parse: {exc}") from exc
    if config.channel_id != genesis.channel_id or config.sequence < genesis.sequence:
        raise ConfigError("stored config does not belong to this channel")
    return channel_view(config)
