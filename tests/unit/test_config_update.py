"""Config updates and revocation, on the pure cores (`core/config_update.py`, `core/channel.py`,
`core/identity.py`, the solo orderer's cutting and the commit decision).

Every refusal names its own reason (for the caller at admission) and a validation code (for the
block), and leaves the config in force byte for byte as it was.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import pytest
from cryptography import x509

from dltmw.core import config_edit
from dltmw.core.block import make_block
from dltmw.core.channel import ChannelView, ConfigError, CurrentConfig, channel_view
from dltmw.core.committer import CommitCore, Delivered
from dltmw.core.config_update import (
    ConfigUpdateError,
    add_signature,
    check_update,
    config_write,
    restored_view,
    update_content,
    update_envelope,
)
from dltmw.core.cutter import BlockCutter
from dltmw.core.errors import ClientError
from dltmw.core.handlers.solo import SoloOrderer, Submit
from dltmw.core.hashing import ZERO_HASH
from dltmw.core.identity import (
    MalformedIdentity,
    Membership,
    NotAMember,
    Revoked,
    SigningIdentity,
    reference_bytes,
    tls_revoked,
)
from dltmw.core.identity_table import takes_client_references
from dltmw.core.policy import parse_policy
from dltmw.core.txcheck import check_envelope, check_orderable, check_transaction
from dltmw.pki.ca import FRESH, IssuedCert, issue_cert, make_ca
from dltmw.rpc.guard import check_tls_org
from dltmw.rpc.orderer import still_reader
from dltmw.v1 import algorithms_pb2, config_pb2, config_update_pb2, errors_pb2, transaction_pb2

R = errors_pb2
C = transaction_pb2
CHANNEL = "gov"
ORGS = ("Org1", "Org2", "Org3")
NOW = datetime.now(UTC)
AT_NOW = replace(FRESH, now=lambda: NOW)  # certificates issued at NOW, whenever a test runs
_nonces = itertools.count()


@dataclass(frozen=True)
class Gov:
    """A three-org solo channel with an admin, a peer and a client per org."""

    view: ChannelView
    cas: dict[str, IssuedCert]
    admins: dict[str, SigningIdentity]
    peers: dict[str, SigningIdentity]
    clients: dict[str, SigningIdentity]
    orderer: SigningIdentity
    outsider_admin: SigningIdentity


def _ident(ca: IssuedCert, org: str, name: str, role: str) -> SigningIdentity:
    issued = issue_cert(ca, org, name, role, material=AT_NOW)
    return SigningIdentity.from_pem(org, issued.cert_pem, issued.key_pem)


def _org(org: str, ca: IssuedCert) -> config_pb2.OrganizationConfig:
    return config_pb2.OrganizationConfig(org_id=org, root_certificate_pem=ca.cert_pem)


@pytest.fixture(scope="module")
def gov() -> Gov:
    cas = {o: make_ca(o, material=AT_NOW) for o in (*ORGS, "OrdererOrg", "Org9")}
    orderer = _ident(cas["OrdererOrg"], "OrdererOrg", "orderer0", "orderer")
    config = config_pb2.ChannelConfig(
        channel_id=CHANNEL,
        organizations=[_org(o, cas[o]) for o in ORGS],
        orderer_organizations=[_org("OrdererOrg", cas["OrdererOrg"])],
        orderers=[
            config_pb2.NodeConfig(
                node_id="orderer0", org_id="OrdererOrg", identity=orderer.identity_bytes
            )
        ],
        ordering=config_pb2.ORDERING_TYPE_NONE,
        default_endorsement_policy="OR(Org1.peer, Org2.peer)",
        contracts=[config_pb2.ContractConfig(name="kv")],
        batch=config_pb2.BatchConfig(max_tx_count=10, max_bytes=1 << 20, timeout_ms=100),
    )
    return Gov(
        view=channel_view(config),
        cas=cas,
        admins={o: _ident(cas[o], o, f"admin.{o}", "admin") for o in ORGS},
        peers={o: _ident(cas[o], o, f"peer0.{o}", "peer") for o in ORGS},
        clients={o: _ident(cas[o], o, f"user.{o}", "client") for o in ORGS},
        orderer=orderer,
        outsider_admin=_ident(cas["Org9"], "Org9", "admin.Org9", "admin"),
    )


def nonce() -> bytes:
    return hashlib.sha256(b"cfg-%d" % next(_nonces)).digest()


def next_config(view: ChannelView) -> config_pb2.ChannelConfig:
    """A copy of the view's config with smaller blocks (a harmless, visible change)."""
    config = config_pb2.ChannelConfig()
    config.CopyFrom(view.config)
    config.batch.max_tx_count = 3
    return config


