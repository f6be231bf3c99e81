"""Config updates on PBFT-lite channels: cut alone, applied by every replica at the same block.

Replica level: the primary cuts a lone request (a config update) into a batch of its own and
proposes nothing after it until it executed; backups refuse a batch that mixes one with other
requests, and judge no pre-prepare beyond a lone batch they have not executed (the barrier).
Orderer-core level (real config updates, `check_transaction`): every replica commits the config
block with the same next config, whether it built the block, fetched it in catch-up, or rebuilt
it after a restart; the admission rule learns it. Admission level: a learned config admits its
new members, and a verdict once given is never withdrawn (a revoked creator's envelope ordered
after the revocation is left to the peers, which mark it invalid at commit).
"""

# ruff: noqa: F811  (tests take the imported `gov` fixture of test_config_update)

from __future__ import annotations

import hashlib
import itertools

from pbft_messages import KEYS, pre_prepare
from test_config_update import (  # noqa: F401
    CHANNEL,
    NOW,
    Gov,
    envelope,
    gov,
    next_config,
    revoke,
    update,
)

from dltmw.core import config_edit
from dltmw.core.channel import ChannelView, channel_view
from dltmw.core.config_update import is_config_update
from dltmw.core.handlers.pbft_blocks import BlockAssembler
from dltmw.core.handlers.pbft_orderer import (
    CommittedBlock,
    FetchedBlocks,
    Outbound,
    PbftOrdererCore,
)
from dltmw.core.hashing import ZERO_HASH, compute_tx_id
from dltmw.core.identity import SigningIdentity
from dltmw.core.pbft import ClientRequest, Envelope, PbftConfig, Record, Replica
from dltmw.core.txcheck import check_transaction
from dltmw.runtime.roles.orderer.pbft_admission import RequestAdmission
from dltmw.v1 import common_pb2, config_pb2, replica_pb2, transaction_pb2

CONFIG = PbftConfig(n=4, checkpoint_interval=2, batch_size_max=2, request_timeout_ticks=50)
IDS = [f"orderer{i}".encode() for i in range(4)]
REQS = [KEYS.make_request(0, i) for i in range(4)]
_nonces = itertools.count()


def cfg_update(gov: Gov, view: ChannelView, max_tx: int) -> bytes:
    """A config update signed by every admin: smaller blocks (harmless, visible)."""
    config = config_pb2.ChannelConfig()
    config.CopyFrom(view.config)
    config.batch.max_tx_count = max_tx
    return envelope(gov, update(view, config, *gov.admins.values()))


def replica(me: int) -> Replica:
    return Replica(CONFIG, me, KEYS.signer(me), KEYS.verify, alone=is_config_update)


# --- replica ------------------------------------------------------------------------------


def proposed(envelopes: list[tuple[int, Envelope]]) -> list[tuple[int, list[bytes]]]:
    """(sequence, requests) of the pre-prepares among sent messages (once per sequence)."""
    out = {}
    for _, env in envelopes:
        body = replica_pb2.ReplicaMessage.FromString(env.payload)
        if body.WhichOneof("body") == "pre_prepare":
            out[body.pre_prepare.sequence] = list(body.pre_prepare.requests)
    return sorted(out.items())


def test_the_primary_cuts_a_config_update_alone_then_waits_for_it_to_execute(gov: Gov) -> None:
    cfg = cfg_update(gov, gov.view, 3)
    primary = replica(0)
    for request in (REQS[0], cfg, REQS[1], REQS[2]):
        primary.step(ClientRequest(request))
    primary.tick(1)  # a tick proposes even a batch that is not full
    assert proposed(list(primary.ready().send)) == [(1, [REQS[0]]), (2, [cfg])]
    assert primary.barrier_below(3)


def test_backups_refuse_a_batch_that_mixes_a_config_update_with_other_envelopes(
    gov: Gov,
) -> None:
    cfg = cfg_update(gov, gov.view, 3)
    backup = replica(1)
    backup.step(pre_prepare(0, 1, [REQS[0], cfg]))
    assert backup.counters["batch-mixes-a-lone-request"] == 1
    assert 1 not in backup.slots or backup.slots[1].my_digest is None
    alone = replica(2)
    alone.step(pre_prepare(0, 1, [cfg]))
    assert alone.slots[1].my_digest is not None  # a lone one is prepared


def test_a_backup_judges_no_pre_prepare_beyond_an_unexecuted_config_batch(gov: Gov) -> None:
    cfg = cfg_update(gov, gov.view, 3)
    backup = replica(1)
    backup.step(pre_prepare(0, 1, [cfg]))
    backup.step(pre_prepare(0, 2, [REQS[0]]))
    assert backup.counters["pre-prepare-beyond-a-lone-batch"] == 1
    assert backup.slots.get(2) is None or backup.slots[2].my_digest is None


# --- orderer core -------------------------------------------------------------------------


