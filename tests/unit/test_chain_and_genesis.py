"""The hash chain (dltmw.core.block) and the config block (dltmw.core.genesis).

Certificates come from dltmw.pki.ca, so the genesis tests run the real signature checks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import pytest

from dltmw.core.block import block_hash, chain_error, make_block, verify_chain
from dltmw.core.channel import ConfigError
from dltmw.core.errors import InvariantViolation
from dltmw.core.genesis import genesis_tx_id, make_genesis, read_genesis
from dltmw.core.hashing import ZERO_HASH, compute_tx_id, data_hash
from dltmw.core.identity import SigningIdentity
from dltmw.core.merkle import tx_root
from dltmw.core.policy import parse_policy
from dltmw.pki.ca import FRESH, IssuedCert, issue_cert, make_ca
from dltmw.v1 import block_pb2, common_pb2, config_pb2

CHANNEL = "ch1"
NOW = datetime.now(UTC)
AT_NOW = replace(FRESH, now=lambda: NOW)  # certificates issued at NOW, whenever a test runs
NONCE = bytes(32)
POLICY = "AND(Org1.peer, Org2.peer)"


# --- hash chain --------------------------------------------------------------------------------


def chain(n: int = 3, channel: str = CHANNEL) -> list[block_pb2.Block]:
    blocks: list[block_pb2.Block] = []
    previous = ZERO_HASH
    for number in range(n):
        block = make_block(
            channel, number, previous, [f"tx{number}-{i}".encode() for i in range(2)]
        )
        blocks.append(block)
        previous = block_hash(block)
    return blocks


def test_block_hash_is_the_documented_byte_concatenation() -> None:
    """Version 1 (a block made before tx_root existed: its tx_root is empty)."""
    block = make_block(CHANNEL, 0, ZERO_HASH, [b"a", b"b"])
    block.header.tx_root = b""
    digests = hashlib.sha256(b"a").digest() + hashlib.sha256(b"b").digest()
    assert block.header.data_hash == hashlib.sha256(digests).digest()
    expected = hashlib.sha256(
        CHANNEL.encode() + b"\x00" + (0).to_bytes(8, "big") + ZERO_HASH + block.header.data_hash
    ).digest()
    assert block_hash(block) == expected


def test_block_hash_v2_covers_the_tx_root() -> None:
    """Version 2 (every block made now): the documented concatenation, tx_root last."""
    block = make_block(CHANNEL, 0, ZERO_HASH, [b"a", b"b"])
    leaves = [hashlib.sha256(b"\x00" + hashlib.sha256(e).digest()).digest() for e in (b"a", b"b")]
    assert block.header.tx_root == hashlib.sha256(b"\x01" + leaves[0] + leaves[1]).digest()
    h = block.header
    expected = hashlib.sha256(
        b"\xffdltmw-block-v2"
        + CHANNEL.encode()
        + b"\x00"
        + (0).to_bytes(8, "big")
        + ZERO_HASH
        + h.data_hash
        + h.tx_root
    ).digest()
    assert block_hash(block) == expected
    stripped = block_pb2.Block()
    stripped.CopyFrom(block)
    stripped.header.tx_root = b""
    assert block_hash(stripped) != expected  # stripping the root voids the orderer signatures


def test_chain_error_names_a_tx_root_that_does_not_match() -> None:
    block = make_block(CHANNEL, 0, ZERO_HASH, [b"a", b"b"])
    block.header.tx_root = hashlib.sha256(b"other").digest()
    assert "tx_root" in (chain_error(block, CHANNEL, 0, ZERO_HASH) or "")


def test_block_hash_ignores_metadata() -> None:
    block = make_block(CHANNEL, 0, ZERO_HASH, [b"a"])
    before = block_hash(block)
    block.metadata.signatures.add(signer=b"someone", signature=b"sig")
    assert block_hash(block) == before


def test_make_block_keeps_envelope_bytes_exactly() -> None:
    envelopes = [b"\x00raw", b"", b"\xff" * 3]
    block = make_block(CHANNEL, 4, b"\x01" * 32, envelopes)
    assert list(block.data.envelopes) == envelopes
    assert block.header.data_hash == data_hash(envelopes)


def test_block_zero_must_have_the_zero_previous_hash() -> None:
    with pytest.raises(InvariantViolation):
        make_block(CHANNEL, 0, b"\x01" * 32, [b"a"])


def test_verify_chain_returns_the_last_hash() -> None:
    blocks = chain()
    assert verify_chain(blocks, CHANNEL) == block_hash(blocks[-1])
    assert verify_chain([], CHANNEL) == ZERO_HASH


def _tamper_data(blocks: list[block_pb2.Block]) -> None:
    blocks[1].data.envelopes[0] = b"forged"


def _wrong_previous(blocks: list[block_pb2.Block]) -> None:
    blocks[2].header.previous_hash = b"\x07" * 32


def _wrong_channel(blocks: list[block_pb2.Block]) -> None:
    blocks[1].header.channel_id = "other"


def _gap(blocks: list[block_pb2.Block]) -> None:
    del blocks[1]


def _rewrite_earlier_block(blocks: list[block_pb2.Block]) -> None:
    """Block 0 rewritten consistently (data, data hash and tx_root): block 1 no longer links."""
    blocks[0].data.envelopes[0] = b"forged"
    blocks[0].header.data_hash = data_hash(blocks[0].data.envelopes)
    blocks[0].header.tx_root = tx_root(blocks[0].data.envelopes)


@pytest.mark.parametrize(
    ("tamper", "match"),
    [
        (_tamper_data, "data hash"),
        (_wrong_previous, "does not link"),
        (_wrong_channel, "channel"),
        (_gap, "block number 2, expected 1"),
        (_rewrite_earlier_block, "block 1 does not link"),
    ],
    ids=[
        "tampered-envelope-is-a-data-hash-error",
        "wrong-previous-hash-does-not-link",
        "block-of-another-channel",
        "missing-block-is-a-number-gap",
        "consistently-rewritten-earlier-block-breaks-the-link",
    ],
)
def test_verify_chain_detects_tampering(
    tamper: Callable[[list[block_pb2.Block]], None], match: str
) -> None:
    blocks = chain()
    tamper(blocks)
    with pytest.raises(InvariantViolation, match=match):
        verify_chain(blocks, CHANNEL)


@pytest.mark.parametrize(
    ("channel", "number", "previous", "error"),
    [
        (CHANNEL, 1, "real", None),
        ("other", 1, "real", "channel"),
        (CHANNEL, 2, "real", "block number 1, expected 2"),
        (CHANNEL, 1, "zero", "does not link"),
    ],
    ids=["follows", "wrong-channel", "wrong-number", "wrong-previous-hash"],
)
def test_chain_error(channel: str, number: int, previous: str, error: str | None) -> None:
    blocks = chain(2)
    prev = block_hash(blocks[0]) if previous == "real" else ZERO_HASH
    err = chain_error(blocks[1], channel, number, prev)
    if error is None:
        assert err is None
    else:
        assert err is not None and error in err


# --- genesis -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Net:
    org1: IssuedCert
    org2: IssuedCert
    orderer_ca: IssuedCert
    orderer: SigningIdentity
    org1_peer: SigningIdentity
    rogue_orderer: SigningIdentity  # role orderer, right org, but not named in the config


def identity(ca: IssuedCert, org_id: str, name: str, role: str) -> SigningIdentity:
    issued = issue_cert(ca, org_id, name, role, material=AT_NOW)
    return SigningIdentity.from_pem(org_id, issued.cert_pem, issued.key_pem)


@pytest.fixture(scope="module")
def net() -> Net:
    org1, org2, orderer_ca = (
        make_ca("Org1", material=AT_NOW),
        make_ca("Org2", material=AT_NOW),
        make_ca("OrdererOrg", material=AT_NOW),
    )
    return Net(
        org1=org1,
        org2=org2,
        orderer_ca=orderer_ca,
        orderer=identity(orderer_ca, "OrdererOrg", "orderer0", "orderer"),
        org1_peer=identity(org1, "Org1", "peer0.org1", "peer"),
        rogue_orderer=identity(orderer_ca, "OrdererOrg", "orderer9", "orderer"),
    )


def config(net: Net) -> config_pb2.ChannelConfig:
    return config_pb2.ChannelConfig(
        channel_id=CHANNEL,
        organizations=[
            config_pb2.OrganizationConfig(org_id="Org1", root_certificate_pem=net.org1.cert_pem),
            config_pb2.OrganizationConfig(org_id="Org2", root_certificate_pem=net.org2.cert_pem),
        ],
        orderer_organizations=[
            config_pb2.OrganizationConfig(
                org_id="OrdererOrg", root_certificate_pem=net.orderer_ca.cert_pem
            )
        ],
        orderers=[
            config_pb2.NodeConfig(
                node_id="orderer0", org_id="OrdererOrg", identity=net.orderer.identity_bytes
            )
        ],
        ordering=config_pb2.ORDERING_TYPE_NONE,
        batch=config_pb2.BatchConfig(max_tx_count=10, max_bytes=1 << 20, timeout_ms=200),
        contracts=[config_pb2.ContractConfig(name="bank", endorsement_policy=POLICY)],
    )


def test_genesis_round_trip(net: Net) -> None:
    cfg = config(net)
    block = make_genesis(cfg, net.orderer, nonce=NONCE, at=NOW)
    view = read_genesis(block)
    assert view.channel_id == CHANNEL
    assert view.policy_for("bank") == parse_policy(POLICY)
    assert view.policy_for("kv") is None
    assert view.orderer_ids() == ["orderer0"]
    assert view.config == cfg
    assert view.membership.org_ids == frozenset({"Org1", "Org2"})
    assert block.header.number == 0 and block.header.previous_hash == ZERO_HASH
    assert genesis_tx_id(block) == compute_tx_id(NONCE, net.orderer.identity_bytes)


def test_genesis_is_deterministic_except_for_signatures(net: Net) -> None:
    a = make_genesis(config(net), net.orderer, nonce=NONCE, at=NOW)
    b = make_genesis(config(net), net.orderer, nonce=NONCE, at=NOW)
    payload_a = common_pb2.Envelope.FromString(a.data.envelopes[0]).payload
    payload_b = common_pb2.Envelope.FromString(b.data.envelopes[0]).payload
    assert payload_a == payload_b


def _replace_payload(block: block_pb2.Block, payload: bytes, *, rehash: bool) -> None:
    env = common_pb2.Envelope.FromString(block.data.envelopes[0])
    env.payload = payload
    block.data.envelopes[0] = env.SerializeToString()
    if rehash:
        block.header.data_hash = data_hash(block.data.envelopes)


def _modified_config_payload(block: block_pb2.Block) -> bytes:
    env = common_pb2.Envelope.FromString(block.data.envelopes[0])
    payload = common_pb2.Payload.FromString(env.payload)
    cfg = config_pb2.ChannelConfig.FromString(payload.data)
    cfg.contracts[0].endorsement_policy = "OR(Org1.peer, Org2.peer)"
    payload.data = cfg.SerializeToString()
    return payload.SerializeToString()


def _tamper_config_keep_hash(block: block_pb2.Block, net: Net) -> None:
    _replace_payload(block, _modified_config_payload(block), rehash=False)


def _tamper_config_rehash(block: block_pb2.Block, net: Net) -> None:
    _replace_payload(block, _modified_config_payload(block), rehash=True)


def _tamper_config_rehash_and_resign_block(block: block_pb2.Block, net: Net) -> None:
    _replace_payload(block, _modified_config_payload(block), rehash=True)
    block.metadata.signatures[0].signature = net.orderer.sign(block_hash(block))


def _drop_block_signature(block: block_pb2.Block, net: Net) -> None:
    del block.metadata.signatures[:]


def _block_signed_by_other_key(block: block_pb2.Block, net: Net) -> None:
    block.metadata.signatures[0].signature = net.rogue_orderer.sign(block_hash(block))


def _block_signature_by_unlisted_signer(block: block_pb2.Block, net: Net) -> None:
    sig = block.metadata.signatures[0]
    sig.signer = net.rogue_orderer.identity_bytes
    sig.signature = net.rogue_orderer.sign(block_hash(block))


def _two_envelopes(block: block_pb2.Block, net: Net) -> None:
    block.data.envelopes.append(block.data.envelopes[0])
    block.header.data_hash = data_hash(block.data.envelopes)


def _block_of_other_channel(block: block_pb2.Block, net: Net) -> None:
    block.header.channel_id = "ch2"


def _not_block_zero(block: block_pb2.Block, net: Net) -> None:
    block.header.number = 1


def _garbage_envelope(block: block_pb2.Block, net: Net) -> None:
    block.data.envelopes[0] = b"\xff\xff\xff"
    block.header.data_hash = data_hash(block.data.envelopes)


@pytest.mark.parametrize(
    "tamper",
    [
        _tamper_config_keep_hash,
        _tamper_config_rehash,
        _tamper_config_rehash_and_resign_block,
        _drop_block_signature,
        _block_signed_by_other_key,
        _block_signature_by_unlisted_signer,
        _two_envelopes,
        _block_of_other_channel,
        _not_block_zero,
        _garbage_envelope,
    ],
    ids=[
        "modified-config-bytes-break-the-data-hash",
        "modified-config-with-new-data-hash-breaks-the-block-signature",
        "modified-config-re-signed-block-still-fails-the-envelope-signature",
        "missing-orderer-block-signature",
        "block-signature-by-another-key",
        "block-signature-by-an-orderer-not-in-the-config",
        "two-envelopes",
        "block-header-names-another-channel",
        "number-is-not-zero",
        "envelope-does-not-parse",
    ],
)
def test_read_genesis_refuses_tampered_blocks(
    net: Net, tamper: Callable[[block_pb2.Block, Net], None]
) -> None:
    block = make_genesis(config(net), net.orderer, nonce=NONCE, at=NOW)
    read_genesis(block)  # the untampered block is accepted
    tamper(block, net)
    with pytest.raises(ConfigError):
        read_genesis(block)


@pytest.mark.parametrize(
    "who",
    ["org1_peer", "rogue_orderer"],
    ids=["signed-by-a-member-peer", "signed-by-an-orderer-not-in-the-config"],
)
def test_read_genesis_refuses_a_block_made_by_a_non_orderer(net: Net, who: str) -> None:
    signer: SigningIdentity = getattr(net, who)
    block = make_genesis(config(net), signer, nonce=NONCE, at=NOW)
    with pytest.raises(ConfigError, match="orderer"):
        read_genesis(block)


def test_read_genesis_refuses_orderer_whose_org_root_is_missing(net: Net) -> None:
    cfg = config(net)
    del cfg.orderer_organizations[:]
    block = make_genesis(cfg, net.orderer, nonce=NONCE, at=NOW)
    with pytest.raises(ConfigError):
        read_genesis(block)


def _bad_channel_id(c: config_pb2.ChannelConfig) -> None:
    c.channel_id = "Bad Channel!"


def _unknown_org_in_policy(c: config_pb2.ChannelConfig) -> None:
    c.contracts[0].endorsement_policy = "AND(Org3.peer, Org1.peer)"


def _zero_batch_limit(c: config_pb2.ChannelConfig) -> None:
    c.batch.max_tx_count = 0


def _no_member_orgs(c: config_pb2.ChannelConfig) -> None:
    del c.organizations[:]


@pytest.mark.parametrize(
    "mutate",
    [_bad_channel_id, _unknown_org_in_policy, _zero_batch_limit, _no_member_orgs],
    ids=[
        "invalid-channel-id",
        "policy-names-an-unknown-org",
        "zero-batch-limit",
        "no-member-orgs",
    ],
)
def test_read_genesis_refuses_an_invalid_config_even_if_well_signed(
    net: Net, mutate: Callable[[config_pb2.ChannelConfig], None]
) -> None:
    cfg = config(net)
    mutate(cfg)
    block = make_genesis(cfg, net.orderer, nonce=NONCE, at=NOW)
    with pytest.raises(ConfigError):
        read_genesis(block)