def update(
    view: ChannelView, config: config_pb2.ChannelConfig, *signers: SigningIdentity
) -> config_update_pb2.ConfigUpdate:
    out = config_update_pb2.ConfigUpdate(content=update_content(view, config))
    for signer in signers:
        add_signature(out, signer)
    return out


def refusal(data: bytes, view: ChannelView) -> tuple[str, str]:
    """(reason name, validation code name) of a refused update; the view is unchanged."""
    before = view.config.SerializeToString()
    with pytest.raises(ConfigUpdateError) as err:
        check_update(data, view, NOW)
    assert view.config.SerializeToString() == before
    code = C.TxValidationCode.Name(err.value.code).removeprefix("TX_VALIDATION_CODE_")  # type: ignore[arg-type]
    return err.value.reason_name, code


def test_majority_of_admins_applies_the_next_config(gov: Gov) -> None:
    data = update(gov.view, next_config(gov.view), gov.admins["Org1"], gov.admins["Org3"])
    new = check_update(data.SerializeToString(), gov.view, NOW)
    assert (new.sequence, new.config.batch.max_tx_count) == (1, 3)
    assert gov.view.sequence == 0 and gov.view.config.batch.max_tx_count == 10


def test_default_admin_policy_is_a_majority_of_member_orgs(gov: Gov) -> None:
    assert gov.view.admin_policy == parse_policy("OutOf(2, Org1.admin, Org2.admin, Org3.admin)")


def _stale(gov: Gov) -> tuple[bytes, ChannelView]:
    once = check_update(
        update(gov.view, next_config(gov.view), *gov.admins.values()).SerializeToString(),
        gov.view,
        NOW,
    )
    # Written for sequence 0 again, checked against sequence 1: another update went first.
    again = update(gov.view, next_config(gov.view), *gov.admins.values())
    return again.SerializeToString(), once


def _wrongly_signed(gov: Gov) -> bytes:
    data = update(gov.view, next_config(gov.view), gov.admins["Org1"], gov.admins["Org2"])
    data.signatures[1].signature = gov.admins["Org2"].sign(b"something else")
    return data.SerializeToString()


def _bad_config(gov: Gov, change: str) -> bytes:
    config = next_config(gov.view)
    if change == "batch":
        config.batch.max_tx_count = 0
    elif change == "channel":
        config.channel_id = "other"
    elif change == "policy":
        config.default_endorsement_policy = "AND(Org1.peer, Org7.peer)"
    elif change == "ordering":
        config.ordering = config_pb2.ORDERING_TYPE_PBFT
    elif change == "serial":
        config.organizations[0].revoked_serials.append("0xZZ")
    two = (gov.admins["Org1"], gov.admins["Org2"])
    return update(gov.view, config, *two).SerializeToString()


