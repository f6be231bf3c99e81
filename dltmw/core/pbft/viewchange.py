"""View changes: leaving a silent or faulty primary without losing anything prepared.

Theory: a replica that suspects the primary of view v (a request waited too long, or the primary
equivocated) stops taking part in v and broadcasts a signed ViewChange for v+1 carrying its
stable checkpoint proof and every prepared certificate above it. The primary of v+1 collects
2f+1 valid ones and broadcasts a NewView with them and the pre-prepares they imply
(`certs.plan_new_view`); backups recompute the plan and accept only an exact match. A view
change that does not complete within its timeout moves on to v+2 with the timeout doubled
(backoff, capped); f+1 view changes for higher views make a replica join the smallest of them
(at least one correct replica suspects the primary).
"""

from __future__ import annotations

from dltmw.core.pbft.certs import NewViewPlan, ViewChangeInfo, plan_new_view
from dltmw.core.pbft.state import ReplicaState, Slot
from dltmw.core.pbft.types import Envelope, ViewRecord, VoteRecord
from dltmw.v1 import replica_pb2

VIEW_LOOKAHEAD = 64


class ViewChanges(ReplicaState):
    """View change and new view (the normal case lives in `replica.Replica`)."""

    def start_view_change(self, view: int) -> None:
        """Leave the current view for `view` (> current) and broadcast our ViewChange."""
        if view <= self.view:
            return
        self.view, self.changing = view, True
        self.vc_attempts += 1
        self.vc_deadline = None
        self.persist(ViewRecord(view, True))
        self.slots.clear()
        self.proposed_ids.clear()
        self.my_new_view = None
        self.view_changes = {v: vcs for v, vcs in self.view_changes.items() if v >= view}
        self.send_view_change()

    def send_view_change(self) -> None:
        """Build, remember and broadcast our ViewChange for the current view."""
        high = self.low + self.config.window
        certs = [c for s, c in sorted(self.prepared.items()) if self.low < s <= high]
        message = replica_pb2.ReplicaMessage(
            view_change=replica_pb2.ViewChange(
                new_view=self.view,
                stable_sequence=self.low,
                checkpoint_proof=self.low_proof,
                prepared=certs,
            )
        )
        envelope = self.sign(message)
        self.my_view_change = envelope
        self.broadcast(envelope)
        self.on_view_change(envelope)

    def on_view_change(self, envelope: Envelope) -> None:
        """Record a valid ViewChange; maybe join a higher view or, as its primary, start it."""
        info = self.checker.view_change(envelope)
        if info is None:
            self.drop("bad-view-change")
            return
        if info.new_view == self.view and not self.changing:
            if self.my_new_view is not None and info.replica != self.me:
                self.send_to(info.replica, self.my_new_view)
            return
        if info.new_view < self.view or info.new_view > self.view + VIEW_LOOKAHEAD:
            self.drop("view-change-out-of-range")
            return
        self.view_changes.setdefault(info.new_view, {}).setdefault(info.replica, info)
        self._maybe_join()
        self.arm_view_change_timer()
        if self.changing and self.primary() == self.me and self.my_new_view is None:
            infos = self.view_changes.get(self.view, {})
            if len(infos) >= self.config.quorum:
                self._send_new_view(sorted(infos.values(), key=lambda i: i.replica))

    def arm_view_change_timer(self) -> None:
        """Start the timer that moves on to the next view — only once 2f+1 replicas (us
        included) asked for the view we are changing to (PBFT's rule). A replica alone in a
        view change (its request timer ran out while the others see a live primary, e.g. just
        after it restarted) therefore stays at view v+1, retransmitting its ViewChange, and is
        back in the cluster at the others' next view change. Moving on alone instead made it
        climb views nobody else would ever reach (it was at view 18 when the others were at 6,
        in kill -9 cycles of the notary cluster), and PBFT never lets it return to a lower view:
        the cluster ran with one replica less for good, and stopped at the next kill."""
        if not self.changing or self.vc_deadline is not None:
            return
        if len(self.view_changes.get(self.view, {})) < self.config.quorum:
            return
        exponent = min(self.vc_attempts - 1, self.config.backoff_exponent_max)
        self.vc_deadline = self.now + self.config.view_change_timeout_ticks * (2**exponent)

    def _maybe_join(self) -> None:
        """Join the smallest higher view once f+1 distinct replicas asked for higher views."""
        highest: dict[int, int] = {}
        for view, infos in self.view_changes.items():
            if view > self.view:
                for replica in infos:
                    highest[replica] = max(highest.get(replica, 0), view)
        if len(highest) >= self.config.f + 1:
            self.start_view_change(sorted(highest.values())[-(self.config.f + 1)])

    def _send_new_view(self, infos: list[ViewChangeInfo]) -> None:
        """As primary of the new view: broadcast NewView with the re-proposals, then install."""
        chosen = infos[: self.config.quorum]
        plan = plan_new_view(self.checker, chosen)
        pre_prepares = []
        for seq, digest, requests in plan.batches:
            pp = replica_pb2.PrePrepare(
                view=self.view, sequence=seq, digest=digest, requests=requests
            )
            envelope = self.sign(replica_pb2.ReplicaMessage(pre_prepare=pp))
            self.persist(VoteRecord(envelope))
            pre_prepares.append(envelope)
        vcs = [i.envelope for i in chosen]
        message = replica_pb2.ReplicaMessage(
            new_view=replica_pb2.NewView(
                view=self.view, view_changes=vcs, pre_prepares=pre_prepares
            )
        )
        self.my_new_view = self.sign(message)
        self.persist(VoteRecord(self.my_new_view))
        self.broadcast(self.my_new_view)
        self.install_view(self.view, plan, pre_prepares)

    def on_new_view(self, envelope: Envelope, nv: replica_pb2.NewView) -> None:
        """Validate a NewView against our own recomputation and install it."""
        if envelope.replica != self.config.primary(nv.view):
            self.drop("new-view-not-from-primary")
            return
        if nv.view < self.view or (nv.view == self.view and not self.changing):
            self.drop("stale-new-view")
            return
        infos = [self.checker.view_change(e) for e in nv.view_changes]
        valid = [i for i in infos if i is not None and i.new_view == nv.view]
        if len(valid) != len(infos) or len({i.replica for i in valid}) < self.config.quorum:
            self.drop("new-view-bad-proof")
            return
        plan = plan_new_view(self.checker, valid)
        if not self._matches_plan(nv, plan):
            self.drop("new-view-wrong-pre-prepares")
            return
        self.view = max(self.view, nv.view)
        self.install_view(nv.view, plan, list(nv.pre_prepares))

    def _matches_plan(self, nv: replica_pb2.NewView, plan: NewViewPlan) -> bool:
        """The NewView's pre-prepares are exactly the plan, signed by its primary."""
        if len(nv.pre_prepares) != len(plan.batches):
            return False
        for envelope, (seq, digest, requests) in zip(nv.pre_prepares, plan.batches, strict=True):
            msg = self.checker.open(envelope)
            if msg is None or msg.WhichOneof("body") != "pre_prepare":
                return False
            pp = msg.pre_prepare
            if envelope.replica != self.config.primary(nv.view) or pp.view != nv.view:
                return False
            if (pp.sequence, pp.digest, tuple(pp.requests)) != (seq, digest, requests):
                return False
        return True

    def install_view(self, view: int, plan: NewViewPlan, pre_prepares: list[Envelope]) -> None:
        """Enter `view` in normal operation with the planned pre-prepares in the log."""
        self.view, self.changing, self.vc_attempts = view, False, 0
        self.persist(ViewRecord(view, False))
        self.slots.clear()
        self.proposed_ids.clear()
        self.my_view_change = None
        if plan.low > self.low:
            self.learn_checkpoint(plan.low, plan.low_digest, plan.low_proof)
        high = plan.low
        for envelope, (seq, digest, requests) in zip(pre_prepares, plan.batches, strict=True):
            high = seq
            if not self.in_window(seq):
                continue
            slot = self.slots.setdefault(seq, Slot())
            slot.pre_prepare, slot.digest, slot.requests = envelope, digest, requests
            self.proposed_ids.update(self.ids_of(requests))
            if self.primary() == self.me:
                slot.mine.append(envelope)
            else:
                self.vote_prepare(slot, seq, digest)
        self.next_seq = max(high, self.next_exec - 1, self.low) + 1
        for pending in self.pending.values():
            pending.since = self.now
        self.timed = None  # the request timer starts again in the new view
        self.forward_pending()
        self.replay_future()
        for seq in sorted(self.slots):
            self.advance(seq)

    # -- provided by replica.Replica --------------------------------------------------------

    def learn_checkpoint(self, sequence: int, digest: bytes, proof: tuple[Envelope, ...]) -> None:
        """Adopt a proven checkpoint as the low watermark."""
        raise NotImplementedError

    def ids_of(self, requests: tuple[bytes, ...]) -> list[bytes]:
        """Request ids of a batch."""
        raise NotImplementedError

    def forward_pending(self) -> None:
        """Forward pending requests to the primary."""
        raise NotImplementedError

    def replay_future(self) -> None:
        """Re-step buffered messages of views we just installed."""
        raise NotImplementedError

    def advance(self, sequence: int) -> None:
        """Progress one slot (prepared -> commit, committed -> execute)."""
        raise NotImplementedError
