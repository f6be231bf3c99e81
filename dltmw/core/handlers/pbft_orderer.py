"""The PBFT orderer's core: one PBFT-lite replica, the blocks it builds and their signatures.

Block number = decided sequence (`pbft_blocks`): after executing sequence s the replica builds
block s, signs its hash and sends the signature to the other replicas; a block is committed once
it holds 2f+1 valid signatures. In view 0 a replica that can build block s when it prepares s
does so then and puts its signature in its Commit instead (`pbft_speculative`: the replica
asks `_commit_block`, and hands carried signatures to `_carried`). The runtime used to
demultiplex the inputs of this role itself; they are all inputs of this core now (`step`):

* `ClientRequest`, `Envelope` — to the replica;
* `BlockSignature` — another replica's signature of a block: collected for a block we build, and
  for a block we committed already, answered with ours (the replica is still collecting);
* `FetchedBlocks` — committed blocks a catch-up fetch verified (hash chain from our head, 2f+1
  orderer signatures: `runtime/roles/orderer/pbft_catchup.py`): committed here, then the replica
  jumps over them (`pbft.jump`).

`drained()` (adaptive cutting, `core/cutter.py`): the driver has nothing more queued; as primary
with no batch in flight (every proposed sequence executed), propose the pending requests now
instead of at the next tick — Nagle's rule, with execution as the acknowledgement, so a lone
request waits for no timer and under load batches grow while one is being agreed. Only the
primary cuts; the backups take its cut from the pre-prepare, so replicas stay deterministic.

`tick(now)` ticks the replica, resends our signatures of blocks still waiting (lost messages
are never retried otherwise), and runs the catch-up schedule: every CATCHUP_CHECK_TICKS x backoff
ticks without executing anything, fetch committed blocks from the next peer (one fetch at a
time; the backoff doubles while peers have nothing newer, so an idle replica asks rarely).
Two things cut the wait short, as a replica that missed a boundary block (a config update
that changed the replica set) otherwise waits out a backoff grown to its maximum over the idle
stretch before it (32 s: `cfg-pbft-members-dissemination`, seeds 39 and 40, not caught up by
the scenario's deadline): `LaterEpoch` — a message of a later epoch reached our boundary,
which refused it, so the group moved on without us, or a peer refused ours for their signer
(`cfg-pbft-members` seed 40: a removed replica that missed its own removal) — makes the next
tick fetch; and a fetch
that ended at a config block (a fetch verifies no further, `pbft_catchup.verified_prefix`)
is followed by the next one from the same peer at once, rather than one block per check.

Config updates (`core/config_update.py`). The replica cuts one into a batch of its own and
proposes nothing after it until it executed (`Replica(alone=...)`); a batch mixing one with other
envelopes is refused by correct backups as a faulty primary's. With `view` given, this core checks
the block of a lone config update as every peer will at commit (`check_transaction` against the
config in force before that block) the moment the block is built or fetched, in block order
(`_track`), so the verdict is a function of the chain: built, fetched or rebuilt after a restart,
every replica reaches the same config at the same height. A valid one: `learn(view)` is called at
once (the admission rule admits what the new config admits, `pbft_admission`), and the block is
committed with it (`CommittedBlock.config`: the executor writes it with the block and the channel
switches to it).

Epochs (docs/governance.md). A valid config update that changes the replica set ends the epoch:
its batch is the epoch's last sequence (`Replica.end`: nothing is proposed or judged beyond it),
and when its block commits here (2f+1 signatures of the OLD set) this core asks `new_epoch` for
the next group — a fresh replica at view 0, sequence 1, with n, f and the quorums of the new
list and `PbftConfig.epoch` = that block's number, and a block assembler counting signatures of
the new list — and block number = epoch + sequence from then on. The old replica's messages not
yet sent are dropped (foreign epoch for everyone now), its pending requests are handed to the
new one. A node the new list does not name gets None: it becomes a *follower* — it orders
nothing (client requests, and at once those it held when it retired: NOT_A_REPLICA) and only
fetches committed blocks from the replicas in force, verified as peers verify them; a node
started before the list names it (an orderer being added) is a follower from the start
(`follower=True`) and joins the group at the config block that adds it, once it fetched and
committed the blocks up to it.

Inputs and effects (what the executor and the simulator exchange with this core):
`pbft_orderer_io.py`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from dltmw.core.block import block_hash
from dltmw.core.channel import ChannelView
from dltmw.core.config_update import is_config_update, replica_set_changed
from dltmw.core.effects import Effects
from dltmw.core.handlers.pbft_blocks import BlockAssembler, PendingBlock
from dltmw.core.handlers.pbft_late import LateSignatures
from dltmw.core.handlers.pbft_orderer_io import (
    CatchUp,
    CommittedBlock,
    EpochStart,
    FetchBlocks,
    FetchedBlocks,
    Input,
    LaterEpoch,
    Learn,
    Misbehaviour,
    NewEpoch,
    OrdererEffects,
    Outbound,
    SignatureOf,
    _Out,
)
from dltmw.core.handlers.pbft_speculative import SpeculativeBlocks
from dltmw.core.light_client import block_signer
from dltmw.core.pbft import ClientRequest, Rejected, Replica, request_id
from dltmw.core.pbft.disseminating import DisseminatingReplica
from dltmw.core.pbft.surface import OrderingReplica
from dltmw.core.pbft.types import Signer
from dltmw.core.txcheck import check_transaction
from dltmw.v1 import block_pb2, replica_pb2, transaction_pb2

# The core's inputs and effects live in `pbft_orderer_io`; importers still find them here.
__all__ = [
    "CatchUp",
    "CommittedBlock",
    "EpochStart",
    "FetchBlocks",
    "FetchedBlocks",
    "Input",
    "LaterEpoch",
    "Learn",
    "Misbehaviour",
    "NewEpoch",
    "OrdererEffects",
    "Outbound",
    "SignatureOf",
    "PbftOrdererCore",
]

RESIGN_EVERY_TICKS = 20
CATCHUP_CHECK_TICKS = 40  # look for blocks beyond us after this long without executing
CATCHUP_BACKOFF_MAX = 16  # x CATCHUP_CHECK_TICKS while peers have nothing newer
FOLLOWER_BACKOFF_MAX = 2  # a follower's blocks come only by fetching: it keeps asking
LAGGING_MAX = 256  # (replica, block) signature requests answered per step
ANSWERED_MAX = 1024  # remembered answers before the old ones are pruned
BEHIND_TICKS = 40  # a proof of lag (`Replica.note_behind`) this recent: still catching up


class PbftOrdererCore:
    """A `Core[Input, OrdererEffects]` (see the module docstring)."""

    def __init__(
        self,
        replica: OrderingReplica,
        assembler: BlockAssembler,
        sign: Signer,
        height: int,
        last_hash: bytes,
        unexecuted: Sequence[block_pb2.Block] = (),
        hook: Misbehaviour | None = None,
        by_limits_only: bool = False,
        view: ChannelView | None = None,
        learn: Learn | None = None,
        epoch: int = 0,
        new_epoch: NewEpoch | None = None,
        follower: bool = False,
        carry_signatures: bool = True,
    ) -> None:
        """`height`/`last_hash`: the ledger's head; `unexecuted`: its blocks from
        `replica.next_block` on (a crash fell between committing fetched blocks and the jump);
        `by_limits_only`: ignore `drained()` (the channel's `cut_by_limits_only`); `view`: the
        config in force after block height-1 (None: config updates are not checked, tests of
        the ordering alone); `learn`: told each config applied, when its block is built;
        `epoch`: the replica's group (block number = epoch + sequence); `new_epoch`: builds the
        next group at a replica-set change (module docstring; None: such a change retires);
        `follower`: not a member of the current list (`replica` is then a placeholder);
        `carry_signatures`: put our block signature in our Commit when we can build the block
        by then (`pbft_speculative`; False: always after execution, in a message of its own)."""
        self.view = view
        self.epoch = epoch
        self.follower = follower
        self._new_epoch = new_epoch
        self._boundaries: dict[int, ChannelView] = {}  # block number -> the new replica set's
        self._drop_inner_send = False
        self._learn = learn
        self._tracked = height  # the next block number whose config effect is not known yet
        self._configs: dict[int, ChannelView] = {}  # block number -> the config it applies
        # (view, assembler, names): the last `_block_names` answer, recomputed when either changes
        self._names: tuple[ChannelView | None, BlockAssembler | None, tuple[bytes, ...]] = (
            None,
            None,
            (),
        )
        self.replica = replica
        if view is not None:
            self._cut_to(view)
        self.assembler = assembler
        self.height = height
        self.last_hash = last_hash
        self.catchup = CatchUp()
        self._sign = sign
        self._hook = hook
        self._by_limits_only = by_limits_only
        self._peers = self._others()
        self._lagging: set[tuple[int, int]] = set()
        self._answered: dict[tuple[int, int], int] = {}  # (replica, block) -> tick answered
        self._late = LateSignatures(RESIGN_EVERY_TICKS)  # which late signatures to answer
        self._claims: dict[int, int] = {}  # replica -> highest block number it signed
        self._carry = carry_signatures
        self._speculative = SpeculativeBlocks(assembler.channel_id)
        self._now = 0
        self._out = _Out()
        self._hook_replica()
        if follower:
            self.catchup.last = height  # the first check already fetches
        self._jump_over(unexecuted)
        for seq in sorted(replica.decided):
            self._build(epoch + seq, tuple(replica.decided[seq].requests))

    def step(self, message: Input) -> None:
        """Route one input (see the module docstring)."""
        if self.follower:
            if isinstance(message, ClientRequest):
                rid = request_id(message.request)
                self._out.replies.append((rid, Rejected(rid, "NOT_A_REPLICA")))
            elif isinstance(message, FetchedBlocks):
                self._on_fetched(message)
            elif isinstance(message, LaterEpoch):
                self._on_later_epoch(message)
            return
        if isinstance(message, replica_pb2.BlockSignature):
            self._on_signature(message)
        elif isinstance(message, FetchedBlocks):
            self._on_fetched(message)
        elif isinstance(message, LaterEpoch):
            self._on_later_epoch(message)
        else:
            self.replica.step(message)

    def _on_signature(self, message: replica_pb2.BlockSignature, claim: int | None = None) -> None:
        """Another replica's block signature (a message of its own, or carried by a Commit):
        collected for a block we build, answered for one we committed (`pbft_late`).
        `claim`: the block the signer thereby claims to have built (`behind`): the signed one
        for a signature of its own (made after execution); for one carried by a Commit, made
        before its slot was decided, the block before it (`pbft_speculative.carried_claim`)."""
        if not 0 <= message.replica < self.replica.config.n:
            return  # of another group's index (sent across a boundary): not ours to answer
        claimed = message.number if claim is None else claim
        if claimed > self._claims.get(message.replica, -1):
            self._claims[message.replica] = claimed
        if message.number >= self.height:
            if self.assembler.add_signature(message, self.height):
                self._late.heard(message.replica, message.number)
        elif len(self._lagging) < LAGGING_MAX and self._late.answer(
            message.replica, message.number, self._now
        ):
            self._lagging.add((message.replica, message.number))

    def _hook_replica(self) -> None:
        """Block signatures ride on the agreeing replica's Commits (`pbft_speculative`)."""
        inner = self._agreeing()
        inner.block_signed = self._carried
        inner.commit_block = self._commit_block if self._carry else None

    def _carried(self, replica: int, sequence: int, digest: bytes, signature: bytes) -> None:
        """A verified Commit of `replica` carried its signature of the block of `sequence`."""
        if self.follower:
            return
        number = self.epoch + sequence
        self._on_signature(
            replica_pb2.BlockSignature(
                number=number, block_hash=digest, replica=replica, signature=signature
            ),
            claim=number - 1,
        )

    def _commit_block(
        self, sequence: int, digest: bytes, requests: tuple[bytes, ...]
    ) -> tuple[bytes, bytes] | None:
        """(hash, our signature) of the block that slot `sequence` makes if decided with
        `requests` — asked by the replica as it commits in view 0 — or None when it cannot be
        built now: block number-1 not built, batches missing, a config update, the epoch's end
        known (module docstring of `pbft_speculative`)."""
        del digest  # the requests are the digest's
        if self.follower or self.replica.end is not None:
            return None
        number = self.epoch + sequence
        if number == self.height:
            previous = self.last_hash
        elif number > self.height and number - 1 in self.assembler.pending:
            previous = self.assembler.pending[number - 1].digest
        else:
            return None
        if number in self.assembler.pending:
            return None
        contents = self.replica.block_contents(sequence, requests)
        if contents is None:
            return None
        envelopes, ids = contents
        if len(envelopes) == 1 and is_config_update(envelopes[0]):
            return None
        built = self._speculative.build(number, previous, envelopes, ids, self._sign)
        return built.digest, built.signature

    def tick(self, now: int) -> None:
        """Replica timers, signature resends, the catch-up schedule, the test-only hook."""
        self._now = now
        if self.follower:
            self._maybe_fetch(now)
            return
        self.replica.tick(now)
        self._now = now
        if now % RESIGN_EVERY_TICKS == 0:
            for pending in self.assembler.pending.values():
                self._broadcast_signature(pending)
            self._late.forget_old(now, self.height)
        self._maybe_fetch(now)
        if self._hook is not None:
            for envelope in self._hook.act(self._agreeing()):
                self._out.send.extend((peer, envelope) for peer in self._peers)

    def _agreeing(self) -> Replica:
        """The PBFT state machine that agrees the slots: the replica itself, or the one inside a
        `DisseminatingReplica` (the test-only hook misbehaves in the protocol's own terms)."""
        replica = self.replica
        if isinstance(replica, DisseminatingReplica):
            return replica.replica
        assert isinstance(replica, Replica)  # the only two `OrderingReplica`s
        return replica

    def drained(self) -> None:
        """Intake empty: as primary with nothing in flight, propose what is pending now; with
        dissemination, any replica cuts its intake into a batch when none of its own batches
        is in flight (`Disseminator.drained`: the in-flight slot is the origin's batch, and a
        client may reach any replica)."""
        replica = self.replica
        if self._by_limits_only or self.follower:
            return
        if isinstance(replica, DisseminatingReplica):
            replica.drained()
        elif replica.next_seq == replica.next_exec:
            replica.propose(full_only=False)  # does nothing unless primary, not changing view

    def ready(self) -> OrdererEffects:
        """Build and sign blocks of newly decided batches, commit complete ones, drain."""
        inner = self.replica.ready()
        for decided in inner.decided:
            number = self.epoch + decided.sequence
            self._build(number, decided.requests, decided.request_ids, decided.view == 0)
            if self._hook is not None:
                self._hook.observe(decided.requests)
        while (pending := self.assembler.complete(self.height)) is not None:
            self._commit(pending.block, pending.digest, pending.ids)
        self._answer_lagging()
        out, self._out = self._out, _Out()
        inner_send: tuple[tuple[int, Outbound], ...] = () if self._drop_inner_send else inner.send
        if isinstance(self.replica, DisseminatingReplica):  # fetches the record store answers
            stored = self.replica.take_from_store()
            if not self._drop_inner_send:
                inner_send = (*inner_send, *((f.destination, f) for f in stored))
        self._drop_inner_send = False
        return Effects(
            persist=inner.persist,
            decided=tuple(out.decided),
            send=(*out.send, *inner_send),
            replies=(*inner.replies, *out.replies),
        )

    def _answer_lagging(self) -> None:
        """Answer signatures of blocks we committed with ours — once per RESIGN_EVERY_TICKS per
        (replica, block). An answer is itself a signature of a block the receiver may have
        committed too, which it answers in turn: without the bound, two caught-up replicas echo
        each other's signatures forever (found by the whole-network simulator: ~2,400 Exchange
        calls per second on an idle 4-replica channel)."""
        if len(self._answered) > ANSWERED_MAX:
            self._answered = {
                k: t for k, t in self._answered.items() if self._now - t < RESIGN_EVERY_TICKS
            }
        for key in sorted(self._lagging):
            answered = self._answered.get(key)
            if answered is not None and self._now - answered < RESIGN_EVERY_TICKS:
                continue
            self._answered[key] = self._now
            self._out.send.append((key[0], SignatureOf(key[1])))
        self._lagging.clear()

    def behind(self, heard: Mapping[int, int] | None = None) -> int | None:
        """While this replica is catching up, the height the cluster is known to hold (its
        readiness, docs/operations.md); None when it is not known to be behind. Known behind:
        f+1 other replicas claimed a block at least two past our head — at least one of them is
        honest (the boundary verified each claim; a replica's claim is the highest block it
        signed, or the block before one its Commit carried a signature of, `_on_signature`,
        so f faulty replicas cannot raise the figure), and one block past is
        normal pipelining — or the replica proved itself behind (`Replica.note_behind`: batches
        fetched, a checkpoint above what it executed, a jump) within BEHIND_TICKS ticks.

        `heard`: replica -> the highest block it signed, as the runtime saw verified signatures
        arrive, before they reach this core. The core sees an input only when the driver steps
        it, and a step whose effects take long (a restarted replica's first commit of the blocks
        it missed, on a slow or locked disk) steps nothing meanwhile: by its own claims alone
        the replica looks caught up for that whole while as the cluster moves on without it."""
        claims = dict(self._claims)
        for replica_index, number in (heard or {}).items():
            claims[replica_index] = max(number, claims.get(replica_index, -1))
        others = sorted((n for r, n in claims.items() if r != self.replica.me), reverse=True)
        f = self.replica.config.f
        known = others[f] + 1 if len(others) > f else 0
        if known > self.height + 1:
            return known
        replica = self.replica
        if replica.behind_at and replica.now - replica.behind_at < BEHIND_TICKS:
            return max(known, self.height + 1)
        return None

    # -- blocks --------------------------------------------------------------------------------

    def _build(
        self,
        number: int,
        requests: tuple[bytes, ...],
        ids: tuple[bytes, ...] = (),
        in_view_0: bool = False,
    ) -> None:
        """Build block `number` of a decided slot, sign it (or take the signature our Commit
        carried) and send the signature unless our Commit carried it to replicas that count
        it: the slot was decided in view 0 (`in_view_0`), where that Commit was one of the
        votes. Decided in a later view, our view-0 Commit may have been dropped as old."""
        previous = self.last_hash
        if number > self.height and number - 1 in self.assembler.pending:
            previous = self.assembler.pending[number - 1].digest
        early = self._speculative.take(number, requests, ids, previous)
        built = None if early is None else (early.block, early.digest)
        names = self._block_names()
        pending = self.assembler.build(
            number, requests, self.height, self.last_hash, ids, built, names
        )
        if pending is None:
            return
        self._track(number, requests)
        if early is not None and early.digest == pending.digest:
            pending.signatures[self.replica.me] = early.signature
            if not in_view_0:
                self._broadcast_signature(pending)
            return
        pending.signatures[self.replica.me] = self._sign(pending.digest)
        self._broadcast_signature(pending)

    def _block_names(self) -> tuple[bytes, ...]:
        """How the block being built names the replicas that sign it (`PendingBlock.names`):
        by reference where the config in force before it takes references, else () (in full).
        Blocks are built in order, each after `_track` of the one before, so `self.view` is
        that config here — the one every replica and peer holds at that height."""
        view, assembler = self.view, self.assembler
        cached_view, cached_assembler, names = self._names
        if cached_view is view and cached_assembler is assembler:
            return names
        names = ()
        if view is not None and view.orderer_membership.takes_references:
            names = tuple(block_signer(view, identity) for identity in assembler.identities)
        self._names = (view, assembler, names)
        return names

    def _broadcast_signature(self, pending: PendingBlock) -> None:
        me = self.replica.me
        signature = replica_pb2.BlockSignature(
            number=pending.block.header.number,
            block_hash=pending.digest,
            replica=me,
            signature=pending.signatures[me],
        )
        self._out.send.extend((peer, signature) for peer in self._peers)

    def _track(self, number: int, envelopes: Sequence[bytes]) -> None:
        """Block `number` is known (built or fetched), in block order: when it is a valid config
        update alone, the config in force from block number+1 on changes (module docstring)."""
        if number != self._tracked:
            return  # known already (a block fetched after we built it, or before the head)
        self._tracked += 1
        view = self.view
        if view is None or len(envelopes) != 1 or not is_config_update(envelopes[0]):
            return
        checked = check_transaction(envelopes[0], view)
        if checked.code != transaction_pb2.TX_VALIDATION_CODE_VALID or checked.config is None:
            return
        if replica_set_changed(view, checked.config):
            self._boundaries[number] = checked.config
            self.replica.end = number - self.epoch  # the last sequence of this epoch
        self.view = self._configs[number] = checked.config
        self._cut_to(checked.config)
        if self._learn is not None:
            self._learn(checked.config)

    def _cut_to(self, view: ChannelView) -> None:
        """As primary, cut at most the config's `max_tx_count` (never above the protocol's
        bound, which is block 0's and fixed: every replica checks batches against it), in
        Fabric++ order when the config says `reorder` (with dissemination: every batch this
        replica forms). The proposer fixes the order (the digest covers it), so no replica
        needs to agree on the setting for blocks to be equal everywhere."""
        limit = view.config.batch.max_tx_count or self.replica.config.batch_size_max
        self.replica.cut_max = max(1, min(limit, self.replica.config.batch_size_max))
        self.replica.reorder = view.config.batch.reorder

    def _commit(self, block: block_pb2.Block, digest: bytes, ids: tuple[bytes, ...] = ()) -> None:
        """Block `number` has 2f+1 signatures (or was fetched with them): decided, and its
        envelopes' submitters answered (`ids`: their request ids when the builder had them)."""
        number = block.header.number
        boundary = self._boundaries.pop(number, None)
        epoch = None if boundary is None else number
        self._out.decided.append(CommittedBlock(block, self._configs.pop(number, None), epoch))
        self.height, self.last_hash = self.height + 1, digest
        self._speculative.forget_below(self.height)
        self._late.committed(number, self._now)
        if not ids:
            ids = tuple(request_id(e) for e in block.data.envelopes)
        self._out.replies.extend((rid, None) for rid in ids)
        if boundary is not None:
            self._enter_epoch(number, boundary)

    def _enter_epoch(self, number: int, view: ChannelView) -> None:
        """Block `number` changed the replica set and is committed here: join the next group,
        or retire (module docstring). Messages of the old group not sent yet are dropped: they
        carry its epoch, which no replica of the new group counts."""
        old = self.replica
        start = self._new_epoch(view, number) if self._new_epoch is not None else None
        self._drop_inner_send = True
        self._out.send.clear()
        self._claims.clear()
        self._lagging.clear()
        self._answered.clear()
        self._late.clear()
        self._speculative.clear()
        self.epoch, self.catchup = number, CatchUp()
        if start is None:
            self.follower = True
            self._peers = self._others()
            self._refuse_held(old)
            return
        self.follower = False
        self.replica, self.assembler = start.replica, start.assembler
        self._hook_replica()
        # The fresh replica's clock starts at 0 but ticks go on from ours: without this, the
        # requests handed over below would look as old as the run, and the replica holding
        # them would change view alone at its next tick — a lone view change the others never
        # join, which stalls the group when it is the primary (cfg-pbft-members, seed 2).
        self.replica.now = self._now
        # What the old group put in the chain stays known executed here (`carry`: with
        # dissemination never a reason for assembly to skip an envelope, as not every replica
        # of the new group knows it — found by `cfg-pbft-members-dissemination`, seed 1).
        self.replica.carry(old.executed_ids)
        self._peers = self._others()
        self._cut_to(view)
        for rid, pending in old.pending.items():
            if rid not in old.executed_ids:
                self.replica.on_request(pending.request, forward=True)

    def _refuse_held(self, old: OrderingReplica) -> None:
        """Retiring: refuse every request the old replica still held (NOT_A_REPLICA) at once,
        so its submitters go to another orderer now rather than wait out their timeout — no
        replica of ours will ever order them. One the group in force got by a forward may still
        be ordered there; resubmitting the same envelope to a replica in force is idempotent
        (same request id), and a block that carries it, fetched here, answers nobody twice."""
        for rid in old.pending:
            if rid not in old.executed_ids:
                self._out.replies.append((rid, Rejected(rid, "NOT_A_REPLICA")))

    # -- catch-up ------------------------------------------------------------------------------

    def _others(self) -> list[int]:
        """Replica indices to fetch blocks from: the others of our group, or (a follower) every
        replica of the list in force."""
        if not self.follower:
            return [i for i in range(self.replica.config.n) if i != self.replica.me]
        n = len(self.view.config.orderers) if self.view is not None else self.replica.config.n
        return list(range(n))

    def _on_later_epoch(self, hint: LaterEpoch) -> None:
        """A message of a later epoch than ours was refused at our boundary: fetch at the next
        tick (module docstring); epoch None: a peer refused ours for their signer. A follower's
        epoch is that of the last group it knew."""
        if hint.epoch is None or hint.epoch > self.epoch:
            self.catchup.hurry = True

    def _maybe_fetch(self, now: int) -> None:
        c = self.catchup
        if c.hurry and not c.fetching and self._peers:
            c.hurry, c.last, c.backoff = False, self.height, 1
            self._fetch(self._peers[c.cursor % len(self._peers)])
            c.cursor += 1
            return
        if now % (CATCHUP_CHECK_TICKS * c.backoff):
            return
        # Blocks, not execution: with dissemination a replica can execute certificates whose
        # slots it cannot assemble (their batches compacted everywhere) or assembles
        # differently (`docs/ordering.md`, "Catch-up by blocks"); only blocks bring those.
        progress = self.height
        if progress != c.last:
            c.last, c.backoff = progress, 1
            return
        if c.fetching or not self._peers:
            return
        peer = self._peers[c.cursor % len(self._peers)]
        cap = FOLLOWER_BACKOFF_MAX if self.follower else CATCHUP_BACKOFF_MAX
        c.backoff, c.cursor = min(c.backoff * 2, cap), c.cursor + 1
        self._fetch(peer)

    def _fetch(self, peer: int) -> None:
        self.catchup.fetching, self.catchup.peer = True, peer
        self._out.send.append((peer, FetchBlocks()))

    def _on_fetched(self, fetched: FetchedBlocks) -> None:
        """Commit fetched blocks that still continue our chain, then jump the replica over
        every committed block it has not executed."""
        self.catchup.fetching = False
        committed: list[block_pb2.Block] = []
        for block in fetched.blocks:
            if block.header.number != self.height:
                continue  # committed meanwhile by the normal path
            if block.header.previous_hash != self.last_hash:
                break  # cannot happen with 2f+1-signed blocks; refuse rather than fork
            self._track(block.header.number, block.data.envelopes)
            self._commit(block, block_hash(block))
            committed.append(block)
        self.assembler.forget_below(self.height)
        self._jump_over(committed)
        last = committed[-1].data.envelopes if committed else None
        at_config = last is not None and len(last) == 1 and is_config_update(last[0])
        if (at_config or (committed and fetched.more)) and self._peers:
            # The fetch stopped at a config block (the blocks after it are verified under the
            # config it applies) or at its byte bound: the peer may hold more, ask it again
            # now. Its index names the same node unless the replica set changed; any replica
            # in force will do then.
            peer = self.catchup.peer
            self._fetch(peer if peer in self._peers else self._peers[0])

    def _jump_over(self, blocks: Sequence[block_pb2.Block]) -> None:
        replica, epoch = self.replica, self.epoch
        if self.follower or epoch + replica.next_block >= self.height:
            return
        todo = [b for b in blocks if b.header.number >= epoch + replica.next_block]
        replica.jump([(b.header.number - epoch, tuple(b.data.envelopes)) for b in todo])
        self.catchup.last, self.catchup.backoff = self.height, 1
