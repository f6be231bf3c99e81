"""The commit path is total: any envelope in a block gets a validation code, never an exception.

A block that carries 2f+1 orderer signatures must be committed by every peer whatever is in it
(issue 10, finding 1: one envelope whose header timestamp had nanos = 1e9 made
`Timestamp.ToDatetime` raise inside the "never raises" commit check, and every peer of the BFT
channel stopped for good). Tables pin the codes of known poison; Hypothesis properties feed the
per-envelope checks, MVCC and the other readers of committed blocks arbitrary bytes, mutated
valid envelopes and structurally valid envelopes with extreme field values.
"""

from __future__ import annotations

import asyncio
import types
from concurrent.futures import ThreadPoolExecutor
from typing import cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledger_backends import LedgerSite
from ledger_parties import (
    CHANNEL,
    Parties,
    endorser_tx,
    header,
    kv_rwset,
    make_parties,
    private_tx,
    seal,
    signed_block,
)

from dltmw.aio.clock import utc_now
from dltmw.aio.tasks import TaskOwner
from dltmw.core.block import block_hash, make_block
from dltmw.core.errors import ClientError
from dltmw.core.hashing import ZERO_HASH, compute_tx_id
from dltmw.core.rwset import Version
from dltmw.core.txcheck import (
    CheckedTx,
    check_envelope,
    check_orderable,
    check_transaction,
    private_transaction,
    tx_summary,
)
from dltmw.core.validation import TxForMvcc, reads_of, validate_block
from dltmw.rpc.tracing import NO_TRACING
from dltmw.runtime.context import NodeContext
from dltmw.runtime.metrics import NodeMetrics
from dltmw.runtime.roles.orderer.byzantine import SIZE_MAX, poison_envelopes
from dltmw.runtime.roles.peer.channel import PeerChannel
from dltmw.runtime.roles.privacy.executor import private_txs
from dltmw.v1 import common_pb2, proposal_pb2, rwset_pb2, transaction_pb2

C = transaction_pb2
VALID = C.TX_VALIDATION_CODE_VALID
CODES = frozenset(C.TxValidationCode.values()) - {C.TX_VALIDATION_CODE_UNSPECIFIED}
PARTIES = make_parties()


def nanos_1e9(signer_of: str = "orderer") -> bytes:
    """The finding's envelope: header timestamp nanos = 1e9, signed by one orderer's own key
    (or by a member client)."""
    signer = PARTIES.orderers[0] if signer_of == "orderer" else PARTIES.user
    h = header(signer)
    h.timestamp.seconds, h.timestamp.nanos = 1_700_000_000, 1_000_000_000
    return seal(signer, h.SerializeToString(), b"")


def commit_codes(parties: Parties, envelopes: list[bytes]) -> list[int]:
    """What a peer computes for a block (without storage): per-envelope checks, then MVCC."""
    checked = [check_transaction(env, parties.view) for env in envelopes]
    txs = [TxForMvcc(c.tx_id, c.code, c.rwset) for c in checked]
    keys, ranges = reads_of(txs)
    committed = {k: Version(1, 0) for k in sorted(keys)[:3]}
    committed_ranges = {r: [("a", Version(1, 0))] for r in ranges}
    codes, _ = validate_block(7, txs, committed, committed_ranges, {"t0"})
    return codes


# --- the finding, exactly -------------------------------------------------------------------


@pytest.mark.parametrize("signer_of", ["orderer", "member"])
def test_finding_nanos_1e9_envelope_gets_bad_timestamp_not_an_exception(signer_of: str) -> None:
    checked = check_transaction(nanos_1e9(signer_of), PARTIES.view)
    assert checked.code == C.TX_VALIDATION_CODE_BAD_TIMESTAMP
    assert checked.tx_id == "", "an unauthenticated tx_id must not enter the tx index"


def test_finding_block_with_the_poison_envelope_commits_with_one_code_per_envelope() -> None:
    good = endorser_tx(PARTIES, kv_rwset(writes=[("k", b"v")]))
    codes = commit_codes(PARTIES, [good, nanos_1e9(), good])
    assert codes == [VALID, C.TX_VALIDATION_CODE_BAD_TIMESTAMP, C.TX_VALIDATION_CODE_DUPLICATE_TXID]


