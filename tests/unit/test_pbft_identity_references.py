"""PBFT-lite replicas name themselves by reference in the blocks they sign (`ChannelConfig.
identity_references`, core/identity.py): four orderer cores with real keys and certificates
(tests/unit/ledger_parties.py) commit blocks whose signatures name each replica by its ~40-byte
reference where the config in force before the block takes references, in full where it does
not (byte-identical to before); peers (`check_orderer_quorum`) and a replica's catch-up
(`pbft_catchup.verified_prefix`) accept those blocks and count each orderer once, and a
faulty block server's unknown reference, or another replica's, counts for nothing. A config
update that turns the flag on takes effect at the block after it on every replica (the
`Gov` channel of test_config_update, real admin signatures). Replica messages name their
signer by index (`SignedReplicaMessage.replica`): nothing to change there.
"""

# ruff: noqa: F811  (tests take the imported `gov` fixture of test_config_update)

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from ledger_parties import NOW, make_parties
from test_config_update import Gov, envelope, gov, update  # noqa: F401
from test_pbft_config import REQS
from test_pbft_config import Group as ConfigGroup

from dltmw.core.block import block_hash
from dltmw.core.channel import ChannelView, channel_view
from dltmw.core.handlers.pbft_blocks import BlockAssembler
from dltmw.core.handlers.pbft_orderer import Outbound, PbftOrdererCore
from dltmw.core.hashing import ZERO_HASH
from dltmw.core.identity import IdentityError, reference_bytes
from dltmw.core.light_client import check_orderer_quorum
from dltmw.core.pbft import ClientRequest, Envelope, PbftConfig, Replica
from dltmw.runtime.roles.orderer.pbft import PbftOrdererExecutor
from dltmw.runtime.roles.orderer.pbft_catchup import verified_prefix
from dltmw.v1 import block_pb2, config_pb2, identity_pb2, replica_pb2

P = make_parties()
CONFIG = PbftConfig(n=4, checkpoint_interval=2, batch_size_max=2, request_timeout_ticks=50)
FULL = [o.identity_bytes for o in P.orderers]


def _ref(identity: bytes) -> bytes:
    ref = reference_bytes(identity)
    assert ref is not None
    return ref


REFS = [_ref(i) for i in FULL]


def _view(refs: bool) -> ChannelView:
    config = config_pb2.ChannelConfig()
    config.CopyFrom(P.view.config)
    config.identity_references = refs
    return channel_view(config)


class RealGroup:
    """Four orderer cores of the parties' PBFT channel wired directly, signing with the
    orderers' real keys and checking each other through the view's orderer `Membership`."""

    def __init__(self, view: ChannelView) -> None:
        self.view = view
        self.cores = [self._core(i) for i in range(4)]
        self.queue: list[tuple[int, Outbound]] = []
        self.committed: list[list[block_pb2.Block]] = [[] for _ in range(4)]

    def verify(self, replica: int, data: bytes, signature: bytes) -> bool:
        try:
            self.view.orderer_membership.verify(FULL[replica], data, signature, NOW)
        except IdentityError:
            return False
        return True

    def _core(self, i: int) -> PbftOrdererCore:
        sign = P.orderers[i].sign
        replica = Replica(CONFIG, i, sign, self.verify, request_ok=lambda _r: True)
        assembler = BlockAssembler("ch", i, CONFIG.quorum, FULL, self.verify)
        return PbftOrdererCore(replica, assembler, sign, 1, ZERO_HASH, view=self.view)

    def step(self, i: int, message: object) -> None:
        self.cores[i].step(message)  # type: ignore[arg-type]
        self.flush(i)

    def flush(self, i: int) -> None:
        out = self.cores[i].ready()
        self.committed[i].extend(c.block for c in out.decided)
        for destination, sent in out.send:
            if isinstance(sent, Envelope | replica_pb2.BlockSignature):
                self.queue.append((destination, sent))

    def order(self, *requests: bytes) -> None:
        for request in requests:
            self.step(0, ClientRequest(request))
        self.cores[0].tick(1)
        self.flush(0)
        for _ in range(20_000):
            if not self.queue:
                return
            destination, message = self.queue.pop(0)
            self.step(destination, message)
        raise AssertionError("messages never settled")


def _signers(block: block_pb2.Block) -> list[bytes]:
    return [s.signer for s in block.metadata.signatures]


def _pairs(block: block_pb2.Block) -> list[tuple[bytes, bytes]]:
    return [(s.signer, s.signature) for s in block.metadata.signatures]


def test_replicas_sign_blocks_by_reference_where_the_flag_is_on_and_peers_accept_them() -> None:
    """Red with `_block_names` returning () (blocks in full) or names of the wrong replica
    (the peers' check refuses the signatures)."""
    group = RealGroup(_view(True))
    group.order(*REQS[:2])
    for i in range(4):
        blocks = group.committed[i]
        assert blocks and all(len(b.metadata.signatures) >= CONFIG.quorum for b in blocks)
        for block in blocks:
            assert set(_signers(block)) <= set(REFS), i
            counted = check_orderer_quorum(
                group.view, block_hash(block), _pairs(block), NOW, remember=False
            )
            assert counted == (len(block.metadata.signatures), CONFIG.quorum)
    assert all(len(r) < 50 for r in REFS) and all(len(f) > 400 for f in FULL)


def test_without_the_flag_replicas_sign_blocks_in_full_as_before() -> None:
    group = RealGroup(_view(False))
    group.order(*REQS[:2])
    for i in range(4):
        assert group.committed[i]
        for block in group.committed[i]:
            assert set(_signers(block)) <= set(FULL)
            pairs = _pairs(block)
            assert check_orderer_quorum(group.view, block_hash(block), pairs, NOW)[0] >= 3


