"""Ordering on PBFT-lite: blocks from decided batches, 2f+1 block signatures, durable records."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pbft_messages import KEYS, pre_prepare, vote

from dltmw.core.block import block_hash, make_block
from dltmw.core.errors import InvariantViolation, PeerError
from dltmw.core.genesis import read_genesis
from dltmw.core.handlers.pbft_blocks import BlockAssembler, signatures_needed
from dltmw.core.hashing import ZERO_HASH
from dltmw.core.identity import BadSignature, SigningIdentity
from dltmw.core.pbft import (
    DecidedRecord,
    PreparedRecord,
    Record,
    StableRecord,
    ViewRecord,
    VoteRecord,
)
from dltmw.core.verified_memo import REPLICA_MEMO_GENERATION, VERIFIED_GENERATION
from dltmw.ledger.pbft_store import RecordStore, decode, encode
from dltmw.pki.network import init_network
from dltmw.runtime.roles.peer.committer import check_orderer_signatures
from dltmw.v1 import block_pb2, config_pb2, replica_pb2

IDENTITIES = [f"orderer{i}".encode() for i in range(4)]


def assembler(me: int = 0) -> BlockAssembler:
    return BlockAssembler("ch", me, 3, IDENTITIES, KEYS.verify)


def signature(replica: int, number: int, digest: bytes) -> replica_pb2.BlockSignature:
    return replica_pb2.BlockSignature(
        number=number, block_hash=digest, replica=replica, signature=KEYS.signer(replica)(digest)
    )


@pytest.mark.parametrize(
    ("ordering", "orderers", "needed"),
    [
        (config_pb2.ORDERING_TYPE_NONE, 1, 1),
        (config_pb2.ORDERING_TYPE_PBFT, 4, 3),
        (config_pb2.ORDERING_TYPE_PBFT, 7, 5),
    ],
    ids=["solo-needs-one", "pbft-four-needs-three", "pbft-seven-needs-five"],
)
def test_signatures_a_peer_requires(ordering: int, orderers: int, needed: int) -> None:
    config = config_pb2.ChannelConfig(ordering=ordering)  # type: ignore[arg-type]
    for i in range(orderers):
        config.orderers.add(node_id=f"o{i}")
    assert signatures_needed(config) == needed


def test_block_needs_2f_plus_1_valid_signatures_of_distinct_replicas() -> None:
    a = assembler()
    pending = a.build(1, [b"tx1", b"tx2"], height=1, last_hash=ZERO_HASH)
    assert pending is not None and pending.block.header.number == 1
    pending.signatures[0] = b"own"
    digest = pending.digest
    assert not a.add_signature(signature(1, 1, b"x" * 32), 1)  # another hash
    forged = signature(2, 1, digest)
    forged.signature = KEYS.signer(1)(digest)  # replica 1's signature claimed by replica 2
    assert not a.add_signature(forged, 1)
    assert a.add_signature(signature(1, 1, digest), 1)
    assert a.complete(1) is None  # two signatures so far
    assert a.add_signature(signature(2, 1, digest), 1)
    done = a.complete(1)
    assert done is not None and len(done.block.metadata.signatures) == 3
    assert block_hash(done.block) == digest


def test_blocks_chain_in_sequence_order_and_early_signatures_are_kept() -> None:
    a = assembler()
    first = a.build(1, [b"a"], height=1, last_hash=ZERO_HASH)
    assert first is not None
    early_digest = a.build(2, [b"b"], height=1, last_hash=ZERO_HASH)
    assert early_digest is not None
    assert early_digest.block.header.previous_hash == first.digest
    other = assembler(me=3)
    assert other.add_signature(signature(1, 1, first.digest), height=1)  # before block 1 exists
    rebuilt = other.build(1, [b"a"], height=1, last_hash=ZERO_HASH)
    assert rebuilt is not None and rebuilt.digest == first.digest and 1 in rebuilt.signatures
    with pytest.raises(InvariantViolation):
        assembler().build(5, [b"x"], height=1, last_hash=ZERO_HASH)
    assert assembler().build(0, [b"x"], height=1, last_hash=ZERO_HASH) is None


def _records() -> list[Record]:
    pp = pre_prepare(0, 1, [KEYS.make_request(0, 1)])
    cert = replica_pb2.PreparedCertificate(pre_prepare=pp, prepares=[])
    batch = replica_pb2.DecidedBatch(view=0, sequence=1, digest=b"d" * 32, commits=[])
    proof = (vote("commit", 1, 0, 1, b"d" * 32),)
    return [
        ViewRecord(3, True),
        VoteRecord(pp),
        PreparedRecord(cert),
        DecidedRecord(batch),
        StableRecord(8, b"s" * 32, proof),
    ]


def test_records_round_trip_exactly() -> None:
    for record in _records():
        assert decode(*encode(record)) == record


async def test_record_store_survives_reopen(tmp_path: Path) -> None:
    store = await RecordStore.open(tmp_path / "r.sqlite")
    await store.append(_records()[:2])
    await store.append(_records()[2:])
    await store.close()
    reopened = await RecordStore.open(tmp_path / "r.sqlite")
    try:
        assert await reopened.load() == _records()
    finally:
        await reopened.close()


def test_peer_refuses_a_pbft_block_without_2f_plus_1_distinct_orderer_signatures(
    tmp_path: Path,
) -> None:
    """The peer's check on a real bft-four channel config with real orderer keys."""
    topology = Path(__file__).parents[2] / "services/networks/bft-four.toml"
    init_network(topology, tmp_path / "net")
    view = read_genesis(
        block_pb2.Block.FromString((tmp_path / "net/channels/trades.block").read_bytes())
    )
    signers = []
    for node, org in [
        ("orderer.a", "OrdererA"),
        ("orderer.b", "OrdererB"),
        ("orderer.c", "OrdererC"),
    ]:
        home = tmp_path / "net/nodes" / node
        signers.append(
            SigningIdentity.from_pem(
                org, (home / "identity.pem").read_bytes(), (home / "identity.key").read_bytes()
            )
        )
    block = make_block("trades", 1, b"p" * 32, [b"tx"])
    digest = block_hash(block)

    def signed_by(*who: SigningIdentity) -> block_pb2.Block:
        out = block_pb2.Block()
        out.CopyFrom(block)
        for s in who:
            out.metadata.signatures.add(signer=s.identity_bytes, signature=s.sign(digest))
        return out

    a, b, c = signers
    for bad in (signed_by(a, b), signed_by(a, a, a)):
        with pytest.raises(PeerError, match="lacks 3 valid"):
            check_orderer_signatures(view, bad)
    forged = signed_by(a, b, c)
    forged.metadata.signatures[2].signature = a.sign(b"other")  # c's replaced by a forgery
    with pytest.raises(PeerError, match="signature 2: "):
        check_orderer_signatures(view, forged)
    check_orderer_signatures(view, signed_by(a, b, c))
    # A quorum plus a stray signer (here a peer's identity: not an orderer of the channel) is
    # refused, as the light client refuses a proof built from it (core/light_client.py).
    home = tmp_path / "net/nodes/peer0.org1"
    stray = SigningIdentity.from_pem(
        "Org1", (home / "identity.pem").read_bytes(), (home / "identity.key").read_bytes()
    )
    with pytest.raises(PeerError, match="signature 3 is not by a configured orderer"):
        check_orderer_signatures(view, signed_by(a, b, c, stray))
    # ... and so is a quorum plus a forged signature of the fourth orderer.
    with_forgery = signed_by(a, b, c)
    with_forgery.metadata.signatures.add(signer=a.identity_bytes, signature=b"x" * 64)
    with pytest.raises(PeerError, match="signature 3: "):
        check_orderer_signatures(view, with_forgery)