CASES = {
    "unsigned": (lambda g: update(g.view, next_config(g.view)).SerializeToString(),
                 ("CONFIG_UPDATE_UNSIGNED", "CONFIG_POLICY_FAILURE")),
    "under-signed (1 of 3 admins)": (
        lambda g: update(g.view, next_config(g.view), g.admins["Org2"]).SerializeToString(),
        ("CONFIG_POLICY_UNSATISFIED", "CONFIG_POLICY_FAILURE")),
    "one org's admin twice": (
        lambda g: update(
            g.view, next_config(g.view), g.admins["Org2"], g.admins["Org2"]
        ).SerializeToString(),
        ("CONFIG_POLICY_UNSATISFIED", "CONFIG_POLICY_FAILURE")),
    "wrongly signed": (_wrongly_signed, ("BAD_SIGNATURE", "CONFIG_POLICY_FAILURE")),
    "non-admin signer (a peer)": (
        lambda g: update(
            g.view, next_config(g.view), g.admins["Org1"], g.peers["Org2"]
        ).SerializeToString(),
        ("CONFIG_SIGNER_NOT_ADMIN", "CONFIG_POLICY_FAILURE")),
    "admin of a non-member org": (
        lambda g: update(
            g.view, next_config(g.view), g.admins["Org1"], g.outsider_admin
        ).SerializeToString(),
        ("NOT_A_MEMBER", "CONFIG_POLICY_FAILURE")),
    "malformed bytes": (lambda g: b"\xff\xff\xff", ("MALFORMED", "CONFIG_UPDATE_INVALID")),
    "malformed new config": (
        lambda g: update_raw(g, b"\xff\xff"), ("MALFORMED", "CONFIG_UPDATE_INVALID")),
    "invalid batch": (
        lambda g: _bad_config(g, "batch"), ("CONFIG_INVALID", "CONFIG_UPDATE_INVALID")),
    "changes the channel id": (
        lambda g: _bad_config(g, "channel"), ("CONFIG_INVALID", "CONFIG_UPDATE_INVALID")),
    "policy names an unknown org": (
        lambda g: _bad_config(g, "policy"), ("CONFIG_INVALID", "CONFIG_UPDATE_INVALID")),
    "changes the ordering type": (
        lambda g: _bad_config(g, "ordering"), ("CONFIG_INVALID", "CONFIG_UPDATE_INVALID")),
    "revoked serial not hex": (
        lambda g: _bad_config(g, "serial"), ("CONFIG_INVALID", "CONFIG_UPDATE_INVALID")),
}  # fmt: skip


def update_raw(gov: Gov, config_bytes: bytes) -> bytes:
    content = config_update_pb2.ConfigUpdateContent(
        channel_id=CHANNEL, sequence=0, config=config_bytes
    ).SerializeToString()
    out = config_update_pb2.ConfigUpdate(content=content)
    add_signature(out, gov.admins["Org1"])
    add_signature(out, gov.admins["Org2"])
    return out.SerializeToString()


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_update_is_refused_with_its_reason_and_changes_nothing(gov: Gov, case: str) -> None:
    build, expected = CASES[case]
    assert refusal(build(gov), gov.view) == expected


def test_a_stale_update_is_refused_and_changes_nothing(gov: Gov) -> None:
    data, current = _stale(gov)
    assert refusal(data, current) == ("CONFIG_SEQUENCE_STALE", "CONFIG_SEQUENCE_STALE")


def test_a_revoked_admin_cannot_sign(gov: Gov) -> None:
    revoked = revoke(gov.view, "Org2", gov.admins["Org2"])
    data = update(revoked, next_config(revoked), gov.admins["Org1"], gov.admins["Org2"])
    assert refusal(data.SerializeToString(), revoked) == (
        "CERTIFICATE_REVOKED",
        "CONFIG_POLICY_FAILURE",
    )


# --- admission (the orderer's Broadcast) ----------------------------------------------------


def envelope(gov: Gov, data: config_update_pb2.ConfigUpdate) -> bytes:
    """The update submitted by Org1's client."""
    return update_envelope(data, CHANNEL, gov.clients["Org1"], nonce(), NOW)


def test_admission_refuses_with_the_reason_and_admits_a_good_update(gov: Gov) -> None:
    views = {CHANNEL: gov.view}
    good = envelope(gov, update(gov.view, next_config(gov.view), *gov.admins.values()))
    assert check_envelope(good, views, NOW, 60).header.tx_id
    bad = envelope(gov, update(gov.view, next_config(gov.view), gov.admins["Org1"]))
    with pytest.raises(ClientError) as err:
        check_envelope(bad, views, NOW, 60)
    assert err.value.reason == R.ERROR_REASON_CONFIG_POLICY_UNSATISFIED


