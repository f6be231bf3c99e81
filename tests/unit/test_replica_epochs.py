"""Orderer cores across replica-set changes: 4 replicas -> 5 (add) -> 4 (remove another).

Wired directly (no network): each node's core checks config updates against its view, and at a
config block that changes the replica set it enters the next epoch (`PbftOrdererCore`,
`new_epoch`): a fresh replica of the new list at view 0, block number = the config block's
number + sequence. The added node starts at the boundary, as a runtime that fetched the blocks
up to it would start it. Checked: one chain everywhere, each config applied at the same block,
every block after a boundary signed by a quorum of the replica set in force at its height and by
nobody else, the removed replica a follower (it signs nothing after its removal).
"""

# ruff: noqa: F811  (tests take the imported fixtures)

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from test_config_update import (  # noqa: F401
    Gov,
    envelope,
    gov,
    update,
)
from test_replica_set import four, members, replicas, with_orderers  # noqa: F401

from dltmw.core.block import block_hash, make_block
from dltmw.core.channel import ChannelView
from dltmw.core.config_update import epoch_write, is_config_update, restored_epoch
from dltmw.core.handlers.pbft_blocks import BlockAssembler, signatures_needed
from dltmw.core.handlers.pbft_orderer import (
    CATCHUP_BACKOFF_MAX,
    CATCHUP_CHECK_TICKS,
    CommittedBlock,
    EpochStart,
    FetchBlocks,
    FetchedBlocks,
    LaterEpoch,
    Outbound,
    PbftOrdererCore,
)
from dltmw.core.hashing import ZERO_HASH
from dltmw.core.identity import SigningIdentity
from dltmw.core.pbft import (
    ClientRequest,
    Envelope,
    PbftConfig,
    Rejected,
    Replica,
    ViewRecord,
    request_id,
)
from dltmw.ledger.pbft_store import RecordStore
from dltmw.rpc.replica import _hint_later_epoch
from dltmw.runtime.roles.orderer.pbft_catchup import verified_prefix
from dltmw.sim.keys import Keys
from dltmw.v1 import block_pb2, replica_pb2

KEYS = Keys(6, 1)
REQS = [KEYS.make_request(0, i) for i in range(12)]
Verify = Callable[[int, bytes, bytes], bool]


def key_of(node: str) -> int:
    return int(node.removeprefix("orderer"))


