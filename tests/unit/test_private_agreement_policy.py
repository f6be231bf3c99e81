"""Agreement policy expressions (core/privacy/agreement_policy.py): the projection onto a
transaction's recipients, the sender always required, the commit rule with real signatures, and
the configuration check. A Hypothesis property compares `policy_result` with a naive model."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dltmw.core.channel import ConfigError, channel_view
from dltmw.core.hashing import compute_tx_id
from dltmw.core.identity import SigningIdentity
from dltmw.core.policy import PolicyError, PolicyResult, parse_policy
from dltmw.core.privacy import agreement as ag
from dltmw.core.privacy.agreement_policy import (
    EXPRESSION,
    check_config,
    parse_agreement_policy,
    policy_result,
    project,
)
from dltmw.core.txcheck import check_transaction
from dltmw.pki.ca import FRESH, issue_cert, make_ca
from dltmw.v1 import common_pb2, config_pb2, private_agreement_pb2, transaction_pb2

A = private_agreement_pb2
C = transaction_pb2
ORGS = ("Org1", "Org2", "Org3")
KEYS = {org: bytes([i + 1]) * 32 for i, org in enumerate(ORGS)}
CHANNEL = "trades"
HASH = bytes(range(32))
NOW = datetime.now(UTC)
AT_NOW = replace(FRESH, now=lambda: NOW)  # certificates issued at NOW, whenever a test runs
NONCE = b"n" * 24
SENDER_PLUS_ONE = "OutOf(2, Org1.peer, Org2.peer, Org3.peer)"


def config(text: str, policy: int = EXPRESSION) -> config_pb2.ChannelConfig:
    return config_pb2.ChannelConfig(
        peers=[
            config_pb2.NodeConfig(node_id=f"p{org}", org_id=org, privacy_public_key=KEYS[org])
            for org in ORGS
        ],
        private_agreement=policy,  # type: ignore[arg-type]
        private_agreement_policy=text,
    )


def keys(*orgs: str) -> list[bytes]:
    return [KEYS[o] for o in orgs]


S, P, U = PolicyResult.SATISFIED, PolicyResult.PENDING, PolicyResult.UNSATISFIABLE


@pytest.mark.parametrize(
    ("text", "recipients", "sender", "agreed", "outstanding", "expected"),
    [
        pytest.param(SENDER_PLUS_ONE, ORGS, "Org1", ("Org1", "Org2"), (), S, id="sender+1-of-2"),
        pytest.param(SENDER_PLUS_ONE, ORGS, "Org1", ("Org1",), ("Org3",), P, id="sender-waits"),
        pytest.param(SENDER_PLUS_ONE, ORGS, "Org1", ("Org1",), (), U, id="sender-alone-of-3"),
        pytest.param(
            SENDER_PLUS_ONE, ORGS, "Org1", ("Org2", "Org3"), (), U, id="never-without-sender"
        ),
        pytest.param(
            SENDER_PLUS_ONE, ORGS, "Org1", ("Org2", "Org3"), ("Org1",), P, id="sender-pending"
        ),
        pytest.param(
            SENDER_PLUS_ONE, ("Org1", "Org2"), "Org1", ("Org1",), (), U, id="two-parties-both"
        ),
        pytest.param(SENDER_PLUS_ONE, ("Org1",), "Org1", ("Org1",), (), S, id="sender-only"),
        pytest.param(
            "AND(Org1.peer, Org2.peer)",
            ("Org2", "Org3"),
            "Org3",
            ("Org3", "Org2"),
            (),
            S,
            id="absent-org-dropped",
        ),
        pytest.param(
            "Org1.peer",
            ("Org2", "Org3"),
            "Org2",
            ("Org2",),
            (),
            U,
            id="names-none-of-them-all-needed",
        ),
        pytest.param(
            "Org1.peer",
            ("Org2", "Org3"),
            "Org2",
            ("Org2", "Org3"),
            (),
            S,
            id="names-none-all-agreed",
        ),
        pytest.param(SENDER_PLUS_ONE, ORGS, "Org9", ("Org1", "Org2"), (), U, id="sender-unknown"),
        pytest.param(
            SENDER_PLUS_ONE,
            ("Org1", "Org2"),
            "Org1",
            ("Org1", "Org2", "Org3"),
            (),
            S,
            id="non-recipient-ignored",
        ),
    ],
)
def test_policy_result(
    text: str,
    recipients: tuple[str, ...],
    sender: str,
    agreed: tuple[str, ...],
    outstanding: tuple[str, ...],
    expected: PolicyResult,
) -> None:
    sender_key = KEYS.get(sender, b"\xee" * 32)
    got = policy_result(
        config(text), keys(*recipients), sender_key, keys(*agreed), keys(*outstanding)
    )
    assert got is expected


def test_all_recipients_needs_everyone() -> None:
    cfg = config("", A.PRIVATE_AGREEMENT_POLICY_ALL_RECIPIENTS)
    assert policy_result(cfg, keys(*ORGS), KEYS["Org1"], keys("Org1", "Org2")) is U
    assert policy_result(cfg, keys(*ORGS), KEYS["Org1"], keys(*ORGS)) is S


def test_projection_clamps_and_drops() -> None:
    policy = parse_policy("AND(Org1.peer, OutOf(2, Org2.peer, Org3.peer))")
    assert project(policy, frozenset({"Org1", "Org2"})) == parse_policy(
        "AND(Org1.peer, OutOf(1, Org2.peer))"
    )
    assert project(policy, frozenset({"Org9"})) is None


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(1, 3),
    recipients=st.sets(st.sampled_from(ORGS), min_size=1),
    agreed=st.sets(st.sampled_from(ORGS)),
    sender=st.sampled_from(ORGS),
)
def test_n_of_orgs_matches_naive_model(
    n: int, recipients: set[str], agreed: set[str], sender: str
) -> None:
    """OutOf(n, every org) projected: the sender and min(n, parties) of the parties."""
    text = f"OutOf({n}, Org1.peer, Org2.peer, Org3.peer)"
    got = policy_result(config(text), keys(*recipients), KEYS[sender], keys(*agreed))
    signed = agreed & recipients
    model = sender in recipients and sender in signed and len(signed) >= min(n, len(recipients))
    assert (got is S) == model


@pytest.mark.parametrize(
    ("text", "policy", "error"),
    [
        ("OutOf(2, Org1.admin, Org2.peer)", EXPRESSION, "can never sign"),
        ("OutOf(2, Org1.peer, Org7.peer)", EXPRESSION, "Org7"),
        ("AND(Org1.peer", EXPRESSION, "expected"),
        ("Org1.peer", A.PRIVATE_AGREEMENT_POLICY_ALL_RECIPIENTS, "not EXPRESSION"),
        ("", 7, "unknown"),
    ],
)
def test_config_check_refuses(text: str, policy: int, error: str) -> None:
    with pytest.raises(PolicyError, match=error):
        check_config(config(text, policy), ORGS)


def test_config_check_accepts() -> None:
    check_config(config(SENDER_PLUS_ONE), ORGS)
    check_config(config("", A.PRIVATE_AGREEMENT_POLICY_ALL_RECIPIENTS), ORGS)
    assert parse_agreement_policy("Org1.member") == parse_policy("Org1.member")


# --- the commit rule with real signatures -----------------------------------------------------


@pytest.fixture(scope="module")
def network() -> tuple[config_pb2.ChannelConfig, SigningIdentity, dict[str, SigningIdentity]]:
    cas = {org: make_ca(org, material=AT_NOW) for org in ORGS}
    orderer_ca = make_ca("OrdererOrg", material=AT_NOW)
    orderer = issue_cert(orderer_ca, "OrdererOrg", "orderer0", "orderer", material=AT_NOW)
    orderer_id = SigningIdentity.from_pem("OrdererOrg", orderer.cert_pem, orderer.key_pem)
    peers = {}
    for org in ORGS:
        cert = issue_cert(cas[org], org, f"p{org}", "peer", material=AT_NOW)
        peers[org] = SigningIdentity.from_pem(org, cert.cert_pem, cert.key_pem)
    user = issue_cert(cas["Org1"], "Org1", "user1", "client", material=AT_NOW)
    cfg = config(SENDER_PLUS_ONE)
    for node in cfg.peers:
        node.identity = peers[node.org_id].identity_bytes
    cfg.MergeFrom(
        config_pb2.ChannelConfig(
            channel_id=CHANNEL,
            organizations=[
                config_pb2.OrganizationConfig(org_id=o, root_certificate_pem=cas[o].cert_pem)
                for o in ORGS
            ],
            orderer_organizations=[
                config_pb2.OrganizationConfig(
                    org_id="OrdererOrg", root_certificate_pem=orderer_ca.cert_pem
                )
            ],
            orderers=[
                config_pb2.NodeConfig(
                    node_id="orderer0", org_id="OrdererOrg", identity=orderer_id.identity_bytes
                )
            ],
            ordering=config_pb2.ORDERING_TYPE_NONE,
            batch=config_pb2.BatchConfig(max_tx_count=10, max_bytes=1 << 20, timeout_ms=200),
        )
    )
    return cfg, SigningIdentity.from_pem("Org1", user.cert_pem, user.key_pem), peers


def _code(
    network: tuple[config_pb2.ChannelConfig, SigningIdentity, dict[str, SigningIdentity]],
    signers: tuple[str, ...],
    sender: str = "Org1",
    policy: int = EXPRESSION,
) -> int:
    cfg, user, peers = network
    cfg = config_pb2.ChannelConfig.FromString(cfg.SerializeToString())
    cfg.private_agreement = policy  # type: ignore[assignment]
    if policy != EXPRESSION:
        cfg.private_agreement_policy = ""
    view = channel_view(cfg)
    tx_id = compute_tx_id(NONCE, user.identity_bytes)
    agreements = []
    for org in signers:
        body = ag.agreement_body(
            CHANNEL,
            tx_id,
            HASH,
            (b"p" * 32, b"d" * 32),
            keys(*ORGS),
            ag.AGREE,
            sender_key=KEYS[sender],
        )
        signature = peers[org].sign(ag.signing_bytes(body))
        agreements.append(
            A.PrivateAgreement(body=body, signer=peers[org].identity_bytes, signature=signature)
        )
    header = common_pb2.Header(
        type=common_pb2.HEADER_TYPE_PRIVATE_TRANSACTION,
        channel_id=CHANNEL,
        tx_id=tx_id,
        creator=user.identity_bytes,
        nonce=NONCE,
    )
    header.timestamp.FromDatetime(NOW)
    data = C.PrivateTransaction(payload_hash=HASH, agreements=agreements).SerializeToString()
    payload = common_pb2.Payload(header=header.SerializeToString(), data=data).SerializeToString()
    env = common_pb2.Envelope(payload=payload, signature=user.sign(payload)).SerializeToString()
    return check_transaction(env, view).code


def test_commit_sender_and_one_of_two_is_valid(network: object) -> None:
    assert _code(network, ("Org1", "Org2")) == C.TX_VALIDATION_CODE_VALID  # type: ignore[arg-type]
    assert _code(network, ("Org1", "Org3")) == C.TX_VALIDATION_CODE_VALID  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "signers", [("Org1",), ("Org2", "Org3"), ()], ids=["sender-alone", "no-sender", "none"]
)
def test_commit_too_few_is_missing(network: object, signers: tuple[str, ...]) -> None:
    code = _code(network, signers)  # type: ignore[arg-type]
    assert code == C.TX_VALIDATION_CODE_PRIVATE_AGREEMENT_MISSING


def test_commit_same_signers_missing_under_all_recipients(network: object) -> None:
    """The negative control: what the expression accepts, ALL_RECIPIENTS refuses."""
    code = _code(
        network,  # type: ignore[arg-type]
        ("Org1", "Org2"),
        policy=A.PRIVATE_AGREEMENT_POLICY_ALL_RECIPIENTS,
    )
    assert code == C.TX_VALIDATION_CODE_PRIVATE_AGREEMENT_MISSING


def test_channel_view_refuses_bad_agreement_policy(network: object) -> None:
    cfg = config_pb2.ChannelConfig.FromString(network[0].SerializeToString())  # type: ignore[index]
    cfg.private_agreement_policy = "OutOf(1, Org1.admin)"
    with pytest.raises(ConfigError, match="private agreement policy"):
        channel_view(cfg)