def test_pbft_ordering_rule_admits_config_updates_and_leaves_the_verdict_to_their_block(
    gov: Gov,
) -> None:
    """The clock-free rule's verdict must not change once an update applies (it turns stale):
    it checks the envelope and its creator, and the PBFT-lite core checks the update at its block
    (`check_transaction`, like every peer), where an under-signed one is invalid."""
    good = envelope(gov, update(gov.view, next_config(gov.view), *gov.admins.values()))
    under = envelope(gov, update(gov.view, next_config(gov.view), gov.admins["Org1"]))
    for data in (good, under):
        assert check_orderable(data, {CHANNEL: gov.view}).header.tx_id
    assert check_transaction(good, gov.view).code == C.TX_VALIDATION_CODE_VALID
    assert check_transaction(under, gov.view).code == C.TX_VALIDATION_CODE_CONFIG_POLICY_FAILURE
    with pytest.raises(ClientError) as err:
        check_envelope(under, {CHANNEL: gov.view}, NOW, 60)  # Broadcast still refuses it
    assert err.value.reason == R.ERROR_REASON_CONFIG_POLICY_UNSATISFIED


# --- ordering: cut alone, applied by the orderer's core -------------------------------------


def solo(gov: Gov) -> SoloOrderer:
    def cutter_for(batch: config_pb2.BatchConfig) -> BlockCutter:
        return BlockCutter(batch.max_tx_count, batch.max_bytes, 5, by_limits_only=True)

    return SoloOrderer(
        CHANNEL, 1, ZERO_HASH, cutter_for(gov.view.config.batch), view=gov.view,
        cutter_for=cutter_for,
    )  # fmt: skip


def test_a_config_update_is_cut_alone_and_later_blocks_use_its_batch_limits(gov: Gov) -> None:
    core = solo(gov)
    txs = [b"tx-%d" % i for i in range(4)]
    good = envelope(gov, update(gov.view, next_config(gov.view), *gov.admins.values()))
    for i, env in enumerate([*txs[:2], good, *txs[2:], *(b"more-%d" % i for i in range(3))]):
        core.step(Submit(env, i))
    blocks = core.ready().decided
    sizes = [len(b.block.data.envelopes) for b in blocks]
    # [tx0 tx1] cut before the update, [update] alone, then blocks of 3 (the new max_tx_count).
    assert sizes == [2, 1, 3]
    assert blocks[1].config is not None and blocks[1].config.sequence == 1
    assert blocks[0].config is None and blocks[2].config is None


def test_an_invalid_update_is_cut_alone_but_applies_nothing(gov: Gov) -> None:
    core = solo(gov)
    bad = envelope(gov, update(gov.view, next_config(gov.view), gov.admins["Org1"]))
    for i, env in enumerate([b"a", bad, *(b"x%d" % i for i in range(10))]):
        core.step(Submit(env, i))
    blocks = core.ready().decided
    assert [len(b.block.data.envelopes) for b in blocks] == [1, 1, 10]  # old limit: 10
    assert all(b.config is None for b in blocks)


# --- commit ---------------------------------------------------------------------------------


def commit(view: ChannelView, envelopes: list[bytes]) -> tuple[list[int], ChannelView | None]:
    checked = tuple(check_transaction(e, view) for e in envelopes)
    core = CommitCore(CHANNEL, 1, ZERO_HASH)
    core.step(Delivered(make_block(CHANNEL, 1, ZERO_HASH, envelopes), 0, "", checked))
    (decided,) = core.ready().decided
    if decided.config is not None:
        assert decided.writes[-1] == config_write(decided.config, 1)
    return list(decided.codes), decided.config


def test_commit_applies_a_valid_update_alone_in_its_block(gov: Gov) -> None:
    good = envelope(gov, update(gov.view, next_config(gov.view), *gov.admins.values()))
    codes, config = commit(gov.view, [good])
    assert codes == [C.TX_VALIDATION_CODE_VALID]
    assert config is not None and config.sequence == 1


def test_commit_refuses_an_update_sharing_its_block(gov: Gov) -> None:
    good = envelope(gov, update(gov.view, next_config(gov.view), *gov.admins.values()))
    codes, config = commit(gov.view, [good, b"junk"])
    assert codes[0] == C.TX_VALIDATION_CODE_CONFIG_UPDATE_INVALID and config is None