class Network:
    """Orderer cores by node id; messages routed by the sender's current replica list."""

    def __init__(self, view: ChannelView) -> None:
        self.members: dict[str, list[str]] = {}
        self.cores: dict[str, PbftOrdererCore] = {}
        self.committed: dict[str, list[CommittedBlock]] = {}
        self.replies: dict[str, list[tuple[bytes, Rejected | None]]] = {}
        self.queue: list[tuple[str, Outbound]] = []
        self.now = 0
        self.signatures_last = False  # deliver block signatures only once no vote is queued
        for node in [o.node_id for o in view.config.orderers]:
            start = self.epoch_factory(node)(view, 0)
            assert start is not None
            self.add(node, start, view, 1, ZERO_HASH, 0)

    def epoch_factory(self, node: str) -> Callable[[ChannelView, int], EpochStart | None]:
        def new_epoch(view: ChannelView, number: int) -> EpochStart | None:
            ids = [o.node_id for o in view.config.orderers]
            self.members[node] = ids  # a follower fetches from the list in force too
            if node not in ids:
                return None
            keys = [key_of(i) for i in ids]

            def verify(replica: int, payload: bytes, signature: bytes) -> bool:
                return 0 <= replica < len(keys) and KEYS.verify(keys[replica], payload, signature)

            me = ids.index(node)
            cfg = PbftConfig(n=len(ids), checkpoint_interval=2, batch_size_max=2, epoch=number)
            replica = Replica(cfg, me, KEYS.signer(key_of(node)), verify, alone=is_config_update)
            names = [i.encode() for i in ids]
            return EpochStart(replica, BlockAssembler("gov", me, cfg.quorum, names, verify))

        return new_epoch

    def add(
        self,
        node: str,
        start: EpochStart,
        view: ChannelView,
        height: int,
        last: bytes,
        epoch: int,
        follower: bool = False,
    ) -> None:
        self.cores[node] = PbftOrdererCore(
            start.replica,
            start.assembler,
            KEYS.signer(key_of(node)),
            height,
            last,
            view=view,
            epoch=epoch,
            new_epoch=self.epoch_factory(node),
            follower=follower,
        )
        self.committed.setdefault(node, [])
        self.replies.setdefault(node, [])

    def flush(self, node: str) -> None:
        out = self.cores[node].ready()
        self.committed[node].extend(out.decided)
        self.replies[node].extend(out.replies)  # type: ignore[arg-type]
        for destination, message in out.send:
            assert destination < len(self.members[node]), f"{node} sent outside its group"
            source = self.members[node][destination]
            if isinstance(message, Envelope | replica_pb2.BlockSignature):
                self.queue.append((source, message))
            elif isinstance(message, FetchBlocks):
                self.queue.append((node, self.fetched(source, self.cores[node].height)))

    def fetched(self, source: str, height: int) -> FetchedBlocks:
        """What a runtime's fetch hands the core: blocks from `height` up to and including the
        next config block (a fetch never crosses one: the set that signs changes there)."""
        out = []
        for item in self.committed.get(source, []):
            if item.block.header.number >= height:
                out.append(item.block)
                if (
                    is_config_update(item.block.data.envelopes[0])
                    if item.block.data.envelopes
                    else False
                ):
                    break
        return FetchedBlocks(source, tuple(out))

    def settle(self, rounds: int = 40) -> None:
        """Deliver until quiet; tick everyone between rounds (resends, retransmission)."""
        for _ in range(rounds):
            for _ in range(20_000):
                if not self.queue:
                    break
                node, message = self.queue.pop(self._next())
                if node in self.cores:
                    self.cores[node].step(message)  # type: ignore[arg-type]
                    self.flush(node)
            self.now += 1
            for node, core in self.cores.items():
                core.tick(self.now)
                self.flush(node)

    def _next(self) -> int:
        if self.signatures_last:
            for k, (_, message) in enumerate(self.queue):
                if isinstance(message, Envelope):
                    return k
        return 0

    def order(self, *requests: bytes) -> None:
        primary = self.members["orderer0"][0]
        for request in requests:
            self.cores[primary].step(ClientRequest(request))
            self.flush(primary)
        self.settle()

    def chain(self, node: str) -> list[block_pb2.Block]:
        return [c.block for c in self.committed[node]]


def signers(block: block_pb2.Block) -> set[str]:
    return {s.signer.decode() for s in block.metadata.signatures}


def grow(gov: Gov, replicas: list[SigningIdentity]) -> tuple[Network, ChannelView]:
    """4 -> 5 (orderer4 added, started at the boundary), with requests before and after."""
    v4 = four(gov, replicas)
    net = Network(v4)
    net.order(REQS[0], REQS[1])
    add = [*members(v4), ("orderer4", "OrdererOrg", replicas[4].identity_bytes)]
    net.order(envelope(gov, update(v4, with_orderers(v4, add), *gov.admins.values())))
    first = net.chain("orderer0")[-1]
    v5 = net.cores["orderer0"].view
    assert [o.node_id for o in v5.config.orderers][-1] == "orderer4"
    start = net.epoch_factory("orderer4")(v5, first.header.number)
    assert start is not None
    net.add("orderer4", start, v5, first.header.number + 1, block_hash(first), 0)
    net.cores["orderer4"].epoch = first.header.number
    net.order(REQS[2], REQS[3], REQS[4])
    return net, v5


