"""Reading node ledgers from the outside (read-only sqlite), for the integration checks that
must not trust the node: where each transaction landed, the state a replay of the blocks gives,
and the stored, recomputed and replayed state hashes. Shared by the crash tests and others.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

from dltmw.core.rwset import Version
from dltmw.core.statehash import accumulate
from dltmw.ledger.audit import read_audit
from dltmw.v1 import block_pb2, common_pb2, identity_pb2, proposal_pb2, transaction_pb2

VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
DUPLICATE_TXID = transaction_pb2.TX_VALIDATION_CODE_DUPLICATE_TXID
ENDORSER_TX = common_pb2.HEADER_TYPE_ENDORSER_TRANSACTION
State = dict[tuple[str, str], tuple[bytes, Version]]


def ledger_path(net: Path, node: str, channel: str = "trades", role: str = "peer") -> Path:
    """The sqlite file of `node`'s `role` ledger of `channel` (role: peer, orderer, private)."""
    return net / "nodes" / node / "data" / f"{channel}.{role}.sqlite"


def read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection (the node may be running)."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def height(path: Path) -> int:
    """Blocks held by a ledger file (0 if it does not exist yet)."""
    if not path.exists():
        return 0
    db = read_only(path)
    try:
        return int(db.execute("SELECT COUNT(*) FROM blocks").fetchone()[0])
    finally:
        db.close()


def blocks(path: Path) -> list[block_pb2.Block]:
    """Every stored block, in order (with the node's validation codes)."""
    db = read_only(path)
    try:
        rows = db.execute("SELECT data FROM blocks ORDER BY number").fetchall()
    finally:
        db.close()
    return [block_pb2.Block.FromString(data) for (data,) in rows]


def _header(envelope: bytes) -> tuple[common_pb2.Header, bytes]:
    payload = common_pb2.Payload.FromString(common_pb2.Envelope.FromString(envelope).payload)
    return common_pb2.Header.FromString(payload.header), payload.data


def tx_codes(chain: list[block_pb2.Block]) -> dict[str, list[int]]:
    """tx_id -> the validation code of each of its occurrences in the chain, in order."""
    found: dict[str, list[int]] = {}
    for block in chain[1:]:
        for envelope, code in zip(
            block.data.envelopes, block.metadata.validation_codes, strict=True
        ):
            found.setdefault(_header(envelope)[0].tx_id, []).append(code)
    return found


def tx_blocks(chain: list[block_pb2.Block]) -> dict[str, int]:
    """tx_id -> the number of the block it is in."""
    return {
        _header(raw)[0].tx_id: block.header.number
        for block in chain[1:]
        for raw in block.data.envelopes
    }


def endorsements(chain: list[block_pb2.Block], tx_id: str) -> dict[str, bytes]:
    """org -> the serialised identity of its peer that endorsed `tx_id` in `chain`."""
    for block in chain[1:]:
        for raw in block.data.envelopes:
            header, data = _header(raw)
            if header.tx_id == tx_id:
                tx = transaction_pb2.Transaction.FromString(data)
                return {
                    identity_pb2.Identity.FromString(e.endorser).org_id: e.endorser
                    for e in tx.endorsements
                }
    raise AssertionError(f"{tx_id} is not in the chain")


def replay_state(chain: list[block_pb2.Block]) -> State:
    """The world state a replay of every VALID endorser transaction's writes gives, in block
    order, with versions (block number, tx index), independent of the node's commit code."""
    state: State = {}
    for block in chain[1:]:
        number = block.header.number
        for index, (envelope, code) in enumerate(
            zip(block.data.envelopes, block.metadata.validation_codes, strict=True)
        ):
            header, data = _header(envelope)
            if code != VALID or header.type != ENDORSER_TX:
                continue
            tx = transaction_pb2.Transaction.FromString(data)
            rw = proposal_pb2.ProposalResponsePayload.FromString(tx.response_payload).rwset
            for w in rw.writes:
                if w.is_delete:
                    state.pop((rw.namespace, w.key), None)
                else:
                    state[(rw.namespace, w.key)] = (w.value, Version(number, index))
    return state


def table_state(path: Path, table: str = "state") -> State:
    """The node's state table as it is now."""
    db = read_only(path)
    try:
        rows = db.execute(f"SELECT namespace, key, value, block_number, tx_index FROM {table}")
        return {(r[0], r[1]): (bytes(r[2]), Version(r[3], r[4])) for r in rows}
    finally:
        db.close()


def state_hash_of(state: State) -> bytes:
    """The state hash (core/statehash.py) of a state."""
    return accumulate((ns, k, v, ver) for (ns, k), (v, ver) in state.items()).digest()


def state_hashes(path: Path) -> tuple[bytes, bytes, bytes]:
    """(replayed, stored, recomputed-from-table) state hashes of a peer ledger at its height."""
    audit = read_audit(path, [], 0, recompute=True)
    replayed = state_hash_of(replay_state(blocks(path)))
    return replayed, audit.stored_state_hash, audit.recomputed_state_hash


async def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `predicate` under a deadline (never a fixed sleep as the assertion)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        assert loop.time() < deadline, f"timed out after {timeout_s}s waiting for {what}"
        await asyncio.sleep(0.1)