@pytest.mark.parametrize(
    "case", ["under-signed (1 of 3 admins)", "wrongly signed", "invalid batch"]
)
def test_commit_gives_a_bad_update_its_code_and_applies_nothing(gov: Gov, case: str) -> None:
    build, (_, code) = CASES[case]
    data = config_update_pb2.ConfigUpdate.FromString(build(gov))
    codes, config = commit(gov.view, [envelope(gov, data)])
    assert codes == [C.TxValidationCode.Value("TX_VALIDATION_CODE_" + code)] and config is None


def test_commit_gives_a_stale_update_its_code(gov: Gov) -> None:
    data, current = _stale(gov)
    env = envelope(gov, config_update_pb2.ConfigUpdate.FromString(data))
    assert commit(current, [env]) == ([C.TX_VALIDATION_CODE_CONFIG_SEQUENCE_STALE], None)


def test_current_config_takes_only_the_next_sequence(gov: Gov) -> None:
    holder = CurrentConfig(gov.view)
    data = update(gov.view, next_config(gov.view), *gov.admins.values()).SerializeToString()
    new = check_update(data, gov.view, NOW)
    with pytest.raises(ConfigError):
        holder.replace(gov.view)
    holder.replace(new)
    assert holder.view is new
    with pytest.raises(ConfigError):
        holder.replace(new)


def test_stored_config_round_trip(gov: Gov) -> None:
    data = update(gov.view, next_config(gov.view), *gov.admins.values()).SerializeToString()
    new = check_update(data, gov.view, NOW)
    write = config_write(new, 7)
    assert write.value is not None
    back = restored_view(write.value, gov.view)
    assert back.config.SerializeToString() == new.config.SerializeToString()


# --- revocation -----------------------------------------------------------------------------


def serial_of(signer: SigningIdentity) -> int:
    return x509.load_der_x509_certificate(signer.certificate_der).serial_number


def revoke(view: ChannelView, org: str, *who: SigningIdentity) -> ChannelView:
    config = config_pb2.ChannelConfig()
    config.CopyFrom(view.config)
    entry = next(o for o in config.organizations if o.org_id == org)
    entry.revoked_serials.extend(f"{serial_of(s):x}" for s in who)
    config.sequence += 1
    return channel_view(config)


def test_a_revoked_certificate_is_no_identity(gov: Gov) -> None:
    view = revoke(gov.view, "Org1", gov.clients["Org1"])
    with pytest.raises(Revoked):
        view.membership.identify(gov.clients["Org1"].identity_bytes, NOW)
    assert view.membership.identify(gov.peers["Org1"].identity_bytes, NOW).org_id == "Org1"
    # The same serial number of ANOTHER org's certificate is untouched.
    assert not view.membership.is_revoked("Org2", serial_of(gov.clients["Org1"]))


def test_a_revoked_creator_is_refused_at_admission_and_invalid_at_commit(gov: Gov) -> None:
    view = revoke(gov.view, "Org1", gov.clients["Org1"])
    env = envelope(gov, update(gov.view, next_config(gov.view), *gov.admins.values()))
    with pytest.raises(ClientError) as err:
        check_envelope(env, {CHANNEL: view}, NOW, 60)
    assert err.value.reason == R.ERROR_REASON_CERTIFICATE_REVOKED
    assert check_transaction(env, view).code == C.TX_VALIDATION_CODE_CERTIFICATE_REVOKED
    assert check_transaction(env, gov.view).code == C.TX_VALIDATION_CODE_VALID


def _org2_tls(gov: Gov) -> IssuedCert:
    """A TLS certificate of Org2's peer (for 127.0.0.1)."""
    return issue_cert(
        gov.cas["Org2"],
        "Org2",
        "peer0.Org2",
        "peer",
        tls=True,
        hosts=["127.0.0.1"],
        material=AT_NOW,
    )


def test_a_revoked_tls_certificate_is_named_as_such(gov: Gov) -> None:
    tls = _org2_tls(gov)
    serial = x509.load_pem_x509_certificate(tls.cert_pem).serial_number
    revoked = Membership({o: gov.cas[o].cert_pem for o in ORGS}, {"Org2": [serial]})
    assert tls_revoked(tls.cert_pem, revoked)
    assert not tls_revoked(tls.cert_pem, gov.view.membership)


# --- what an update changes (config_edit + check_update) -------------------------------------