def grow_and_shrink(gov: Gov, replicas: list[SigningIdentity]) -> tuple[Network, list[int]]:
    """4 -> 5 (orderer4 added) -> 4 (orderer1 removed), with requests before, between, after."""
    net, v5 = grow(gov, replicas)
    first = net.chain("orderer4")[0].header.number - 1
    kept = [m for m in members(v5) if m[0] != "orderer1"]
    net.order(envelope(gov, update(v5, with_orderers(v5, kept), *gov.admins.values())))
    second = net.chain("orderer0")[-1]
    net.order(REQS[5], REQS[6], REQS[7])
    return net, [first, second.header.number]


def test_add_then_remove_a_replica_keeps_one_chain_signed_by_the_set_in_force(
    gov: Gov, replicas: list[SigningIdentity]
) -> None:
    net, (first, second) = grow_and_shrink(gov, replicas)
    chain = net.chain("orderer0")  # blocks 1.. (block 0 is genesis): chain[k] is block k+1
    assert chain[-1].header.number > second + 1, "blocks after the second boundary"
    for node in ("orderer2", "orderer3"):
        assert [block_hash(b) for b in net.chain(node)] == [block_hash(b) for b in chain]
    late = net.chain("orderer4")
    assert [block_hash(b) for b in late] == [block_hash(b) for b in chain[first:]]
    sets = {0: {"orderer0", "orderer1", "orderer2", "orderer3"}}
    sets[first + 1] = sets[0] | {"orderer4"}
    sets[second + 1] = sets[first + 1] - {"orderer1"}
    for block in chain:
        number = block.header.number
        in_force = sets[max(k for k in sets if k <= number)]
        assert signers(block) <= in_force, f"block {number} signed outside the set in force"
        assert len(signers(block)) >= (4 if len(in_force) == 5 else 3), f"block {number}"
    built = [b for b in late if "orderer4" in signers(b)]  # its own copies of the blocks
    assert len(built) == len(late), "the added replica orders and signs every later block"
    configs = {n: [c.block.header.number for c in net.committed[n] if c.config] for n in net.cores}
    assert configs["orderer0"] == configs["orderer2"] == [first, second]
    assert configs["orderer4"] == [second]


def test_the_removed_replica_retires_at_its_boundary(
    gov: Gov, replicas: list[SigningIdentity]
) -> None:
    net, (_, second) = grow_and_shrink(gov, replicas)
    removed = net.cores["orderer1"]
    assert removed.follower and removed.height == second + 1
    after = net.chain("orderer0")[second:]
    assert after and all("orderer1" not in signers(b) for b in after)
    removed.step(ClientRequest(REQS[9]))
    (reply,) = removed.ready().replies
    assert reply[1] is not None and reply[1].reason == "NOT_A_REPLICA"


def test_a_retiring_replica_refuses_the_requests_it_held_at_once(
    gov: Gov, replicas: list[SigningIdentity]
) -> None:
    """A request held by orderer1 alone (its forward lost, as one sent in the old epoch to
    replicas already in the new one is) is refused NOT_A_REPLICA in the step orderer1 retires,
    not left to its submitter's timeout: no replica would ever order it."""
    net, v5 = grow(gov, replicas)
    net.cores["orderer1"].step(ClientRequest(REQS[8]))
    net.flush("orderer1")
    net.queue.clear()  # its forward to the primary is lost
    held = request_id(REQS[8])
    assert held in net.cores["orderer1"].replica.pending
    kept = [m for m in members(v5) if m[0] != "orderer1"]
    net.order(envelope(gov, update(v5, with_orderers(v5, kept), *gov.admins.values())))
    assert net.cores["orderer1"].follower, "orderer1 is no replica of the set in force"
    ordered = {request_id(e) for b in net.chain("orderer0") for e in b.data.envelopes}
    assert held not in ordered
    answers = [r for rid, r in net.replies["orderer1"] if rid == held]
    assert [r.reason if r is not None else None for r in answers] == ["NOT_A_REPLICA"]


