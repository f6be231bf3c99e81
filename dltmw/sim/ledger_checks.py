"""Checkers of endorse → order → validate runs, reading only what the nodes' files hold.

Kept apart from the workload and written independently of the peer's commit path, so that a
bug there cannot hide itself here:

* **one chain**: every peer (and every orderer) holds the same blocks — the same hashes at every
  height — and every peer recorded the same validation code for every transaction;
* **exactly once**: a tx_id is committed (with a code other than DUPLICATE_TXID) at most once,
  and every transaction a client was told is committed sits exactly where, and with the code,
  the client was told;
* **state == replay of the blocks**: replaying the chain from genesis with a naive sequential
  model of MVCC (a transaction is valid iff every key and range it read still has the versions
  it read, after the writes of every earlier valid transaction) gives the codes the peers
  recorded for those transactions, and the peers' world state and stored state hash are exactly
  the replayed state and its hash (`core/statehash.py`). Deltas are replayed by their own naive
  rule (not `core/deltas.py`): a valid transaction's delta adds its amount to the integer the
  key holds; an absent or non-integer key, or a result outside the bounds, invalidates it.
  A VALID config update writes the config it carries (`_config/channel`, at its block).
"""

from __future__ import annotations

import re
import sqlite3
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.message import DecodeError

from dltmw.core.config_update import CONFIG_KEY, CONFIG_NAMESPACE
from dltmw.core.rwset import Version
from dltmw.core.statehash import accumulate
from dltmw.v1 import (
    block_pb2,
    common_pb2,
    config_pb2,
    config_update_pb2,
    private_agreement_pb2,
    proposal_pb2,
    rwset_pb2,
    transaction_pb2,
)

T = transaction_pb2
VALID = T.TX_VALIDATION_CODE_VALID
DUPLICATE = T.TX_VALIDATION_CODE_DUPLICATE_TXID
MVCC_CODES = frozenset(
    {
        VALID,
        T.TX_VALIDATION_CODE_MVCC_READ_CONFLICT,
        T.TX_VALIDATION_CODE_PHANTOM_READ_CONFLICT,
        T.TX_VALIDATION_CODE_DELTA_BOUND_VIOLATED,
        T.TX_VALIDATION_CODE_DELTA_NOT_APPLICABLE,
        T.TX_VALIDATION_CODE_DELTA_MALFORMED,
    }
)
INTEGER = re.compile(rb"0|-?[1-9][0-9]*")
Key = tuple[str, str]


def code_name(code: int) -> str:
    """VALID, MVCC_READ_CONFLICT, ... (the TxValidationCode name without its prefix)."""
    name: str = T.TxValidationCode.Name(code)  # type: ignore[arg-type]
    return name.removeprefix("TX_VALIDATION_CODE_")


@dataclass(frozen=True)
class TxOnChain:
    """One transaction of a block as a peer recorded it."""

    block: int
    index: int
    tx_id: str
    code: int
    rwset: rwset_pb2.ReadWriteSet | None
    private_hash: bytes = b""  # the payload hash of a private transaction
    agreed: tuple[tuple[bytes, bytes], ...] = ()  # (pre-state, delta) each agreement names
    config: bytes = b""  # the next config a config update carries (re-encoded as nodes store it)


@dataclass(frozen=True)
class Chain:
    """One ledger file, read after the run."""

    node: str
    hashes: tuple[bytes, ...]
    txs: tuple[TxOnChain, ...]  # every transaction after genesis, in order
    state: dict[Key, tuple[bytes, Version]]
    state_hash: bytes  # stored with the last block (b"" when none)

    @property
    def height(self) -> int:
        """Number of blocks."""
        return len(self.hashes)


@dataclass(frozen=True)
class Ack:
    """What a client was told about one transaction it submitted."""

    tx_id: str
    code: int
    block: int
    index: int