def applied(
    gov: Gov, view: ChannelView, config: config_pb2.ChannelConfig, *orgs: str
) -> ChannelView:
    admins = {**gov.admins, "Org9": gov.outsider_admin}
    data = update(view, config, *(admins[o] for o in orgs)).SerializeToString()
    return check_update(data, view, NOW)


def test_an_added_org_is_a_member_and_a_removed_one_is_not(gov: Gov) -> None:
    org9 = config_edit.with_org(gov.view.config, "Org9", gov.cas["Org9"].cert_pem)
    added = applied(gov, gov.view, org9, "Org1", "Org2")
    assert added.membership.identify(gov.outsider_admin.identity_bytes, NOW).org_id == "Org9"
    assert added.admin_policy == parse_policy(
        "OutOf(3, Org1.admin, Org2.admin, Org3.admin, Org9.admin)"
    )  # four members now: a majority is three
    removed = applied(
        gov, added, config_edit.without_org(added.config, "Org3"), "Org1", "Org2", "Org9"
    )
    with pytest.raises(NotAMember):
        removed.membership.identify(gov.clients["Org3"].identity_bytes, NOW)
    assert [p.org_id for p in removed.config.peers if p.org_id == "Org3"] == []


def test_removing_an_org_a_policy_names_is_an_invalid_config(gov: Gov) -> None:
    without = config_edit.without_org(gov.view.config, "Org2")  # the default policy names Org2
    data = update(gov.view, without, gov.admins["Org1"], gov.admins["Org3"]).SerializeToString()
    assert refusal(data, gov.view) == ("CONFIG_INVALID", "CONFIG_UPDATE_INVALID")


def test_a_new_admin_policy_governs_the_next_update(gov: Gov) -> None:
    org1_alone = config_edit.with_settings(gov.view.config, admin_policy="Org1.admin")
    view = applied(gov, gov.view, org1_alone, "Org2", "Org3")  # decided under the old policy
    assert applied(gov, view, next_config(view), "Org1").sequence == 2
    data = update(view, next_config(view), gov.admins["Org2"], gov.admins["Org3"])
    assert refusal(data.SerializeToString(), view)[0] == "CONFIG_POLICY_UNSATISFIED"


def test_endorsement_policy_batch_and_auditors_change(gov: Gov) -> None:
    edited = config_edit.with_settings(
        gov.view.config,
        endorsement_policy="AND(Org1.peer, Org3.peer)",
        max_tx_count=7,
        timeout_ms=20,
        privacy_auditors=["peer0.Org3"],
    )
    view = applied(gov, gov.view, edited, "Org1", "Org2")
    assert view.policy_for("kv") == parse_policy("AND(Org1.peer, Org3.peer)")
    assert (view.config.batch.max_tx_count, view.config.batch.timeout_ms) == (7, 20)
    assert list(view.config.privacy_auditors) == ["peer0.Org3"]
    assert gov.view.policy_for("kv") == parse_policy("OR(Org1.peer, Org2.peer)")


def test_private_agreement_batches_turned_on_and_off(gov: Gov) -> None:
    on = config_edit.with_settings(gov.view.config, private_agreement_batches=True)
    view = applied(gov, gov.view, on, "Org1", "Org2")
    assert view.config.private_agreement_batches
    assert not gov.view.config.private_agreement_batches  # the input is not changed
    kept = config_edit.with_settings(view.config, max_tx_count=9)  # None: unchanged
    assert kept.private_agreement_batches
    off = config_edit.with_settings(view.config, private_agreement_batches=False)
    assert not applied(gov, view, off, "Org1", "Org2").config.private_agreement_batches


def test_creator_batches_turned_on_and_off(gov: Gov) -> None:
    """`dltmw channel update --[no-]creator-batches`: an admin-approved update like any other."""
    on = config_edit.with_settings(gov.view.config, creator_batches=True)
    view = applied(gov, gov.view, on, "Org1", "Org2")
    assert view.config.creator_batches and not gov.view.config.creator_batches
    assert config_edit.with_settings(view.config, max_tx_count=9).creator_batches  # unchanged
    off = config_edit.with_settings(view.config, creator_batches=False)
    assert not applied(gov, view, off, "Org1", "Org2").config.creator_batches