def test_requests_handed_to_the_next_group_keep_its_clock_and_are_ordered(
    gov: Gov, replicas: list[SigningIdentity]
) -> None:
    """A request orderer2 alone holds at the boundary goes to its replica of the next group,
    timed from the boundary's tick: no view change on the next tick (a fresh replica's clock
    at 0 made it look as old as the run, and a lone replica then changed view alone and
    stalled the group — found by `cfg-pbft-members`, seed 2), and the new group orders it."""
    net, v5 = grow(gov, replicas)
    assert net.now > 60, "the run is older than the request timeout"
    net.cores["orderer2"].step(ClientRequest(REQS[9]))
    net.flush("orderer2")
    net.queue.clear()  # its forward to the primary is lost: only orderer2 holds it
    kept = [m for m in members(v5) if m[0] != "orderer1"]
    net.order(envelope(gov, update(v5, with_orderers(v5, kept), *gov.admins.values())))
    net.settle(rounds=100)
    ordered = {request_id(e) for b in net.chain("orderer0") for e in b.data.envelopes}
    assert request_id(REQS[9]) in ordered, "the handed-over request is ordered"
    group = ("orderer0", "orderer2", "orderer3", "orderer4")
    assert [net.cores[n].replica.view for n in group] == [0, 0, 0, 0], "no view change"


def test_quorum_for_peers_follows_the_list_in_force(
    gov: Gov, replicas: list[SigningIdentity]
) -> None:
    net, (first, _) = grow_and_shrink(gov, replicas)
    assert signatures_needed(net.cores["orderer0"].view.config) == 3
    five = with_orderers(
        four(gov, replicas),
        [*members(four(gov, replicas)), ("orderer4", "OrdererOrg", b"x")],
    )
    assert signatures_needed(five) == 4
    assert first > 0


def test_requests_queued_behind_the_boundary_are_ordered_by_the_new_group_only(
    gov: Gov, replicas: list[SigningIdentity]
) -> None:
    """The update and later requests arrive together: the old group proposes nothing past the
    config batch (its epoch's last sequence), and the requests it held are ordered by the new
    group — 4 of the 5 sign (the added one is not running yet), exactly once each."""
    v4 = four(gov, replicas)
    net = Network(v4)
    net.signatures_last = True  # replicas vote on past the config batch before its block commits
    add = [*members(v4), ("orderer4", "OrdererOrg", replicas[4].identity_bytes)]
    cfg = envelope(gov, update(v4, with_orderers(v4, add), *gov.admins.values()))
    net.order(cfg, REQS[2], REQS[3], REQS[4])
    chain = net.chain("orderer0")
    (boundary,) = [b.header.number for b in chain if list(b.data.envelopes) == [cfg]]
    after = [b for b in chain if b.header.number > boundary]
    ordered = [e for b in after for e in b.data.envelopes]
    assert sorted(ordered) == sorted(REQS[2:5])
    for block in after:
        assert len(signers(block)) >= 4, f"block {block.header.number}: a quorum of the 5"
    assert all(net.cores[n].epoch == boundary for n in ("orderer0", "orderer1", "orderer2"))


def test_an_added_orderer_follows_from_block_one_and_joins_at_its_config_block(
    gov: Gov, replicas: list[SigningIdentity]
) -> None:
    """orderer4 runs from the start, named by no config yet: a follower, it fetches the blocks
    the replicas in force commit, applies the config that adds it at its block, and from there
    orders and signs as a member of the group."""
    v4 = four(gov, replicas)
    net = Network(v4)
    placeholder = Replica(PbftConfig(n=4), 0, KEYS.signer(4), KEYS.verify)
    net.members["orderer4"] = [o.node_id for o in v4.config.orderers]
    start = EpochStart(placeholder, BlockAssembler("gov", 0, 3, [], KEYS.verify))
    net.add("orderer4", start, v4, 1, ZERO_HASH, 0, follower=True)
    net.order(REQS[0], REQS[1])
    add = [*members(v4), ("orderer4", "OrdererOrg", replicas[4].identity_bytes)]
    net.order(envelope(gov, update(v4, with_orderers(v4, add), *gov.admins.values())))
    net.settle(rounds=200)  # follower checks every CATCHUP_CHECK_TICKS
    joined = net.cores["orderer4"]
    assert not joined.follower and joined.replica.config.n == 5
    net.order(REQS[2], REQS[3], REQS[4], REQS[5])
    chain, late = net.chain("orderer0"), net.chain("orderer4")
    assert [block_hash(b) for b in late] == [block_hash(b) for b in chain]
    last = late[-1]
    assert last.header.number > joined.epoch and "orderer4" in signers(last)


