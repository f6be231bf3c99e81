"""Private transactions at admission (orderer, gateway) and at commit: only a 32-byte hash."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from dltmw.core.block import make_block
from dltmw.core.channel import ChannelView, channel_view
from dltmw.core.errors import ClientError
from dltmw.core.hashing import compute_tx_id
from dltmw.core.identity import SigningIdentity
from dltmw.core.txcheck import check_envelope, check_transaction, private_payload_hash
from dltmw.pki.ca import FRESH, issue_cert, make_ca
from dltmw.runtime.roles.privacy.executor import private_txs
from dltmw.v1 import common_pb2, config_pb2, transaction_pb2

C = transaction_pb2
CHANNEL = "trades"
HASH = bytes(range(32))
NOW = datetime.now(UTC)
AT_NOW = replace(FRESH, now=lambda: NOW)  # certificates issued at NOW, whenever a test runs


@pytest.fixture(scope="module")
def setup() -> tuple[ChannelView, SigningIdentity, SigningIdentity]:
    org1, orderer_ca, outsider_ca = (
        make_ca("Org1", material=AT_NOW),
        make_ca("OrdererOrg", material=AT_NOW),
        make_ca("Org9", material=AT_NOW),
    )
    orderer = issue_cert(orderer_ca, "OrdererOrg", "orderer0", "orderer", material=AT_NOW)
    orderer_id = SigningIdentity.from_pem("OrdererOrg", orderer.cert_pem, orderer.key_pem)
    user = issue_cert(org1, "Org1", "user1", "client", material=AT_NOW)
    outsider = issue_cert(outsider_ca, "Org9", "mallory", "client", material=AT_NOW)
    config = config_pb2.ChannelConfig(
        channel_id=CHANNEL,
        organizations=[
            config_pb2.OrganizationConfig(org_id="Org1", root_certificate_pem=org1.cert_pem)
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
    return (
        channel_view(config),
        SigningIdentity.from_pem("Org1", user.cert_pem, user.key_pem),
        SigningIdentity.from_pem("Org9", outsider.cert_pem, outsider.key_pem),
    )


def envelope(signer: SigningIdentity, data: bytes, nonce: bytes = b"n" * 24) -> bytes:
    header = common_pb2.Header(
        type=common_pb2.HEADER_TYPE_PRIVATE_TRANSACTION,
        channel_id=CHANNEL,
        tx_id=compute_tx_id(nonce, signer.identity_bytes),
        creator=signer.identity_bytes,
        nonce=nonce,
    )
    header.timestamp.FromDatetime(NOW)
    payload = common_pb2.Payload(header=header.SerializeToString(), data=data).SerializeToString()
    return common_pb2.Envelope(payload=payload, signature=signer.sign(payload)).SerializeToString()


def private_data(digest: bytes = HASH) -> bytes:
    return C.PrivateTransaction(payload_hash=digest).SerializeToString()


def smuggled() -> bytes:
    """A PrivateTransaction with an extra unknown field (field 9, bytes) carrying plaintext."""
    return private_data() + b"\x4a\x05hello"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (private_data(), HASH),
        (private_data(HASH[:31]), None),
        (smuggled(), None),
        (b"\xff\xff", None),
        (b"", None),
    ],
    ids=["exact-hash", "short-hash", "extra-field-carries-plaintext", "garbage", "empty"],
)
def test_private_payload_hash(data: bytes, expected: bytes | None) -> None:
    assert private_payload_hash(data) == expected


def test_private_envelope_is_admitted_and_valid(
    setup: tuple[ChannelView, SigningIdentity, SigningIdentity],
) -> None:
    view, user, _ = setup
    env = envelope(user, private_data())
    checked = check_envelope(env, {CHANNEL: view}, NOW, 900)
    assert checked.header.type == common_pb2.HEADER_TYPE_PRIVATE_TRANSACTION
    tx = check_transaction(env, view)
    assert tx.code == C.TX_VALIDATION_CODE_VALID and tx.rwset is None


def test_private_envelope_with_extra_data_is_refused(
    setup: tuple[ChannelView, SigningIdentity, SigningIdentity],
) -> None:
    view, user, _ = setup
    env = envelope(user, smuggled())
    with pytest.raises(ClientError) as exc:
        check_envelope(env, {CHANNEL: view}, NOW, 900)
    assert exc.value.reason_name == "INVALID_FIELD"
    assert check_transaction(env, view).code == C.TX_VALIDATION_CODE_BAD_PAYLOAD


def test_private_envelope_of_a_non_member_is_invalid(
    setup: tuple[ChannelView, SigningIdentity, SigningIdentity],
) -> None:
    view, _, outsider = setup
    env = envelope(outsider, private_data())
    with pytest.raises(ClientError) as exc:
        check_envelope(env, {CHANNEL: view}, NOW, 900)
    assert exc.value.reason_name == "NOT_A_MEMBER"
    assert check_transaction(env, view).code == C.TX_VALIDATION_CODE_BAD_CREATOR_SIGNATURE


def test_executor_takes_only_valid_private_transactions(
    setup: tuple[ChannelView, SigningIdentity, SigningIdentity],
) -> None:
    _, user, _ = setup
    envs = [
        envelope(user, private_data(), b"a" * 24),
        envelope(user, private_data(bytes(32)), b"b" * 24),
        envelope(user, private_data(HASH[::-1]), b"c" * 24),
    ]
    block = make_block(CHANNEL, 1, bytes(32), envs)
    block.metadata.validation_codes.extend(
        [
            C.TX_VALIDATION_CODE_VALID,
            C.TX_VALIDATION_CODE_DUPLICATE_TXID,
            C.TX_VALIDATION_CODE_VALID,
        ]
    )
    assert [(i, d) for i, _, d in private_txs(block)] == [(0, HASH), (2, HASH[::-1])]
