"""The lifecycle where a peer applies it: commit-time checks of signed transactions under the
committed definitions (`txcheck` with a `CommittedView`), and the endorser's choice of what to
run (`ChannelLifecycle.resolve`), each refusal with its own reason."""

from __future__ import annotations

import dataclasses

import pytest
from cryptography.hazmat.primitives import serialization
from ledger_parties import Parties, endorser_tx, kv_rwset, make_parties

from dltmw.core import lifecycle as lc
from dltmw.core.channel import CurrentConfig, channel_view
from dltmw.core.config_edit import with_org, with_settings
from dltmw.core.contract import Contract
from dltmw.core.errors import ClientError
from dltmw.core.policy import parse_policy
from dltmw.core.txcheck import check_transaction
from dltmw.runtime.roles.peer.lifecycle import ChannelLifecycle
from dltmw.v1 import transaction_pb2

C = transaction_pb2
PARTIES: Parties = make_parties()
AND = lc.canonical_policy("AND(Org1.peer, Org2.peer)")
ASSETS = lc.Definition("assets", "1.0", 1, "a" * 64, lc.canonical_policy("Org1.peer"))


def definitions_with(*definitions: lc.Definition) -> dict[str, lc.Definition]:
    genesis = lc.genesis_definitions(PARTIES.view.config)
    return {**genesis, **{d.name: d for d in definitions}}


def view_with(*definitions: lc.Definition) -> lc.CommittedView:
    return lc.committed_view(PARTIES.view, definitions_with(*definitions))


def tx(namespace: str, sequence: int, endorsers: int = 2) -> bytes:
    rwset = kv_rwset(writes=[("k", b"v")], namespace=namespace)
    rwset.contract_sequence = sequence
    peers = [PARTIES.peer1, PARTIES.peer2][:endorsers]
    return endorser_tx(PARTIES, rwset, endorsers=peers)


def test_a_transaction_endorsed_under_an_older_sequence_is_definition_changed() -> None:
    kv2 = lc.Definition("kv", "2.0", 2, "b" * 64, AND)
    assert check_transaction(tx("kv", 1), view_with()).code == C.TX_VALIDATION_CODE_VALID
    assert check_transaction(tx("kv", 1), view_with(kv2)).code == lc.DEFINITION_CHANGED
    assert check_transaction(tx("kv", 2), view_with(kv2)).code == C.TX_VALIDATION_CODE_VALID


def test_the_committed_definition_gives_the_policy() -> None:
    assert check_transaction(tx("assets", 1, endorsers=1), view_with(ASSETS)).code == (
        C.TX_VALIDATION_CODE_VALID
    )
    stricter = dataclasses.replace(ASSETS, endorsement_policy=AND)
    assert check_transaction(tx("assets", 1, endorsers=1), view_with(stricter)).code == (
        C.TX_VALIDATION_CODE_ENDORSEMENT_POLICY_FAILURE
    )
    unknown = check_transaction(tx("assets", 1), PARTIES.view).code  # not committed
    assert unknown == C.TX_VALIDATION_CODE_CONTRACT_NOT_FOUND


def test_a_lifecycle_transaction_by_a_non_admin_is_invalid_even_when_endorsed() -> None:
    definition = lc.Definition("assets", "1.0", 1, "a" * 64, AND)
    rwset = kv_rwset(writes=[(definition.approval_key("Org1"), definition.to_bytes())])
    rwset.namespace = lc.NAMESPACE
    envelope = endorser_tx(PARTIES, rwset, endorsers=[PARTIES.peer1, PARTIES.peer2])
    assert check_transaction(envelope, view_with()).code == lc.NOT_ADMIN  # the user is a client


# --- the endorser's choice ----------------------------------------------------------------


class Named(Contract):
    def __init__(self, name: str) -> None:
        self.name = name


class Source:
    """Installed packages: id -> contract."""

    def __init__(self, installed: dict[str, Contract]) -> None:
        self.installed = installed

    def contract(self, pid: str) -> Contract | None:
        return self.installed.get(pid)

    def named(self, name: str) -> list[str]:
        return sorted(pid for pid, c in self.installed.items() if c.name == name)


def holder(installed: dict[str, Contract], *definitions: lc.Definition) -> ChannelLifecycle:
    held = ChannelLifecycle(PARTIES.view, Source(installed), "peer0.org1")
    held.adopt(definitions_with(*definitions))
    return held