def read_chain(node: str, path: Path) -> Chain:
    """Read a ledger file (blocks, codes, state, last state hash) in one read transaction."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    try:
        conn.execute("BEGIN")
        hashes, txs = [], []
        blocks = conn.execute("SELECT number, hash, data FROM blocks ORDER BY number")
        for number, digest, data in blocks:
            hashes.append(bytes(digest))
            if number > 0:
                txs.extend(_txs_of(block_pb2.Block.FromString(data)))
        state = {
            (ns, key): (bytes(value), Version(b, i))
            for ns, key, value, b, i in conn.execute(
                "SELECT namespace, key, value, block_number, tx_index FROM state"
            )
        }
        row = conn.execute(
            "SELECT state_hash FROM state_hashes ORDER BY block_number DESC LIMIT 1"
        ).fetchone()
        conn.execute("COMMIT")
    finally:
        conn.close()
    return Chain(node, tuple(hashes), tuple(txs), state, b"" if row is None else bytes(row[0]))


def _txs_of(block: block_pb2.Block) -> list[TxOnChain]:
    codes = list(block.metadata.validation_codes)
    out = []
    for index, raw in enumerate(block.data.envelopes):
        code = codes[index] if index < len(codes) else -1
        out.append(_parse(block.header.number, index, code, raw))
    return out


def _agreed(body: bytes) -> tuple[bytes, bytes]:
    parsed = private_agreement_pb2.PrivateAgreementBody.FromString(body)
    return parsed.pre_state_hash, parsed.delta_hash


def _parse(block: int, index: int, code: int, raw: bytes) -> TxOnChain:
    """An envelope as the checkers see it: claimed tx_id, read-write set or private payload
    hash (empty when unreadable)."""
    try:
        payload = common_pb2.Payload.FromString(common_pb2.Envelope.FromString(raw).payload)
        header = common_pb2.Header.FromString(payload.header)
        if header.type == common_pb2.HEADER_TYPE_PRIVATE_TRANSACTION:
            ptx = T.PrivateTransaction.FromString(payload.data)
            agreed = tuple(_agreed(a.body) for a in ptx.agreements)
            return TxOnChain(
                block, index, header.tx_id, code, None, ptx.payload_hash, agreed=agreed
            )
        if header.type == common_pb2.HEADER_TYPE_CONFIG_UPDATE:
            update = config_update_pb2.ConfigUpdate.FromString(payload.data)
            content = config_update_pb2.ConfigUpdateContent.FromString(update.content)
            config = config_pb2.ChannelConfig.FromString(content.config).SerializeToString()
            return TxOnChain(block, index, header.tx_id, code, None, config=config)
        if header.type != common_pb2.HEADER_TYPE_ENDORSER_TRANSACTION:
            return TxOnChain(block, index, header.tx_id, code, None)
        tx = T.Transaction.FromString(payload.data)
        response = proposal_pb2.ProposalResponsePayload.FromString(tx.response_payload)
    except DecodeError:
        return TxOnChain(block, index, "", code, None)
    return TxOnChain(block, index, header.tx_id, code, response.rwset)


# --- one chain -------------------------------------------------------------------------------


def check_one_chain(peers: Sequence[Chain], orderers: Sequence[Chain]) -> list[str]:
    """Same block hashes everywhere (up to each one's height) and, on peers, the same codes."""
    out: list[str] = []
    everyone = [*peers, *orderers]
    longest = max(everyone, key=lambda c: c.height)
    for chain in everyone:
        for number, digest in enumerate(chain.hashes):
            if digest != longest.hashes[number]:
                out.append(f"fork: {chain.node} and {longest.node} differ at block {number}")
                break
    for chain in peers[1:]:
        first = peers[0]
        for mine, theirs in zip(chain.txs, first.txs, strict=False):
            if mine.code != theirs.code:
                out.append(
                    f"codes: block {mine.block} tx {mine.index}: {chain.node} recorded "
                    f"{code_name(mine.code)}, {first.node} "
                    f"{code_name(theirs.code)}"
                )
                break
    return out


# --- exactly once ----------------------------------------------------------------------------


def check_exactly_once(peer: Chain, acks: Iterable[Ack]) -> list[str]:
    """At most one committed occurrence per tx_id; each acknowledged tx where it was said."""
    out: list[str] = []
    committed: dict[str, TxOnChain] = {}
    tx: TxOnChain | None
    for tx in peer.txs:
        if not tx.tx_id or tx.code == DUPLICATE:
            continue
        if tx.tx_id in committed:
            first = committed[tx.tx_id]
            out.append(
                f"twice: {peer.node} committed {tx.tx_id[:12]} at {first.block}/{first.index} "
                f"and at {tx.block}/{tx.index}"
            )
        committed.setdefault(tx.tx_id, tx)
    for ack in acks:
        tx = committed.get(ack.tx_id)
        if tx is None:
            out.append(f"lost: {ack.tx_id[:12]} acknowledged but not committed on {peer.node}")
        elif (tx.block, tx.index, tx.code) != (ack.block, ack.index, ack.code):
            out.append(
                f"misreported: {ack.tx_id[:12]} acknowledged at {ack.block}/{ack.index} "
                f"{code_name(ack.code)}, committed at {tx.block}/{tx.index} "
                f"{code_name(tx.code)} on {peer.node}"
            )
    return out


def check_ordered(chain: Chain, acknowledged: Iterable[tuple[str, str]]) -> list[str]:
    """Every envelope an orderer's Broadcast accepted (`SimNetwork.acknowledged`: node, tx_id)
    is in `chain` (a peer's: it has validation codes) exactly once, DUPLICATE_TXID copies
    aside, whether or not its client heard the answer. A PBFT-lite orderer accepts an envelope
    once a block holding it is committed there (or, with dissemination, once its slot is
    assembled): one accepted and in no block was dropped after the orderer vouched for it."""
    counted: Counter[str] = Counter(
        tx.tx_id for tx in chain.txs if tx.tx_id and tx.code != DUPLICATE
    )
    out: list[str] = []
    for node, tx_id in sorted(set(acknowledged)):
        if counted[tx_id] != 1:
            out.append(
                f"accepted by {node} but in {counted[tx_id]} blocks of {chain.node}: {tx_id[:12]}"
            )
    return out


# --- state == replay -------------------------------------------------------------------------


def check_replay(peer: Chain) -> list[str]:
    """Replay the chain with the naive MVCC model; compare codes, state and state hash."""
    out: list[str] = []
    state: dict[Key, tuple[bytes, Version]] = {}
    for tx in peer.txs:
        if tx.rwset is not None and tx.code in MVCC_CODES:
            expected = _naive_code(tx.rwset, state)
            if expected != tx.code:
                out.append(
                    f"mvcc: {peer.node} block {tx.block} tx {tx.index} ({tx.tx_id[:12]}) is "
                    f"{code_name(tx.code)}, replay says "
                    f"{code_name(expected)}"
                )
        if tx.code == VALID and tx.rwset is not None:
            _apply(tx.rwset, Version(tx.block, tx.index), state)
        if tx.code == VALID and tx.config:  # a config update alone in its block
            state[(CONFIG_NAMESPACE, CONFIG_KEY)] = (tx.config, Version(tx.block, 0))
    if peer.state != state:
        diff = sorted(set(peer.state.items()) ^ set(state.items()))[:3]
        out.append(f"state: {peer.node}'s world state is not the replay of its blocks: {diff}")
    replayed = accumulate((ns, k, v, ver) for (ns, k), (v, ver) in state.items()).digest()
    if peer.state_hash and peer.state_hash != replayed:
        out.append(
            f"state hash: {peer.node} stored {peer.state_hash.hex()[:12]}, replay gives "
            f"{replayed.hex()[:12]}"
        )
    return out


def _naive_code(rwset: rwset_pb2.ReadWriteSet, state: dict[Key, tuple[bytes, Version]]) -> int:
    ns = rwset.namespace
    for read in rwset.reads:
        current = state.get((ns, read.key))
        if (None if current is None else current[1]) != Version.from_read(read):
            return T.TX_VALIDATION_CODE_MVCC_READ_CONFLICT
    for query in rwset.range_queries:
        now = sorted(
            (key, ver)
            for (n, key), (_, ver) in state.items()
            if n == ns and key >= query.start_key and (not query.end_key or key < query.end_key)
        )
        if now != [(r.key, Version.from_read(r)) for r in query.reads]:
            return T.TX_VALIDATION_CODE_PHANTOM_READ_CONFLICT
    return _naive_delta_code(rwset, state)


def _naive_delta_code(
    rwset: rwset_pb2.ReadWriteSet, state: dict[Key, tuple[bytes, Version]]
) -> int:
    keys = [d.key for d in rwset.deltas]
    if len(set(keys)) != len(keys) or set(keys) & {w.key for w in rwset.writes}:
        return T.TX_VALIDATION_CODE_DELTA_MALFORMED
    for d in rwset.deltas:
        low = d.min if d.HasField("min") else -(2**63)
        high = d.max if d.HasField("max") else 2**63 - 1
        if d.amount == 0 or low > high:
            return T.TX_VALIDATION_CODE_DELTA_MALFORMED
    for d in rwset.deltas:
        current = state.get((rwset.namespace, d.key))
        if current is None or not INTEGER.fullmatch(current[0]):
            return T.TX_VALIDATION_CODE_DELTA_NOT_APPLICABLE
        if not -(2**63) <= int(current[0]) < 2**63:
            return T.TX_VALIDATION_CODE_DELTA_NOT_APPLICABLE
        low = max(d.min if d.HasField("min") else -(2**63), -(2**63))
        high = min(d.max if d.HasField("max") else 2**63 - 1, 2**63 - 1)
        if not low <= int(current[0]) + d.amount <= high:
            return T.TX_VALIDATION_CODE_DELTA_BOUND_VIOLATED
    return VALID


def _apply(
    rwset: rwset_pb2.ReadWriteSet, version: Version, state: dict[Key, tuple[bytes, Version]]
) -> None:
    for write in rwset.writes:
        if write.is_delete:
            state.pop((rwset.namespace, write.key), None)
        else:
            state[(rwset.namespace, write.key)] = (write.value, version)
    for d in rwset.deltas:
        old = int(state[(rwset.namespace, d.key)][0])
        state[(rwset.namespace, d.key)] = (str(old + d.amount).encode(), version)