def test_finding_envelope_is_refused_at_admission_with_a_reason() -> None:
    for check in (
        lambda env: check_envelope(env, PARTIES.views, utc_now(), 900.0),
        lambda env: check_orderable(env, PARTIES.views),
    ):
        with pytest.raises(ClientError) as exc:
            check(nanos_1e9("member"))
        assert exc.value.reason_name == "INVALID_FIELD"
        assert "header.timestamp" in str(exc.value)


# --- tx ids are the creator's -----------------------------------------------------------------


def test_an_unsigned_copy_of_a_header_cannot_squat_the_tx_id_of_the_real_transaction() -> None:
    genuine = endorser_tx(PARTIES, kv_rwset(writes=[("k", b"v")]))
    envelope = common_pb2.Envelope.FromString(genuine)
    forged = common_pb2.Envelope(payload=envelope.payload, signature=b"\x30\x00")
    codes = commit_codes(PARTIES, [forged.SerializeToString(), genuine])
    assert codes == [C.TX_VALIDATION_CODE_BAD_CREATOR_SIGNATURE, VALID]


def test_a_signed_but_invalid_transaction_keeps_its_tx_id() -> None:
    h = header(PARTIES.user, common_pb2.HEADER_TYPE_PRIVATE_TRANSACTION)
    env = seal(PARTIES.user, h.SerializeToString(), b"\x0a\x01x")  # 1-byte payload hash
    checked = check_transaction(env, PARTIES.view)
    assert (checked.code, checked.tx_id) == (C.TX_VALIDATION_CODE_BAD_PAYLOAD, h.tx_id)


# --- every poison kind of the byzantine-orderer test ----------------------------------------


@pytest.mark.parametrize("signer_of", ["orderer", "member"])
def test_every_poison_kind_is_refused_for_ordering_and_gets_an_invalid_code(
    signer_of: str,
) -> None:
    template = endorser_tx(PARTIES, kv_rwset(writes=[("k", b"v")]))
    signer = PARTIES.orderers[1] if signer_of == "orderer" else PARTIES.user
    poison = poison_envelopes(CHANNEL, signer, 1, template)
    assert len({p.kind for p in poison}) >= (100 if signer_of == "orderer" else 95)
    for p in poison:
        if len(p.envelope) <= SIZE_MAX:
            with pytest.raises(ClientError):
                check_orderable(p.envelope, PARTIES.views)
        checked = check_transaction(p.envelope, PARTIES.view)
        if p.kind.startswith(("duplicate/", "size/padded")):
            assert checked.tx_id == check_transaction(template, PARTIES.view).tx_id, p.kind
        else:
            assert checked.code in CODES - {VALID}, p.kind
    codes = commit_codes(PARTIES, [template, *(p.envelope for p in poison)])
    assert codes[0] == VALID and VALID not in codes[1:]