def test_a_peer_keeps_no_memo_of_the_orderer_signatures_it_checks_once(tmp_path: Path) -> None:
    """Decision (runtime/roles/peer/committer.check_orderer_signatures): a peer checks each
    block's 2f+1 orderer signatures once, so remembering them only filled its memo (3 digests
    per block, never hit under load): up to 3.2 MB of a peer over a long PBFT-lite run."""
    topology = Path(__file__).parents[2] / "services/networks/bft-four.toml"
    init_network(topology, tmp_path / "net")
    view = read_genesis(
        block_pb2.Block.FromString((tmp_path / "net/channels/trades.block").read_bytes())
    )
    signers = [
        SigningIdentity.from_pem(
            org,
            (tmp_path / "net/nodes" / node / "identity.pem").read_bytes(),
            (tmp_path / "net/nodes" / node / "identity.key").read_bytes(),
        )
        for node, org in [
            ("orderer.a", "OrdererA"),
            ("orderer.b", "OrdererB"),
            ("orderer.c", "OrdererC"),
        ]
    ]
    remembered = len(view.orderer_membership._verified)  # block 0's, checked by read_genesis
    for number in range(1, 11):
        block = make_block("trades", number, b"p" * 32, [b"tx %d" % number])
        digest = block_hash(block)
        for s in signers:
            block.metadata.signatures.add(signer=s.identity_bytes, signature=s.sign(digest))
        check_orderer_signatures(view, block)
    assert len(view.orderer_membership._verified) == remembered


def test_the_orderers_memo_of_replica_signatures_is_one_small_generation_pair(
    tmp_path: Path,
) -> None:
    """Decision (core/identity.REPLICA_MEMO_GENERATION): a replica's second check of a replica
    message is answered by `JustVerified` first, so the orderers' memo keeps 4,096 to 8,192
    digests (an origin's acks re-checked in its own certificate come within a few hundred):
    ~1 MB instead of up to 3.8 MB in every orderer. The newest generation still hits — a
    remembered but invalid signature proves it (verified for real it would fail)."""
    topology = Path(__file__).parents[2] / "services/networks/bft-four.toml"
    init_network(topology, tmp_path / "net")
    view = read_genesis(
        block_pb2.Block.FromString((tmp_path / "net/channels/trades.block").read_bytes())
    )
    home = tmp_path / "net/nodes/orderer.a"
    a = SigningIdentity.from_pem(
        "OrdererA", (home / "identity.pem").read_bytes(), (home / "identity.key").read_bytes()
    )
    memo = view.orderer_membership
    generation = REPLICA_MEMO_GENERATION
    assert generation < VERIFIED_GENERATION
    count = 5 * generation + 7
    for i in range(count):
        memo.remember_own_signature(a, b"vote %d" % i, b"not a signature %d" % i)
        assert len(memo._verified) <= 2 * generation
    assert len(memo._verified) >= generation
    now = datetime.now(UTC)  # the network was made by this test, on the wall clock
    for i in range(count - generation, count):  # the newest generation: hits
        memo.verify(a.identity_bytes, b"vote %d" % i, b"not a signature %d" % i, now)
    with pytest.raises(BadSignature):  # an old one was dropped: verified for real
        memo.verify(a.identity_bytes, b"vote 0", b"not a signature 0", now)
    # The clients' membership keeps the larger generation its Broadcast-then-rule checks need.
    clients = view.membership
    for i in range(VERIFIED_GENERATION + 1):
        clients.remember_own_signature(a, b"env %d" % i, b"sig %d" % i)
    assert len(clients._verified) == VERIFIED_GENERATION + 1
