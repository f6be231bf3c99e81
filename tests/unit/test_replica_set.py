"""PBFT-lite replica-set changes at a config boundary (docs/governance.md, issue 12).

Config level: an update adds one replica (at the end) or removes one, never below 4, the added
one of a known orderer organisation with a valid certificate of it — anything else is refused
with its own reason (REPLICA_*), and the config in force is unchanged. Epoch level: every signed
replica message carries the epoch of its group, and no message of another epoch counts — not
as a vote, not inside a certificate — while messages signed before epochs existed (no field)
still verify in epoch 0.
"""

# ruff: noqa: F811  (tests take the imported `gov` fixture of test_config_update)

from __future__ import annotations

import pytest
from pbft_messages import KEYS, signed
from test_config_update import (  # noqa: F401
    NOW,
    Gov,
    _ident,
    envelope,
    gov,
    refusal,
    update,
)

from dltmw.core import config_edit
from dltmw.core.channel import ChannelView, channel_view
from dltmw.core.config_update import check_update, replica_set_changed
from dltmw.core.handlers.pbft_blocks import signatures_needed
from dltmw.core.identity import SigningIdentity
from dltmw.core.pbft import PbftConfig, Replica, batch_digest
from dltmw.core.pbft.certs import Checker
from dltmw.core.txcheck import check_transaction
from dltmw.v1 import config_pb2, replica_pb2, transaction_pb2

ORDERER_ORG = "OrdererOrg"


@pytest.fixture(scope="module")
def replicas(gov: Gov) -> list[SigningIdentity]:
    """Six orderer identities of the channel's orderer organisation."""
    ca = gov.cas[ORDERER_ORG]
    return [_ident(ca, ORDERER_ORG, f"orderer{i}", "orderer") for i in range(6)]


def with_orderers(view: ChannelView, ids: list[tuple[str, str, bytes]]) -> config_pb2.ChannelConfig:
    config = config_pb2.ChannelConfig()
    config.CopyFrom(view.config)
    config.ordering = config_pb2.ORDERING_TYPE_PBFT
    del config.orderers[:]
    for node_id, org_id, identity in ids:
        config.orderers.add(node_id=node_id, org_id=org_id, identity=identity)
    return config


def four(gov: Gov, replicas: list[SigningIdentity]) -> ChannelView:
    ids = [(f"orderer{i}", ORDERER_ORG, replicas[i].identity_bytes) for i in range(4)]
    return channel_view(with_orderers(gov.view, ids))


def members(view: ChannelView) -> list[tuple[str, str, bytes]]:
    return [(o.node_id, o.org_id, o.identity) for o in view.config.orderers]


def apply(gov: Gov, view: ChannelView, config: config_pb2.ChannelConfig) -> ChannelView:
    data = update(view, config, *gov.admins.values()).SerializeToString()
    return check_update(data, view, NOW)


def test_add_one_then_remove_another_applies_and_recomputes_the_quorum(
    gov: Gov, replicas: list[SigningIdentity]
) -> None:
    view = four(gov, replicas)
    assert signatures_needed(view.config) == 3
    added = [*members(view), ("orderer4", ORDERER_ORG, replicas[4].identity_bytes)]
    five = apply(gov, view, with_orderers(view, added))
    assert [o.node_id for o in five.config.orderers][-1] == "orderer4"
    assert replica_set_changed(view, five)
    assert signatures_needed(five.config) == 4, "n=5: any two quorums share f+1 = 2"
    kept = [m for m in members(five) if m[0] != "orderer1"]
    back = apply(gov, five, with_orderers(five, kept))
    assert [o.node_id for o in back.config.orderers] == [
        "orderer0",
        "orderer2",
        "orderer3",
        "orderer4",
    ]
    assert replica_set_changed(five, back) and signatures_needed(back.config) == 3
    endpoint = with_orderers(back, members(back))
    endpoint.orderers[0].endpoint = "127.0.0.1:1"
    moved = apply(gov, back, endpoint)
    assert not replica_set_changed(back, moved), "an endpoint is not the replica set"


def _bad_change(
    gov: Gov, replicas: list[SigningIdentity], case: str
) -> tuple[config_pb2.ChannelConfig, ChannelView]:
    view = four(gov, replicas)
    now = members(view)
    new = replicas[4].identity_bytes
    changes = {
        "below-four": now[:3],
        "two-added": [*now, ("o4", ORDERER_ORG, new), ("o5", ORDERER_ORG, new)],
        "one-swapped-for-another": [*now[:3], ("o4", ORDERER_ORG, new)],
        "re-keyed": [(now[0][0], ORDERER_ORG, new), *now[1:]],
        "added-not-at-end": [now[0], ("o4", ORDERER_ORG, new), *now[1:]],
        "reordered": [now[1], now[0], *now[2:]],
        "listed-twice": [*now, now[0]],
        "unknown-org": [*now, ("o4", "Org9", new)],
        "member-org-not-orderer-org": [*now, ("o4", "Org1", gov.peers["Org1"].identity_bytes)],
        "bad-cert": [*now, ("o4", ORDERER_ORG, b"-----BEGIN CERTIFICATE-----junk")],
        "cert-of-another-org": [*now, ("o4", ORDERER_ORG, gov.peers["Org2"].identity_bytes)],
    }
    return with_orderers(view, changes[case]), view