# --- properties: never raises -----------------------------------------------------------------

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TEMPLATES = [
    endorser_tx(PARTIES, kv_rwset(reads=[("a", (1, 0))], writes=[("b", b"x")])),
    endorser_tx(PARTIES, kv_rwset(writes=[("c", b"y")]), [PARTIES.peer1, PARTIES.peer2]),
    private_tx(PARTIES),
]
INT64 = st.integers(-(2**63), 2**63 - 1)
INT32 = st.integers(-(2**31), 2**31 - 1)
UINT64 = st.integers(0, 2**64 - 1)
UINT32 = st.integers(0, 2**32 - 1)
KEYS = st.one_of(
    st.text(max_size=12), st.just(""), st.just("a\x00b"), st.just("k" * 5000), st.just("\U0010ffff")
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid envelope with bit flips, truncation, insertion or a replaced span."""
    data = bytearray(draw(st.sampled_from(TEMPLATES)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "replace"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            data[at : at + draw(st.integers(1, 16))] = draw(st.binary(max_size=16))
    return bytes(data)


@st.composite
def odd_rwset(draw: st.DrawFn) -> rwset_pb2.ReadWriteSet:
    """Read/write sets an (even faulty) endorser could sign: any keys, versions, ranges."""
    rw = rwset_pb2.ReadWriteSet(namespace=draw(st.sampled_from(["kv"] * 4 + ["bank", "", "x"])))
    for key in draw(st.lists(KEYS, max_size=4)):
        read = rw.reads.add(key=key)
        if draw(st.booleans()):
            read.version.block_number, read.version.tx_index = draw(UINT64), draw(UINT32)
    for start, end in draw(st.lists(st.tuples(KEYS, KEYS), max_size=2)):
        query = rw.range_queries.add(start_key=start, end_key=end)
        for key in draw(st.lists(KEYS, max_size=2)):
            query.reads.add(key=key)
    for key in draw(st.lists(KEYS, max_size=4)):
        rw.writes.add(key=key, is_delete=draw(st.booleans()), value=draw(st.binary(max_size=8)))
    return rw


def rarely(draw: st.DrawFn) -> bool:
    """True one time in four: each defect is rare, so most examples get deep into the checks."""
    return draw(st.integers(0, 3)) == 3  # (Hypothesis favours 0: the simplest case is clean)


@st.composite
def structured(draw: st.DrawFn) -> bytes:
    """A well-signed envelope whose header and data carry extreme or inconsistent values."""
    signer = draw(st.sampled_from([PARTIES.user] * 4 + [PARTIES.orderers[0], PARTIES.outsider]))
    h = header(signer, common_pb2.HEADER_TYPE_ENDORSER_TRANSACTION)
    if rarely(draw):
        h.type = draw(st.sampled_from([0, 2, 3, 99, -1]))
    if rarely(draw):
        h.timestamp.seconds, h.timestamp.nanos = draw(INT64), draw(INT32)
    if rarely(draw):  # garbage identity bytes, with a tx_id that matches them
        h.creator = draw(st.binary(max_size=64))
        h.tx_id = compute_tx_id(h.nonce, h.creator)
    if rarely(draw):
        h.channel_id = draw(st.sampled_from(["", "other", "x" * 300]))
    kind = draw(st.sampled_from(["rwset"] * 4 + ["bytes", "private"]))
    if kind == "bytes":
        return seal(signer, h.SerializeToString(), draw(st.binary(max_size=64)))
    if kind == "private":
        h.type = common_pb2.HEADER_TYPE_PRIVATE_TRANSACTION
        data = transaction_pb2.PrivateTransaction(payload_hash=draw(st.binary(max_size=40)))
        return seal(signer, h.SerializeToString(), data.SerializeToString())
    endorsers = draw(st.lists(st.sampled_from([PARTIES.peer1, PARTIES.peer2]), max_size=3))
    envelope = endorser_tx(PARTIES, draw(odd_rwset()), endorsers, h)
    env = common_pb2.Envelope.FromString(envelope)
    payload = common_pb2.Payload.FromString(env.payload)
    tx = transaction_pb2.Transaction.FromString(payload.data)
    if rarely(draw):  # endorsements by garbage identities, or a huge repeated field
        garbage = proposal_pb2.Endorsement(
            endorser=draw(st.binary(max_size=64)), signature=draw(st.binary(max_size=72))
        )
        tx.endorsements.extend([garbage] * draw(st.sampled_from([1, 2000])))
    return seal(signer, payload.header, tx.SerializeToString())


ENVELOPES = st.one_of(st.binary(max_size=300), mutated(), structured())


@SETTINGS
@given(envelope=ENVELOPES)
def test_property_check_transaction_returns_a_code_for_any_envelope(envelope: bytes) -> None:
    checked = check_transaction(envelope, PARTIES.view)
    assert isinstance(checked, CheckedTx) and checked.code in CODES
    assert checked.code != VALID or checked.tx_id


@SETTINGS
@given(envelopes=st.lists(ENVELOPES, min_size=1, max_size=6))
def test_property_a_block_of_anything_gets_one_code_per_envelope(envelopes: list[bytes]) -> None:
    codes = commit_codes(PARTIES, envelopes)
    assert len(codes) == len(envelopes) and set(codes) <= CODES
    block = make_block(CHANNEL, 7, ZERO_HASH, envelopes)
    block.metadata.validation_codes.extend(codes)
    for envelope in envelopes:
        tx_summary(envelope)
    private_txs(block)  # the private executor's reading of a committed block


@SETTINGS
@given(envelopes=st.lists(ENVELOPES, min_size=1, max_size=6))
def test_property_the_executor_reads_valid_private_data_as_the_commit_rule_does(
    envelopes: list[bytes],
) -> None:
    """The private executor parses a committed VALID private transaction without checking its
    canonical form again (`executor.committed_private`): it reads exactly what the commit
    rule's canonical reading (`private_transaction`) gives for every VALID one, and nothing
    of any other."""
    codes = commit_codes(PARTIES, envelopes)
    block = make_block(CHANNEL, 7, ZERO_HASH, envelopes)
    block.metadata.validation_codes.extend(codes)
    model = []
    for index, (envelope, code) in enumerate(zip(envelopes, codes, strict=True)):
        if code != VALID:
            continue
        payload = common_pb2.Payload.FromString(common_pb2.Envelope.FromString(envelope).payload)
        header = common_pb2.Header.FromString(payload.header)
        if header.type != common_pb2.HEADER_TYPE_PRIVATE_TRANSACTION:
            continue
        ptx = private_transaction(payload.data)
        if ptx is not None:
            model.append((index, header.tx_id, ptx.payload_hash))
    assert private_txs(block) == model


# --- the real commit path, on a real ledger ---------------------------------------------------


async def test_peer_commits_blocks_full_of_poison_and_odd_writes_on_each_backend(
    site: LedgerSite,
) -> None:
    ledger = await site.open()
    pool = ThreadPoolExecutor(max_workers=2)
    metrics = NodeMetrics()
    ctx = cast(
        NodeContext,
        types.SimpleNamespace(
            node_id="peer0.org1", tasks=TaskOwner(), metrics=metrics, tracer=NO_TRACING
        ),
    )
    peer = PeerChannel(ctx, PARTIES.view, ledger, pool)
    try:
        genesis = make_block(CHANNEL, 0, ZERO_HASH, [b"config"])
        genesis.metadata.validation_codes.append(VALID)
        await ledger.commit_block(genesis, [""])
        await peer.committer.start()  # the real commit path: the committer's driver
        odd_keys = ["", "a\x00b", "k" * 5000, "\U0010ffff"]
        valid = [
            endorser_tx(PARTIES, kv_rwset(writes=[(k, b"v")], reads=[(k, None)])) for k in odd_keys
        ]
        odd = kv_rwset(writes=[("dup", b"1"), ("dup", b"2")], reads=[("x", (2**64 - 1, 7))])
        odd.range_queries.add(start_key="z", end_key="a")  # empty: start after end
        odd.range_queries.add(start_key="", end_key="")  # the whole namespace
        poison = poison_envelopes(CHANNEL, PARTIES.orderers[0], 1, valid[0])
        envelopes = [nanos_1e9(), *valid, *(p.envelope for p in poison), valid[0]]
        envelopes.append(endorser_tx(PARTIES, odd))  # MVCC conflict: version never written
        block = signed_block(PARTIES, 1, ledger.last_hash, envelopes)
        await peer.commit(block)
        codes = list((await ledger.block(1)).metadata.validation_codes)  # type: ignore[union-attr]
        assert len(codes) == len(envelopes)
        assert codes[0] == C.TX_VALIDATION_CODE_BAD_TIMESTAMP
        assert codes[1 : 1 + len(odd_keys)] == [VALID] * len(odd_keys)
        assert codes[-2:] == [
            C.TX_VALIDATION_CODE_DUPLICATE_TXID,
            C.TX_VALIDATION_CODE_MVCC_READ_CONFLICT,
        ]
        counted = metrics.validation.labels(CHANNEL, "VALID")._value.get()
        assert counted == len(odd_keys), "the committer counts what it committed"
        versions = await ledger.versions(("kv", k) for k in odd_keys)
        assert set(versions.values()) == {Version(1, i) for i in range(1, 1 + len(odd_keys))}
        dups = kv_rwset(writes=[("dup", b"1"), ("dup", b"2")])
        dups.range_queries.add(start_key="z", end_key="a")
        after = signed_block(
            PARTIES, 2, block_hash(block), [nanos_1e9(), endorser_tx(PARTIES, dups)]
        )
        await asyncio.wait_for(peer.commit(after), 30)
        assert ledger.height == 3
        stored = await ledger.block(2)
        assert list(stored.metadata.validation_codes) == [  # type: ignore[union-attr]
            C.TX_VALIDATION_CODE_BAD_TIMESTAMP,
            VALID,
        ]
        assert await ledger.read_snapshot(lambda r: r.get("kv", "dup")) == (b"2", Version(2, 1))
    finally:
        await peer.stop()
        await ledger.close()
        pool.shutdown()