class Group:
    """Four orderer cores wired directly, each checking config updates against its view."""

    def __init__(self, view: ChannelView) -> None:
        self.learned: list[list[ChannelView]] = [[] for _ in range(4)]
        self.cores = [self.core(i, view) for i in range(4)]
        self.cut: set[int] = set()
        self.queue: list[tuple[int, Outbound]] = []
        self.committed: list[list[CommittedBlock]] = [[] for _ in range(4)]
        self.records: list[list[Record]] = [[] for _ in range(4)]

    def core(
        self, i: int, view: ChannelView, replica_: Replica | None = None, height: int = 1
    ) -> PbftOrdererCore:
        assembler = BlockAssembler("gov", i, CONFIG.quorum, IDS, KEYS.verify)
        return PbftOrdererCore(
            replica_ or replica(i),
            assembler,
            KEYS.signer(i),
            height,
            ZERO_HASH,
            view=view,
            learn=self.learned[i].append,
        )

    def step(self, i: int, message: object) -> None:
        self.cores[i].step(message)  # type: ignore[arg-type]
        self.flush(i)

    def flush(self, i: int) -> None:
        out = self.cores[i].ready()
        self.committed[i].extend(out.decided)
        self.records[i].extend(out.persist)
        for destination, message in out.send:
            if isinstance(message, Envelope | replica_pb2.BlockSignature):
                self.queue.append((destination, message))

    def settle(self) -> None:
        for _ in range(20_000):
            if not self.queue:
                return
            destination, message = self.queue.pop(0)
            if destination not in self.cut:
                self.step(destination, message)
        raise AssertionError("messages never settled")

    def order(self, *requests: bytes) -> None:
        for request in requests:
            self.step(0, ClientRequest(request))
        self.cores[0].tick(1)
        self.flush(0)
        self.settle()


def configs(committed: list[CommittedBlock]) -> list[tuple[int, int]]:
    """(block number, config sequence) of the config blocks among `committed`."""
    return [(c.block.header.number, c.config.sequence) for c in committed if c.config]


def test_every_replica_applies_the_config_at_its_block_and_later_blocks_follow_it(
    gov: Gov,
) -> None:
    cfg = cfg_update(gov, gov.view, 3)
    group = Group(gov.view)
    group.order(REQS[0], cfg, REQS[1], REQS[2])
    for i in range(4):
        blocks = [list(c.block.data.envelopes) for c in group.committed[i]]
        assert blocks == [[REQS[0]], [cfg], [REQS[1], REQS[2]]]
        assert configs(group.committed[i]) == [(2, 1)]
        assert group.cores[i].view.config.batch.max_tx_count == 3
        assert [v.sequence for v in group.learned[i]] == [1]


def test_the_primary_cuts_at_the_new_block_size_within_the_fixed_bound(gov: Gov) -> None:
    """max_tx_count 10 -> 1: later batches hold one request (CONFIG allows two per batch)."""
    group = Group(gov.view)
    assert group.cores[0].replica.cut_max == CONFIG.batch_size_max  # 10 capped at 2
    group.order(cfg_update(gov, gov.view, 1), REQS[0], REQS[1])
    blocks = [list(c.block.data.envelopes) for c in group.committed[0]]
    assert blocks[1:] == [[REQS[0]], [REQS[1]]]
    assert all(core.replica.cut_max == 1 for core in group.cores)


def test_an_invalid_or_stale_update_is_cut_alone_and_applies_nothing(gov: Gov) -> None:
    first, stale = cfg_update(gov, gov.view, 3), cfg_update(gov, gov.view, 4)
    group = Group(gov.view)
    group.order(first)
    group.order(stale)
    code = check_transaction(stale, group.cores[0].view).code
    assert code == transaction_pb2.TX_VALIDATION_CODE_CONFIG_SEQUENCE_STALE
    for i in range(4):
        assert [list(c.block.data.envelopes) for c in group.committed[i]] == [[first], [stale]]
        assert configs(group.committed[i]) == [(1, 1)]
        assert group.cores[i].view.config.batch.max_tx_count == 3


def test_a_replica_that_fetches_the_config_block_applies_it_at_the_same_height(
    gov: Gov,
) -> None:
    cfg = cfg_update(gov, gov.view, 3)
    group = Group(gov.view)
    group.cut.add(3)
    group.order(REQS[0], cfg, REQS[1], REQS[2])
    assert not group.committed[3]
    lagging = group.cores[3]
    lagging.catchup.fetching = True
    lagging.step(FetchedBlocks("orderer0", tuple(c.block for c in group.committed[0])))
    group.flush(3)
    assert configs(group.committed[3]) == configs(group.committed[0]) == [(2, 1)]
    assert lagging.view.config == group.cores[0].view.config
    assert [v.sequence for v in group.learned[3]] == [1]