BAD = {
    "below-four": "REPLICA_SET_TOO_SMALL",
    "two-added": "REPLICA_SET_CHANGE_INVALID",
    "one-swapped-for-another": "REPLICA_SET_CHANGE_INVALID",
    "re-keyed": "REPLICA_SET_CHANGE_INVALID",
    "added-not-at-end": "REPLICA_SET_CHANGE_INVALID",
    "reordered": "REPLICA_SET_CHANGE_INVALID",
    "listed-twice": "REPLICA_SET_CHANGE_INVALID",
    "unknown-org": "REPLICA_ORG_UNKNOWN",
    "member-org-not-orderer-org": "REPLICA_ORG_UNKNOWN",
    "bad-cert": "REPLICA_IDENTITY_INVALID",
    "cert-of-another-org": "REPLICA_IDENTITY_INVALID",
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_replica_change_is_refused_with_its_reason_and_changes_nothing(
    gov: Gov, replicas: list[SigningIdentity], case: str
) -> None:
    config, view = _bad_change(gov, replicas, case)
    signed_update = update(view, config, *gov.admins.values())
    assert refusal(signed_update.SerializeToString(), view) == (BAD[case], "CONFIG_UPDATE_INVALID")
    code = check_transaction(envelope(gov, signed_update), view).code
    assert code == transaction_pb2.TX_VALIDATION_CODE_CONFIG_UPDATE_INVALID  # in a block: no-op


# --- epochs ---------------------------------------------------------------------------------


def vote_in(epoch: int, replica: int, sequence: int = 1) -> replica_pb2.SignedReplicaMessage:
    message = replica_pb2.ReplicaMessage(epoch=epoch)
    message.commit.CopyFrom(replica_pb2.Vote(view=0, sequence=sequence, digest=batch_digest(())))
    return signed(replica, message)


def checker(epoch: int) -> Checker:
    return Checker(PbftConfig(n=4, epoch=epoch), KEYS.verify, batch_digest, KEYS.request_ok)


def test_a_message_counts_only_in_its_own_epoch() -> None:
    assert checker(0).open(vote_in(0, 1)) is not None, "no field: signed before epochs, epoch 0"
    assert checker(0).open(vote_in(7, 1)) is None
    assert checker(7).open(vote_in(7, 1)) is not None
    assert checker(7).open(vote_in(0, 1)) is None
    assert checker(7).open(vote_in(8, 1)) is None


def test_a_commit_certificate_does_not_count_votes_of_another_epoch() -> None:
    batch = replica_pb2.DecidedBatch(view=0, sequence=1, digest=batch_digest(()))
    batch.commits.extend([vote_in(7, 0), vote_in(7, 1), vote_in(0, 2), vote_in(0, 3)])
    assert not checker(7).committed(batch), "two of epoch 7 and two of epoch 0: no quorum"
    assert not checker(0).committed(batch)
    batch.commits.append(vote_in(7, 2))
    assert checker(7).committed(batch)


def test_a_replica_signs_its_epoch_and_ignores_a_foreign_epochs_votes() -> None:
    config = PbftConfig(n=4, epoch=9)
    me = Replica(config, 1, KEYS.signer(1), KEYS.verify, request_ok=KEYS.request_ok)
    me.step(vote_in(0, 2))
    assert me.counters["bad-signature-or-malformed"] == 1
    assert not me.slots, "an old-epoch vote is not recorded"
    me.tick(config.probe_ticks)  # a catch-up probe: a signed message of ours
    sent = [replica_pb2.ReplicaMessage.FromString(e.payload) for _, e in me.ready().send]
    assert sent and {m.epoch for m in sent} == {9}


def test_config_edit_adds_an_orderer_at_the_end_and_removes_one_by_id(
    gov: Gov, replicas: list[SigningIdentity]
) -> None:
    view = four(gov, replicas)
    entry = config_pb2.NodeConfig(
        node_id="orderer4", org_id=ORDERER_ORG, identity=replicas[4].identity_bytes
    )
    grown = config_edit.with_orderer(view.config, entry)
    assert [o.node_id for o in grown.orderers][-1] == "orderer4"
    assert apply(gov, view, grown).config.orderers[-1] == entry
    shrunk = config_edit.without_orderer(grown, "orderer1")
    assert [o.node_id for o in shrunk.orderers] == ["orderer0", "orderer2", "orderer3", "orderer4"]
    with pytest.raises(ValueError, match="not an orderer organisation"):
        config_edit.with_orderer(view.config, config_pb2.NodeConfig(node_id="x", org_id="Org1"))
    with pytest.raises(ValueError, match="already in the channel"):
        config_edit.with_orderer(grown, entry)
    with pytest.raises(ValueError, match="not an orderer"):
        config_edit.without_orderer(view.config, "orderer9")