# --- the runtime's pieces: the record store's epoch, a fetch that stops at a config block ---


async def test_the_record_store_discards_an_older_groups_records_at_reset(tmp_path: Path) -> None:
    store = await RecordStore.open(tmp_path / "records.sqlite")
    try:
        assert await store.epoch() == 0
        await store.append([ViewRecord(3, False)])
        await store.reset(7)
        assert (await store.load(), await store.epoch()) == ([], 7)
        await store.append([ViewRecord(0, False)])
        assert await store.load() == [ViewRecord(0, False)]
    finally:
        await store.close()
    assert restored_epoch(None) == 0 and restored_epoch(epoch_write(12).value) == 12


def test_a_fetch_verifies_up_to_a_config_block_and_no_further(
    gov: Gov, replicas: list[SigningIdentity]
) -> None:
    """Blocks after a config block may be signed by another set: the next fetch, after the core
    applied it, verifies them against the set then in force."""
    v4 = four(gov, replicas)
    cfg = envelope(gov, update(v4, with_orderers(v4, members(v4)[:3]), *gov.admins.values()))
    blocks, previous = [], ZERO_HASH
    for number, envelopes in enumerate([[REQS[0]], [cfg], [REQS[1]]], start=1):
        block = make_block("ch", number, previous, envelopes)
        previous = block_hash(block)
        for i in range(3):
            block.metadata.signatures.add(signer=b"o%d" % i, signature=KEYS.signer(i)(previous))
        blocks.append(block)
    ids = [b"o0", b"o1", b"o2", b"o3"]
    got = verified_prefix(blocks, "ch", 1, ZERO_HASH, ids, 3, KEYS.verify)
    assert got == blocks[:2]


# --- catching up across a boundary missed: not at the backoff's pace ---


def test_a_fetch_that_ended_at_a_config_block_is_followed_by_the_next_at_once(
    gov: Gov, replicas: list[SigningIdentity]
) -> None:
    """A fetch stops at a config block (`verified_prefix`); the core asks the same peer again
    in the step that commits it, not at a later catch-up check. Red when `_on_fetched` does not
    fetch again: a follower then took one check (2-4 s) per config block, and orderer.b of
    `cfg-pbft-members-dissemination` seed 39 was not caught up by the scenario's deadline."""
    net, _ = grow(gov, replicas)
    first = net.chain("orderer4")[0].header.number - 1  # the config block that added orderer4
    v4 = four(gov, replicas)
    net.members["orderer5"] = [o.node_id for o in v4.config.orderers]
    placeholder = Replica(PbftConfig(n=4), 0, KEYS.signer(5), KEYS.verify)
    start = EpochStart(placeholder, BlockAssembler("gov", 0, 3, [], KEYS.verify))
    net.add("orderer5", start, v4, 1, ZERO_HASH, 0, follower=True)
    late = net.cores["orderer5"]
    late.step(net.fetched("orderer0", 1))
    out = late.ready()
    assert late.height == first + 1, "committed up to and including the config block"
    assert [m for _, m in out.send if isinstance(m, FetchBlocks)], "the next fetch, at once"
    net.queue.append(("orderer5", net.fetched("orderer0", late.height)))
    net.settle(rounds=1)  # one tick: no catch-up check falls in it
    assert late.height == net.cores["orderer0"].height, "caught up in two fetches"