def test_a_restarted_replica_rebuilds_the_config_from_its_decided_batches(gov: Gov) -> None:
    """Crash after the batches were decided (records durable) but before any block committed:
    the restarted core rebuilds the blocks and the config they lead to; restarted on a ledger
    that holds the config block, it starts from the stored config and applies nothing again."""
    cfg = cfg_update(gov, gov.view, 3)
    group = Group(gov.view)
    group.order(REQS[0], cfg, REQS[1], REQS[2])
    restored = Replica.restore(
        CONFIG, 1, KEYS.signer(1), KEYS.verify, group.records[1], alone=is_config_update
    )
    again = group.core(1, gov.view, restored, height=1)
    assert again.view.config == group.cores[1].view.config
    head = group.committed[1][-1].block
    stored = group.cores[1].view
    replica_ = Replica.restore(
        CONFIG, 1, KEYS.signer(1), KEYS.verify, group.records[1], alone=is_config_update
    )
    learned_before = len(group.learned[1])
    later = group.core(1, stored, replica_, height=head.header.number + 1)
    assert later.view is stored and len(group.learned[1]) == learned_before


# --- admission ----------------------------------------------------------------------------


def client_tx(creator: SigningIdentity) -> bytes:
    nonce = hashlib.sha256(b"pbft-cfg-%d" % next(_nonces)).digest()
    header = common_pb2.Header(
        type=common_pb2.HEADER_TYPE_ENDORSER_TRANSACTION,
        channel_id=CHANNEL,
        tx_id=compute_tx_id(nonce, creator.identity_bytes),
        creator=creator.identity_bytes,
        nonce=nonce,
    )
    header.timestamp.FromDatetime(NOW)
    payload = common_pb2.Payload(header=header.SerializeToString(), data=b"")
    raw = payload.SerializeToString()
    return common_pb2.Envelope(payload=raw, signature=creator.sign(raw)).SerializeToString()


def test_admission_admits_a_new_member_once_learned_and_never_withdraws_a_verdict(
    gov: Gov,
) -> None:
    org9 = gov.outsider_admin
    joined = channel_view(
        _sequenced(config_edit.with_org(gov.view.config, "Org9", gov.cas["Org9"].cert_pem))
    )
    admission = RequestAdmission(gov.view, 1 << 20)
    newcomer, user1 = client_tx(org9), client_tx(gov.clients["Org1"])
    assert not admission(newcomer) and admission.reason(newcomer) == "NOT_A_MEMBER"
    assert admission(user1)
    admission.learn(joined)
    assert admission(newcomer), "a refusal is judged again under the learned config"
    revoked = revoke(joined, "Org1", gov.clients["Org1"])
    alone = RequestAdmission(revoked, 1 << 20)
    assert alone.reason(user1) == "CERTIFICATE_REVOKED"  # the revoking config alone refuses it
    admission.learn(revoked)
    assert admission(user1), "... but a verdict once given stays given"
    assert admission(client_tx(gov.clients["Org1"])), "judged under an older config"
    code = check_transaction(client_tx(gov.clients["Org1"]), revoked).code
    assert code == transaction_pb2.TX_VALIDATION_CODE_CERTIFICATE_REVOKED  # peers mark it


def _sequenced(config: config_pb2.ChannelConfig) -> config_pb2.ChannelConfig:
    config.sequence += 1
    return config


# --- the replica set ----------------------------------------------------------------------


def pbft_view(gov: Gov) -> ChannelView:
    config = config_pb2.ChannelConfig()
    config.CopyFrom(gov.view.config)
    config.ordering = config_pb2.ORDERING_TYPE_PBFT
    return channel_view(config)


def test_an_update_of_the_replica_set_is_refused_and_other_changes_apply(gov: Gov) -> None:
    """Not built yet: n, f, the quorums and every replica's index rest on the orderer list, so
    an update adding, removing or re-keying a replica is CONFIG_UPDATE_INVALID at commit
    (CONFIG_INVALID at Broadcast) on a PBFT-lite channel; on a solo channel it applies."""
    view = pbft_view(gov)
    grown = config_pb2.ChannelConfig()
    grown.CopyFrom(view.config)
    other = gov.peers["Org1"].identity_bytes
    grown.orderers.add(node_id="orderer1", org_id="OrdererOrg", identity=other)
    rekeyed = config_pb2.ChannelConfig()
    rekeyed.CopyFrom(view.config)
    rekeyed.orderers[0].identity = other
    invalid = transaction_pb2.TX_VALIDATION_CODE_CONFIG_UPDATE_INVALID
    for changed in (grown, rekeyed):
        data = envelope(gov, update(view, changed, *gov.admins.values()))
        assert check_transaction(data, view).code == invalid
    solo_grown = config_pb2.ChannelConfig()
    solo_grown.CopyFrom(grown)
    solo_grown.ordering = gov.view.config.ordering
    data = envelope(gov, update(gov.view, solo_grown, *gov.admins.values()))
    assert check_transaction(data, gov.view).code == transaction_pb2.TX_VALIDATION_CODE_VALID
    data = envelope(gov, update(view, next_config(view), *gov.admins.values()))
    assert check_transaction(data, view).code == transaction_pb2.TX_VALIDATION_CODE_VALID