def test_identity_references_turned_on_and_off(gov: Gov) -> None:
    """`dltmw channel update --[no-]identity-references`: the view the update makes (the one
    every node switches to after the config block) takes the config nodes' references; the one
    before and the one after turning it off judge a reference malformed and sign in full."""
    orderer = gov.orderer.identity_bytes
    ref = reference_bytes(orderer)
    assert ref is not None
    on = config_edit.with_settings(gov.view.config, identity_references=True)
    view = applied(gov, gov.view, on, "Org1", "Org2")
    assert view.config.identity_references and not gov.view.config.identity_references
    assert view.membership.reference_of(orderer) == ref
    assert view.orderer_membership.identify(ref, NOW).org_id == "OrdererOrg"
    assert gov.view.membership.reference_of(orderer) == orderer  # the config in force before
    with pytest.raises(MalformedIdentity):
        gov.view.orderer_membership.identify(ref, NOW)
    assert config_edit.with_settings(view.config, max_tx_count=9).identity_references
    off = applied(
        gov, view, config_edit.with_settings(view.config, identity_references=False), "Org1", "Org2"
    )
    assert not off.config.identity_references
    assert off.membership.reference_of(orderer) == orderer
    with pytest.raises(MalformedIdentity):
        off.orderer_membership.identify(ref, NOW)


def test_client_identity_references_turned_on_and_off(gov: Gov) -> None:
    """`dltmw channel update --[no-]client-identity-references`: a valid update, in the view it
    makes and kept by other edits; the table fills from blocks after its config block
    (`takes_client_references` of the config in force, core/identity_table.py)."""
    on = config_edit.with_settings(
        gov.view.config, identity_references=True, client_identity_references=True
    )
    view = applied(gov, gov.view, on, "Org1", "Org2")
    assert takes_client_references(view.config) and not takes_client_references(gov.view.config)
    assert config_edit.with_settings(view.config, max_tx_count=9).client_identity_references
    off = config_edit.with_settings(view.config, client_identity_references=False)
    assert not takes_client_references(applied(gov, view, off, "Org1", "Org2").config)


# --- links and streams ----------------------------------------------------------------------


class FakeContext:
    """What `check_tls_org` reads of a call: the caller's TLS certificate."""

    def __init__(self, cert_pem: bytes) -> None:
        self._auth = {"x509_pem_cert": [cert_pem]}

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth


def test_a_link_with_a_revoked_tls_certificate_is_refused_as_revoked(gov: Gov) -> None:
    tls = _org2_tls(gov)
    serial = x509.load_pem_x509_certificate(tls.cert_pem).serial_number
    config = config_pb2.ChannelConfig()
    config.CopyFrom(gov.view.config)
    config.organizations[1].revoked_serials.append(f"{serial:x}")
    revoked = channel_view(config)
    context = FakeContext(tls.cert_pem)
    check_tls_org(context, gov.view.membership, "Org2")  # type: ignore[arg-type]
    for org in ("Org2", None):
        with pytest.raises(ClientError) as err:
            check_tls_org(context, revoked.membership, org)  # type: ignore[arg-type]
        assert err.value.reason == R.ERROR_REASON_CERTIFICATE_REVOKED


def test_a_removed_org_is_named_as_no_member_on_links_and_streams(gov: Gov) -> None:
    without = config_edit.with_settings(
        config_edit.without_org(gov.view.config, "Org3"), endorsement_policy="Org1.peer"
    )
    removed = channel_view(without)
    tls = issue_cert(
        gov.cas["Org3"], "Org3", "peer0.Org3", "peer", tls=True, hosts=["x"], material=AT_NOW
    )
    with pytest.raises(ClientError) as err:
        check_tls_org(FakeContext(tls.cert_pem), removed.membership, "Org3")  # type: ignore[arg-type]
    assert err.value.reason == R.ERROR_REASON_NOT_A_MEMBER
    still_reader(gov.peers["Org3"].identity_bytes, gov.view)  # a member: no error
    still_reader(gov.orderer.identity_bytes, removed)  # an orderer reads on
    with pytest.raises(ClientError) as err:
        still_reader(gov.peers["Org3"].identity_bytes, removed)
    assert err.value.reason == R.ERROR_REASON_NOT_A_MEMBER
    revoked = revoke(gov.view, "Org1", gov.peers["Org1"])
    with pytest.raises(ClientError) as err:
        still_reader(gov.peers["Org1"].identity_bytes, revoked)
    assert err.value.reason == R.ERROR_REASON_CERTIFICATE_REVOKED


