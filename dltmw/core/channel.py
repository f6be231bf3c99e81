"""A channel's configuration as the core uses it: members, orderers, contracts and policies.

Built once from the config block (block 0) and immutable afterwards. Everything that checks a
signature on a channel goes through `ChannelView.membership`, so the set of trusted roots is
exactly the set named in the channel's config.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dltmw.core.identity import Membership
from dltmw.core.policy import Policy, check_policy_orgs, parse_policy
from dltmw.v1 import config_pb2

CHANNEL_ID_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{0,63}$")


class ConfigError(ValueError):
    """The channel configuration is invalid."""


@dataclass(frozen=True)
class ChannelView:
    """Immutable, validated view of one channel's config."""

    config: config_pb2.ChannelConfig
    membership: Membership
    orderer_membership: Membership
    policies: dict[str, Policy]

    @property
    def channel_id(self) -> str:
        """The channel's id."""
        return self.config.channel_id

    def policy_for(self, contract: str) -> Policy | None:
        """Endorsement policy of a deployed contract, or None if it is not deployed."""
        return self.policies.get(contract)

    def orderer_ids(self) -> list[str]:
        """Node ids of the ordering service."""
        return [n.node_id for n in self.config.orderers]


def channel_view(config: config_pb2.ChannelConfig) -> ChannelView:
    """Validate a ChannelConfig and build its view; raises ConfigError."""
    if not CHANNEL_ID_RE.match(config.channel_id):
        raise ConfigError(f"invalid channel id {config.channel_id!r}")
    if not config.organizations or not config.orderers:
        raise ConfigError("a channel needs member organisations and at least one orderer")
    roots = {o.org_id: o.root_certificate_pem for o in config.organizations}
    orderer_roots = {o.org_id: o.root_certificate_pem for o in config.orderer_organizations}
    if config.batch.max_tx_count < 1 or config.batch.max_bytes < 1 or config.batch.timeout_ms < 1:
        raise ConfigError("batch limits must be positive")
    policies: dict[str, Policy] = {}
    for contract in config.contracts:
        text = contract.endorsement_policy or config.default_endorsement_policy
        try:
            policy = parse_policy(text)
            check_policy_orgs(policy, roots)
        except ValueError as exc:
            raise ConfigError(f"contract {contract.name!r}: {exc}") from exc
        policies[contract.name] = policy
    return ChannelView(
        config=config,
        membership=Membership(roots),
        orderer_membership=Membership(orderer_roots),
        policies=policies,
    )
