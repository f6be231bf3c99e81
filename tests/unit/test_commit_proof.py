"""Commit proofs and the light client (core/commit_proof.py, light_client.py, merkle.py).

Every forged proof is refused with its own reason and nothing else: a wrong orderer signer, too
few PBFT-lite signatures, a wrong inclusion path, a proof of another channel, too few or
mismatching peer attestations, and (at the caller) a proof of another transaction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from crosschain_parties import (
    NOW,
    VALID,
    Chan,
    World,
    config_update_block,
    make_world,
    nonce,
    proof_of,
)
from hypothesis import given
from hypothesis import strategies as st

from dltmw.core import merkle
from dltmw.core.block import block_hash
from dltmw.core.channel import channel_view
from dltmw.core.commit_proof import ProofError, Proven, expect, verify_proof
from dltmw.core.config_update import add_signature, update_content, update_envelope
from dltmw.core.light_client import Epoch, LightClient, LightClientRejected, advance
from dltmw.v1 import config_pb2, config_update_pb2, crosschain_pb2, errors_pb2, transaction_pb2

R = errors_pb2
Forge = Callable[[World, Chan, Chan], tuple[crosschain_pb2.CommitProof, LightClient]]


@pytest.fixture(scope="module")
def parties() -> tuple[World, Chan, Chan]:
    return make_world()


def _peers(world: World, *orgs: str) -> list:  # type: ignore[type-arg]
    return [world.peers[o] for o in orgs]


def _trading_proof(world: World, trading: Chan, n_signers: int = 3) -> crosschain_pb2.CommitProof:
    block = trading.cut([b"lock-a", b"lock-b", b"other"], trading.orderers[:n_signers])
    return proof_of(block, 1, _peers(world, "Org1", "Org2"))


def test_a_solo_proof_with_a_majority_of_peer_orgs_verifies(
    parties: tuple[World, Chan, Chan],
) -> None:
    world, cash, _ = parties
    block = cash.cut([b"tx0", b"tx1", b"tx2", b"tx3", b"tx4"], cash.orderers)
    proven = verify_proof(proof_of(block, 3, _peers(world, "Org2", "Org3")), cash.client(), NOW)
    assert proven == Proven("cash", block.header.number, 3, b"tx3", VALID)


def test_a_pbft_proof_with_2f_plus_1_signatures_verifies(
    parties: tuple[World, Chan, Chan],
) -> None:
    world, _, trading = parties
    proven = verify_proof(_trading_proof(world, trading), trading.client(), NOW)
    assert (proven.envelope, proven.code) == (b"lock-b", VALID)


def _wrong_signer(
    world: World, cash: Chan, trading: Chan
) -> tuple[crosschain_pb2.CommitProof, LightClient]:
    block = cash.cut([b"tx"], [world.outsider])
    return proof_of(block, 0, _peers(world, "Org1", "Org2")), cash.client()


def _orderer_of_another_channel(
    world: World, cash: Chan, trading: Chan
) -> tuple[crosschain_pb2.CommitProof, LightClient]:
    block = cash.cut([b"tx"], [trading.orderers[0]])
    return proof_of(block, 0, _peers(world, "Org1", "Org2")), cash.client()


def _signature_over_another_block(
    world: World, cash: Chan, trading: Chan
) -> tuple[crosschain_pb2.CommitProof, LightClient]:
    other = cash.cut([b"first"], cash.orderers)
    block = cash.cut([b"tx"], [])
    block.metadata.signatures.extend(other.metadata.signatures)
    return proof_of(block, 0, _peers(world, "Org1", "Org2")), cash.client()


def _too_few_pbft(
    world: World, cash: Chan, trading: Chan
) -> tuple[crosschain_pb2.CommitProof, LightClient]:
    return _trading_proof(world, trading, n_signers=2), trading.client()


def _one_pbft_signature_twice(
    world: World, cash: Chan, trading: Chan
) -> tuple[crosschain_pb2.CommitProof, LightClient]:
    proof = _trading_proof(world, trading, n_signers=2)
    proof.orderer_signatures.append(proof.orderer_signatures[0])
    return proof, trading.client()


def _tampered_path(
    world: World, cash: Chan, trading: Chan
) -> tuple[crosschain_pb2.CommitProof, LightClient]:
    proof = _trading_proof(world, trading)
    proof.inclusion_path[0] = bytes(32)
    return proof, trading.client()


def _path_of_another_index(
    world: World, cash: Chan, trading: Chan
) -> tuple[crosschain_pb2.CommitProof, LightClient]:
    proof = _trading_proof(world, trading)
    proof.tx_index = 0
    return proof, trading.client()


def _envelope_not_in_block(
    world: World, cash: Chan, trading: Chan
) -> tuple[crosschain_pb2.CommitProof, LightClient]:
    proof = _trading_proof(world, trading)
    proof.envelope = b"lock-forged"
    return proof, trading.client()


def _block_without_tx_root(
    world: World, cash: Chan, trading: Chan
) -> tuple[crosschain_pb2.CommitProof, LightClient]:
    block = cash.cut([b"tx"], [])
    block.header.tx_root = b""
    s = cash.orderers[0]
    block.metadata.signatures.add(signer=s.identity_bytes, signature=s.sign(block_hash(block)))
    return proof_of(block, 0, _peers(world, "Org1", "Org2")), cash.client()


def _another_channel(
    world: World, cash: Chan, trading: Chan
) -> tuple[crosschain_pb2.CommitProof, LightClient]:
    return _trading_proof(world, trading), cash.client()


def _one_peer_org(
    world: World, cash: Chan, trading: Chan
) -> tuple[crosschain_pb2.CommitProof, LightClient]:
    block = cash.cut([b"tx"], cash.orderers)
    return proof_of(block, 0, _peers(world, "Org1")), cash.client()


def _same_peer_twice(
    world: World, cash: Chan, trading: Chan
) -> tuple[crosschain_pb2.CommitProof, LightClient]:
    block = cash.cut([b"tx"], cash.orderers)
    return proof_of(block, 0, _peers(world, "Org1", "Org1")), cash.client()


def _attested_by_a_client(
    world: World, cash: Chan, trading: Chan
) -> tuple[crosschain_pb2.CommitProof, LightClient]:
    block = cash.cut([b"tx"], cash.orderers)
    return proof_of(block, 0, [world.peers["Org1"], world.clients["Org2"]]), cash.client()


def _code_changed_after_attesting(
    world: World, cash: Chan, trading: Chan
) -> tuple[crosschain_pb2.CommitProof, LightClient]:
    block = cash.cut([b"tx"], cash.orderers)
    invalid = transaction_pb2.TX_VALIDATION_CODE_MVCC_READ_CONFLICT
    proof = proof_of(block, 0, _peers(world, "Org1", "Org2"), code=invalid)
    proof.code = VALID
    return proof, cash.client()


FORGERIES: list[tuple[Forge, int]] = [
    (_wrong_signer, R.ERROR_REASON_PROOF_BAD_ORDERER_SIGNATURE),
    (_orderer_of_another_channel, R.ERROR_REASON_PROOF_BAD_ORDERER_SIGNATURE),
    (_signature_over_another_block, R.ERROR_REASON_PROOF_BAD_ORDERER_SIGNATURE),
    (_too_few_pbft, R.ERROR_REASON_PROOF_ORDERER_QUORUM),
    (_one_pbft_signature_twice, R.ERROR_REASON_PROOF_ORDERER_QUORUM),
    (_tampered_path, R.ERROR_REASON_PROOF_INCLUSION_INVALID),
    (_path_of_another_index, R.ERROR_REASON_PROOF_INCLUSION_INVALID),
    (_envelope_not_in_block, R.ERROR_REASON_PROOF_INCLUSION_INVALID),
    (_block_without_tx_root, R.ERROR_REASON_PROOF_INCLUSION_INVALID),
    (_another_channel, R.ERROR_REASON_PROOF_WRONG_CHANNEL),
    (_one_peer_org, R.ERROR_REASON_PROOF_ATTESTATION_INVALID),
    (_same_peer_twice, R.ERROR_REASON_PROOF_ATTESTATION_INVALID),
    (_attested_by_a_client, R.ERROR_REASON_PROOF_ATTESTATION_INVALID),
    (_code_changed_after_attesting, R.ERROR_REASON_PROOF_ATTESTATION_INVALID),
]


@pytest.mark.parametrize(
    ("forge", "reason"),
    FORGERIES,
    ids=[f.__name__.strip("_").replace("_", "-") for f, _ in FORGERIES],
)
def test_a_forged_proof_is_refused_with_its_reason(
    parties: tuple[World, Chan, Chan], forge: Forge, reason: int
) -> None:
    proof, client = forge(*parties)
    with pytest.raises(ProofError) as err:
        verify_proof(proof, client, NOW)
    assert err.value.reason_name == R.ErrorReason.Name(reason).removeprefix("ERROR_REASON_")


def test_a_proof_of_another_transaction_is_a_mismatch(parties: tuple[World, Chan, Chan]) -> None:
    world, cash, _ = parties
    block = cash.cut([b"tx"], cash.orderers)
    proven = verify_proof(proof_of(block, 0, _peers(world, "Org1", "Org2")), cash.client(), NOW)
    expect(proven, "cash", VALID, "the lock")
    for channel, code in (
        ("trading", VALID),
        ("cash", transaction_pb2.TX_VALIDATION_CODE_MVCC_READ_CONFLICT),
    ):
        with pytest.raises(ProofError) as err:
            expect(proven, channel, code, "the lock")
        assert err.value.reason == R.ERROR_REASON_PROOF_MISMATCH


def test_the_commit_proof_policy_of_the_config_is_applied(
    parties: tuple[World, Chan, Chan],
) -> None:
    world, cash, _ = parties
    config = config_pb2.ChannelConfig()
    config.CopyFrom(cash.config)
    config.commit_proof_policy = "AND(Org1.peer, Org2.peer, Org3.peer)"
    client = LightClient(b"", (Epoch(0, channel_view(config)),))
    block = cash.cut([b"tx"], cash.orderers)
    with pytest.raises(ProofError):
        verify_proof(proof_of(block, 0, _peers(world, "Org1", "Org2")), client, NOW)
    verify_proof(proof_of(block, 0, _peers(world, "Org1", "Org2", "Org3")), client, NOW)


# --- the light client ---


def _new_orderer_config(world: World, chan: Chan) -> config_pb2.ChannelConfig:
    new = config_pb2.ChannelConfig()
    new.CopyFrom(chan.config)
    new.orderers[0].identity = world.spare_orderer.identity_bytes
    return new


def test_the_light_client_follows_a_config_change_of_the_orderer() -> None:
    world, cash, _ = make_world()
    before = cash.cut([b"old"], cash.orderers)
    block = config_update_block(world, cash, _new_orderer_config(world, cash), cash.orderers)
    client = advance(cash.client(), block, NOW)
    assert (client.latest.config_block, client.latest.view.sequence) == (block.header.number, 1)
    after = cash.cut([b"new"], [world.spare_orderer])
    verify_proof(proof_of(after, 0, _peers(world, "Org1", "Org2")), client, NOW)
    verify_proof(proof_of(before, 0, _peers(world, "Org1", "Org2")), client, NOW)
    # the old orderer signs a block after the change: refused (the config in force says who)
    forged = cash.cut([b"by-old"], cash.orderers)
    with pytest.raises(ProofError) as err:
        verify_proof(proof_of(forged, 0, _peers(world, "Org1", "Org2")), client, NOW)
    assert err.value.reason == R.ERROR_REASON_PROOF_BAD_ORDERER_SIGNATURE
    # a client that has not taken the change refuses the new orderer's block: it cannot know it
    with pytest.raises(ProofError):
        verify_proof(proof_of(after, 0, _peers(world, "Org1", "Org2")), cash.client(), NOW)


def _config_signed_by_outsider(world: World, chan: Chan) -> object:
    return config_update_block(world, chan, _new_orderer_config(world, chan), [world.outsider])


def _config_block_with_two_envelopes(world: World, chan: Chan) -> object:
    block = config_update_block(world, chan, _new_orderer_config(world, chan), [])
    chan.blocks.pop()
    return chan.cut([block.data.envelopes[0], b"other"], chan.orderers)


def _not_a_config_block(world: World, chan: Chan) -> object:
    return chan.cut([b"tx"], chan.orderers)


def _config_block_data_tampered(world: World, chan: Chan) -> object:
    block = config_update_block(world, chan, _new_orderer_config(world, chan), chan.orderers)
    block.data.envelopes[0] = block.data.envelopes[0] + b"\x00"
    return block


def _config_of_another_channel(world: World, chan: Chan) -> object:
    _, _, trading = make_world()
    return config_update_block(
        world, trading, _new_orderer_config(world, trading), trading.orderers
    )


@pytest.mark.parametrize(
    "bad",
    [
        _config_signed_by_outsider,
        _config_block_with_two_envelopes,
        _not_a_config_block,
        _config_block_data_tampered,
        _config_of_another_channel,
    ],
    ids=lambda f: f.__name__.strip("_").replace("_", "-"),
)
def test_the_light_client_refuses_a_block_that_does_not_follow(
    bad: Callable[[World, Chan], object],
) -> None:
    world, cash, _ = make_world()
    client = cash.client()
    with pytest.raises(LightClientRejected) as err:
        advance(client, bad(world, cash), NOW)  # type: ignore[arg-type]
    assert err.value.reason == R.ERROR_REASON_LIGHT_CLIENT_REJECTED
    assert len(client.epochs) == 1


def test_the_light_client_refuses_a_replayed_or_skipped_config() -> None:
    world, cash, _ = make_world()
    first = config_update_block(world, cash, _new_orderer_config(world, cash), cash.orderers)
    client = advance(cash.client(), first, NOW)
    with pytest.raises(LightClientRejected, match="not after"):
        advance(client, first, NOW)  # the same block again
    replay = cash.cut(list(first.data.envelopes), [world.spare_orderer])
    with pytest.raises(LightClientRejected, match="SEQUENCE_STALE"):
        advance(client, replay, NOW)  # the same update in a later block: stale sequence


def test_an_update_not_signed_by_enough_admins_is_refused() -> None:
    world, cash, _ = make_world()
    update = config_update_pb2.ConfigUpdate(
        content=update_content(channel_view(cash.config), _new_orderer_config(world, cash))
    )
    add_signature(update, world.admins["Org1"])
    env = update_envelope(update, "cash", world.clients["Org1"], nonce(), NOW)
    with pytest.raises(LightClientRejected, match="POLICY_FAILURE"):
        advance(cash.client(), cash.cut([env], cash.orderers), NOW)


# --- the Merkle tree ---


@given(st.lists(st.binary(min_size=1, max_size=8), min_size=1, max_size=40), st.data())
def test_every_path_leads_to_the_root_and_a_changed_one_does_not(
    items: list[bytes], data: st.DataObject
) -> None:
    root = merkle.merkle_root(items)
    index = data.draw(st.integers(0, len(items) - 1))
    path = merkle.inclusion_path(items, index)
    assert merkle.root_from_path(items[index], index, len(items), path) == root
    assert len(path) <= max(1, len(items)).bit_length()
    if path:
        k = data.draw(st.integers(0, len(path) - 1))
        bad = list(path)
        bad[k] = bytes(b ^ 1 for b in bad[k][:1]) + bad[k][1:]
        assert merkle.root_from_path(items[index], index, len(items), bad) != root
        assert merkle.root_from_path(items[index], index, len(items), path[:-1]) != root
    other = data.draw(st.integers(0, len(items) - 1))
    if items[other] != items[index]:
        assert merkle.root_from_path(items[other], index, len(items), path) != root


def test_the_merkle_root_is_rfc6962() -> None:
    """Known answer: RFC 6962's empty-tree root, and the shape for three leaves."""
    assert merkle.merkle_root([]).hex().startswith("e3b0c442")
    leaf = [hashlib.sha256(b"\x00" + x).digest() for x in (b"a", b"b", b"c")]
    left = hashlib.sha256(b"\x01" + leaf[0] + leaf[1]).digest()
    assert (
        merkle.merkle_root([b"a", b"b", b"c"]) == hashlib.sha256(b"\x01" + left + leaf[2]).digest()
    )