def _peer_entry(ident: SigningIdentity, node_id: str, org: str) -> config_pb2.NodeConfig:
    return config_pb2.NodeConfig(node_id=node_id, org_id=org, identity=ident.identity_bytes)


def _apply(gov: Gov, config: config_pb2.ChannelConfig) -> ChannelView:
    two = (gov.admins["Org1"], gov.admins["Org2"])
    return check_update(update(gov.view, config, *two).SerializeToString(), gov.view, NOW)


def test_a_peer_is_added_rotated_and_removed(gov: Gov) -> None:
    """One peer at a time: added (a member organisation's certificate), its identity rotated
    (a renewed certificate), removed; each a valid update of its own."""
    added = _apply(gov, config_edit.with_peer(next_config(gov.view), _peer_entry(
        gov.peers["Org1"], "peer0.Org1", "Org1")))  # fmt: skip
    assert [p.node_id for p in added.config.peers] == ["peer0.Org1"]
    renewed = _ident(gov.cas["Org1"], "Org1", "peer0.Org1", "peer")
    rotated = config_edit.with_rotated_peer(
        added.config, _peer_entry(renewed, "peer0.Org1", "Org1")
    )
    assert rotated.peers[0].identity == renewed.identity_bytes
    assert added.config.peers[0].identity == gov.peers["Org1"].identity_bytes  # input unchanged
    removed = config_edit.without_peer(rotated, "peer0.Org1")
    assert list(removed.peers) == []
    with pytest.raises(ValueError, match="not a peer"):
        config_edit.without_peer(removed, "peer0.Org1")
    with pytest.raises(ValueError, match="already in the channel"):
        config_edit.with_peer(rotated, _peer_entry(renewed, "peer0.Org1", "Org1"))
    with pytest.raises(ValueError, match="already this one"):
        config_edit.with_rotated_peer(rotated, _peer_entry(renewed, "peer0.Org1", "Org1"))


@pytest.mark.parametrize(
    "how",
    ["another org's certificate", "a non-member org", "listed twice", "not a certificate"],
)
def test_an_update_naming_a_bad_peer_is_invalid(gov: Gov, how: str) -> None:
    """A peer the update adds or changes must carry a valid certificate of its own member
    organisation: else CONFIG_INVALID / CONFIG_UPDATE_INVALID, nothing applied."""
    config = next_config(gov.view)
    entry = _peer_entry(gov.peers["Org1"], "peer0.Org1", "Org1")
    if how == "another org's certificate":
        entry.identity = gov.peers["Org2"].identity_bytes
    elif how == "a non-member org":
        entry = _peer_entry(gov.outsider_admin, "peer0.Org9", "Org9")
    elif how == "listed twice":
        config.peers.append(entry)
    else:
        entry.identity = b"\x0a\x04Org1\x12\x03xyz"
    config.peers.append(entry)
    data = update(gov.view, config, gov.admins["Org1"], gov.admins["Org2"]).SerializeToString()
    assert refusal(data, gov.view) == ("CONFIG_INVALID", "CONFIG_UPDATE_INVALID")


def test_a_hybrid_channel_needs_every_privacy_peers_ml_kem_key(gov: Gov) -> None:
    """`private_key_wrap` hybrid: a peer with an X25519 privacy key but no 1184-byte ML-KEM key
    makes the config invalid (no payload could be wrapped for it); with the key it is valid."""
    config = next_config(gov.view)
    config.private_key_wrap = algorithms_pb2.KEY_WRAP_ALGORITHM_X25519_MLKEM768
    peer = config.peers.add(node_id="peer0.Org1", org_id="Org1", privacy_public_key=bytes(32))
    with pytest.raises(ConfigError, match=r"peer0\.Org1: a hybrid channel needs"):
        channel_view(config)
    peer.privacy_kem_public_key = bytes(1184)
    assert channel_view(config).config.private_key_wrap == config.private_key_wrap