# --- catch-up ---------------------------------------------------------------------------------


def _signed_block(signatures: list[tuple[bytes, int]]) -> block_pb2.Block:
    """Block 1 of channel "ch" with signatures (signer as named, by orderer `index`'s key)."""
    group = RealGroup(_view(True))
    group.order(REQS[0])
    block = block_pb2.Block()
    block.CopyFrom(group.committed[0][0])
    del block.metadata.signatures[:]
    digest = block_hash(block)
    for signer, index in signatures:
        block.metadata.signatures.add(signer=signer, signature=P.orderers[index].sign(digest))
    return block


def _fetched(view: ChannelView, block: block_pb2.Block, resolve: bool = True) -> int:
    group = RealGroup(view)
    chosen = view.orderer_membership.resolved if resolve else (lambda s: s)
    got = verified_prefix([block], "ch", 1, ZERO_HASH, FULL, 3, group.verify, chosen)
    return len(got)


def test_catch_up_takes_blocks_signed_by_reference_and_counts_each_orderer_once() -> None:
    """Red with `verified_prefix` not resolving (a reference names no orderer: nothing
    fetched), or counting signer entries instead of orderers (the block with one orderer in
    full and by reference would be taken with two distinct orderers)."""
    on = _view(True)
    by_ref = _signed_block([(REFS[0], 0), (REFS[1], 1), (REFS[2], 2)])
    assert _fetched(on, by_ref) == 1
    assert _fetched(on, by_ref, resolve=False) == 0  # the old index would refuse it
    mixed = _signed_block([(FULL[0], 0), (REFS[1], 1), (FULL[2], 2)])
    assert _fetched(on, mixed) == 1
    twice = _signed_block([(FULL[0], 0), (REFS[0], 0), (REFS[1], 1)])
    assert _fetched(on, twice) == 0  # two orderers, not three
    # without the flag a reference is nobody: the same block is refused
    assert _fetched(_view(False), by_ref) == 0


def test_a_faulty_block_server_s_unknown_or_borrowed_reference_counts_for_nothing() -> None:
    """Two valid signatures plus one named by an unknown reference, by a peer's, or by another
    orderer's (signed with its own key): never three orderers. Red with a resolution that
    counts whatever reference it is given (e.g. the index by position in the block)."""
    on = _view(True)
    unknown = identity_pb2.Identity(
        org_id=P.orderers[2].org_id, certificate_ref=bytes(32)
    ).SerializeToString()
    cases = {
        "unknown": (unknown, 2),
        "a peer's": (_ref(P.peer1.identity_bytes), 2),
        "another orderer's": (REFS[3], 2),  # orderer 2 signs, names itself as orderer 3
    }
    for name, bad in cases.items():
        block = _signed_block([(REFS[0], 0), (REFS[1], 1), bad])
        assert _fetched(on, block) == 0, name
    good = _signed_block([(REFS[0], 0), (REFS[1], 1), (REFS[2], 2)])
    assert _fetched(on, good) == 1


# --- a replica's own signature, for replicas still collecting ---------------------------------


def test_a_replica_finds_its_own_signature_in_a_block_that_names_it_by_reference() -> None:
    """`SignatureOf` answers read our signature back from the committed block (memory or
    ledger). Red with `_own_signature` comparing the full identity only (None: the lagging
    replica is never answered)."""
    channel: Any = SimpleNamespace(me=1, identities=FULL)
    executor = PbftOrdererExecutor(channel)
    for names in (REFS, FULL):
        block = _signed_block([(names[0], 0), (names[1], 1), (names[2], 2)])
        found = executor._own_signature(block)
        assert found == (block_hash(block), block.metadata.signatures[1].signature)
    channel.me = 3
    assert executor._own_signature(block) is None


# --- the flag turned on by a config update ------------------------------------------------------


class NamedGroup(ConfigGroup):
    """test_pbft_config's group with orderer 0 named by the channel's real orderer identity
    (the others' fake identities are no config node's, so they stay as they are)."""

    def __init__(self, view: ChannelView, names: list[bytes]) -> None:
        self.names = names  # before the cores are made (`ConfigGroup.__init__`)
        super().__init__(view)

    def core(self, *args: Any, **kwargs: Any) -> PbftOrdererCore:
        made = super().core(*args, **kwargs)
        made.assembler.identities = list(self.names)
        return made


def test_a_config_update_turning_references_on_takes_effect_at_the_next_block_everywhere(
    gov: Gov,
) -> None:
    """Blocks up to the config block name orderer 0 in full; every block after it by its
    reference, on every replica (the names are fixed by the config in force before each
    block). Red with the names taken from the core's view after the block is tracked (the
    config block itself by reference) or fixed at start (nothing after it by reference)."""
    config = config_pb2.ChannelConfig()
    config.CopyFrom(gov.view.config)
    config.identity_references = True
    cfg = envelope(gov, update(gov.view, config, *gov.admins.values()))
    full = gov.orderer.identity_bytes
    group = NamedGroup(gov.view, [full, *(f"orderer{i}".encode() for i in range(1, 4))])
    group.order(REQS[0], cfg, REQS[1], REQS[2])
    ref = _ref(full)
    for i in range(4):
        committed = group.committed[i]
        at = next(c.block.header.number for c in committed if c.config is not None)
        assert [c.block.header.number for c in committed] == [1, 2, 3] and at == 2
        for c in committed:
            number, signers = c.block.header.number, set(_signers(c.block))
            assert (ref if number <= at else full) not in signers, (i, number)
        # replica 0 signs every block it commits: its own signature is in each of them
    own = [set(_signers(c.block)) for c in group.committed[0]]
    assert full in own[0] and full in own[1] and ref in own[2]