def test_a_message_of_a_later_epoch_makes_a_replica_fetch_at_its_next_tick(
    gov: Gov, replicas: list[SigningIdentity]
) -> None:
    """`LaterEpoch` (a message of a later epoch refused at the boundary, or a peer that refused
    ours for their signer): the next tick fetches although the backoff is at its maximum; a
    message of our own epoch does not. Red when the hint is ignored: orderer.d of
    `cfg-pbft-members-dissemination` seed 40 missed a boundary block and waited out
    16 x CATCHUP_CHECK_TICKS, past the scenario's deadline."""
    net, _ = grow(gov, replicas)
    core = net.cores["orderer2"]
    core.catchup.backoff, core.catchup.last = CATCHUP_BACKOFF_MAX, core.height
    now = net.now + 1
    while now % (CATCHUP_CHECK_TICKS * CATCHUP_BACKOFF_MAX) in (0, 1):
        now += 1

    def fetches(hint: LaterEpoch, at: int) -> int:
        core.step(hint)
        core.ready()
        core.tick(at)
        return sum(isinstance(m, FetchBlocks) for _, m in core.ready().send)

    assert fetches(LaterEpoch(core.epoch), now) == 0, "our own epoch is no news"
    assert fetches(LaterEpoch(core.epoch + 3), now + 1) == 1
    assert core.catchup.backoff == 1, "and the schedule starts over"
    assert fetches(LaterEpoch(None), now + 2) == 0, "one fetch at a time"
    core.step(FetchedBlocks("orderer0", ()))
    assert fetches(LaterEpoch(None), now + 3) == 1, "a peer refused ours for their signer"


class _Orderer:
    """What `_hint_later_epoch` needs of an orderer channel."""

    def __init__(self, epoch: int) -> None:
        self.config = PbftConfig(n=4, epoch=epoch)
        self.hints: list[int] = []

    def later_epoch(self, epoch: int) -> None:
        self.hints.append(epoch)


def test_the_boundary_passes_on_the_epoch_of_a_refused_later_message() -> None:
    """Only a later epoch than ours is passed on; a payload that does not parse is skipped."""
    orderer = _Orderer(epoch=7)

    def signed(payload: bytes) -> replica_pb2.SignedReplicaMessage:
        return replica_pb2.SignedReplicaMessage(replica=1, payload=payload, signature=b"x")

    ours = signed(replica_pb2.ReplicaMessage(epoch=7).SerializeToString())
    _hint_later_epoch(orderer, [ours, signed(b"\xff\xff")])  # type: ignore[arg-type]
    assert orderer.hints == []
    later = signed(replica_pb2.ReplicaMessage(epoch=12).SerializeToString())
    _hint_later_epoch(orderer, [ours, later])  # type: ignore[arg-type]
    assert orderer.hints == [12]


async def test_later_epoch_hints_reach_the_core_at_most_once_per_interval() -> None:
    """review56: a peer that keeps refusing our batches (a new replica still catching up, or a
    faulty one) queued one hint per refusal in the core's bounded inbox and made this replica
    fetch at every tick. Red without the interval: all five hints are submitted."""
    from types import SimpleNamespace

    from dltmw.core.handlers.pbft_orderer import LaterEpoch
    from dltmw.runtime.roles.orderer import pbft as pbft_role

    submitted: list[object] = []
    channel = SimpleNamespace(
        driver=SimpleNamespace(submit_all=submitted.extend),
        hinted_at=-pbft_role.HINT_INTERVAL_S,
    )
    for _ in range(5):
        pbft_role.PbftOrdererChannel.later_epoch(channel, None)  # type: ignore[arg-type]
    pbft_role.PbftOrdererChannel.later_epoch(channel, 7)  # type: ignore[arg-type]
    assert submitted == [LaterEpoch(None)]
    channel.hinted_at -= pbft_role.HINT_INTERVAL_S  # an interval later
    pbft_role.PbftOrdererChannel.later_epoch(channel, 7)  # type: ignore[arg-type]
    assert submitted == [LaterEpoch(None), LaterEpoch(7)]