@pytest.mark.parametrize(
    ("installed", "definitions", "reason"),
    [
        ({"a" * 64: Named("assets")}, (), "CONTRACT_NOT_COMMITTED"),
        ({}, (), "CONTRACT_NOT_FOUND"),
        ({}, (ASSETS,), "PACKAGE_NOT_INSTALLED"),
        ({"c" * 64: Named("assets")}, (ASSETS,), "PACKAGE_MISMATCH"),
        ({"a" * 64: Named("other")}, (ASSETS,), "PACKAGE_MISMATCH"),
    ],
    ids=["installed-not-committed", "unknown", "not-installed", "other-package", "other-name"],
)
def test_the_endorser_refuses_what_it_cannot_run_as_committed(
    installed: dict[str, Contract], definitions: tuple[lc.Definition, ...], reason: str
) -> None:
    with pytest.raises(ClientError) as err:
        holder(installed, *definitions).resolve("assets")
    assert err.value.reason_name == reason


def test_the_endorser_runs_the_committed_package_and_follows_an_upgrade() -> None:
    v1, v2 = Named("assets"), Named("assets")
    held = holder({"a" * 64: v1, "b" * 64: v2}, ASSETS)
    held.resolve("assets")
    assert held.runnable("assets") == (v1, 1)
    held.adopt(definitions_with(dataclasses.replace(ASSETS, sequence=2, package_id="b" * 64)))
    held.resolve("assets")
    assert held.runnable("assets") == (v2, 2)
    assert held.runnable(lc.NAMESPACE) == (held.contract, 1)


def test_the_lifecycle_follows_a_config_update_of_the_members() -> None:
    """A config update that adds a member changes MAJORITY for the lifecycle at once: the
    lifecycle reads the channel's current config, not the one it started with."""
    current = CurrentConfig(PARTIES.view)
    held = ChannelLifecycle(current, Source({}), "peer0.org1")
    assert held.members == ("Org1", "Org2")
    before = held.view
    ca = PARTIES.view.membership.root_certificate("Org1")
    assert ca is not None
    root = ca.public_bytes(serialization.Encoding.PEM)
    grown = with_org(PARTIES.view.config, "Org9", root)
    grown.sequence = PARTIES.view.sequence + 1
    current.replace(channel_view(grown))
    assert held.members == ("Org1", "Org2", "Org9")
    assert held.view is not before and held.view.membership.org_ids == {"Org1", "Org2", "Org9"}
    assert held.contract._members == ("Org1", "Org2", "Org9")  # MAJORITY of three now


def test_a_contract_without_its_own_policy_follows_the_channels_default() -> None:
    """`bank` has no policy of its own in the config (`kv` has one): a config update that
    changes the channel's default endorsement policy changes the policy `bank` is endorsed and
    validated under at once, and leaves `kv`'s and a lifecycle-committed definition's alone."""
    current = CurrentConfig(PARTIES.view)
    held = ChannelLifecycle(current, Source({}), "peer0.org1")
    held.adopt({"assets": ASSETS})  # what `load` reads: the lifecycle's own commits
    kv_before = held.view.policy_for("kv")
    assert held.view.policy_for("bank") == held.view.policy_for(lc.NAMESPACE)  # AND(...)
    changed = with_settings(PARTIES.view.config, endorsement_policy="Org2.peer")
    changed.sequence = PARTIES.view.sequence + 1
    current.replace(channel_view(changed))
    assert held.view.policy_for("bank") == parse_policy("Org2.peer")
    assert held.genesis["bank"].endorsement_policy == lc.canonical_policy("Org2.peer")
    assert held.view.policy_for("kv") == kv_before
    assert held.view.policy_for("assets") == parse_policy(ASSETS.endorsement_policy)


def test_a_genesis_contract_follows_a_new_default_policy_as_a_restarted_peer_would() -> None:
    """bank has no policy of its own: after an update of the default policy (AND -> OR), the
    live holder gives bank the new policy, the same as a holder started on the new config (a
    restarted peer); kv keeps its own. A tx endorsed by Org1's peer alone is then valid."""
    current = CurrentConfig(PARTIES.view)
    held = ChannelLifecycle(current, Source({}), "peer0.org1")
    rwset = kv_rwset(writes=[("k", b"1")], namespace="bank")
    alone = endorser_tx(PARTIES, rwset, endorsers=[PARTIES.peer1])
    invalid = transaction_pb2.TX_VALIDATION_CODE_ENDORSEMENT_POLICY_FAILURE
    assert check_transaction(alone, held.view).code == invalid
    relaxed = PARTIES.view.config.__class__()
    relaxed.CopyFrom(PARTIES.view.config)
    relaxed.default_endorsement_policy = "OR(Org1.peer, Org2.peer)"
    relaxed.sequence += 1
    current.replace(channel_view(relaxed))
    restarted = ChannelLifecycle(CurrentConfig(channel_view(relaxed)), Source({}), "peer0.org1")
    assert held.view.policies == restarted.view.policies
    assert check_transaction(alone, held.view).code == transaction_pb2.TX_VALIDATION_CODE_VALID
