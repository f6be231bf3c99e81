"""Checkers of config changes, reading only what the nodes' files hold after a run.

* **one config per height**: every node (orderer replica or peer) recorded, with its blocks, the
  config that replaying its own chain from block 0 applies, at the block that applies it. The
  replay is the client's (`client/governance.next_view`: a valid config update alone in its
  block applies), not the orderer core's tracking nor the peer's commit path; what a node
  recorded is its world-state entry `_config/channel`, written in the same sqlite transaction
  as the block that applied it (value = the config, version = that block). Together with the
  one-chain check (same blocks everywhere), every node applied the same config at the same
  height — a node that applied one a block late, or not at all, or one nobody else did, is
  caught;
* **revoked is revoked**: no transaction of a revoked creator is VALID in a block after the
  block that revoked it, on any peer;
* **signed by the set in force** (`check_signers`): every block after block 0 carries signatures
  of at least the quorum (`signatures_needed`) of the orderer list in force at its height —
  block 0's, then each applied config's from the block after it — and of nobody else. The
  signers are counted by identity; the signatures themselves were verified by the node that
  committed the block (a peer refuses a block whose signatures do not verify). Where that
  config takes identity references, each signer is named by its reference (a reference is
  resolved to the orderer it names, `Membership.resolved`), never in full: every replica names
  the signers of a block by the config in force before it (`PbftOrdererCore._block_names`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from dltmw.core.channel import ChannelView
from dltmw.core.config_replay import next_view
from dltmw.core.config_update import CONFIG_KEY, CONFIG_NAMESPACE, is_config_update
from dltmw.core.handlers.pbft_blocks import signatures_needed
from dltmw.sim.ledger_checks import VALID, Chain
from dltmw.v1 import block_pb2, config_pb2


@dataclass(frozen=True)
class ConfigRecord:
    """One ledger's config blocks and the config it recorded as applied."""

    node: str
    height: int
    candidates: tuple[block_pb2.Block, ...]  # blocks holding one config update alone
    stored: tuple[bytes, int] | None  # (config, the block that applied it), if any


def read_configs(node: str, path: Path) -> ConfigRecord:
    """Read a ledger file's config blocks and its recorded config (one read transaction)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    try:
        conn.execute("BEGIN")
        height, candidates = 0, []
        for number, data in conn.execute("SELECT number, data FROM blocks ORDER BY number"):
            height = number + 1
            block = block_pb2.Block.FromString(data)
            envelopes = block.data.envelopes
            if number > 0 and len(envelopes) == 1 and is_config_update(envelopes[0]):
                candidates.append(block)
        row = conn.execute(
            "SELECT value, block_number FROM state WHERE namespace = ? AND key = ?",
            (CONFIG_NAMESPACE, CONFIG_KEY),
        ).fetchone()
        conn.execute("COMMIT")
    finally:
        conn.close()
    stored = None if row is None else (bytes(row[0]), int(row[1]))
    return ConfigRecord(node, height, tuple(candidates), stored)


def applied(record: ConfigRecord, genesis: ChannelView) -> list[tuple[int, ChannelView]]:
    """(block, config) of every config the record's chain applies, replayed from block 0."""
    view, out = genesis, []
    for block in record.candidates:
        after = next_view(view, block)
        if after is not view:
            out.append((block.header.number, after))
            view = after
    return out


def check_configs(records: Sequence[ConfigRecord], genesis: ChannelView) -> list[str]:
    """Every node recorded the config its chain applies, at the block that applies it."""
    out: list[str] = []
    for record in records:
        history = applied(record, genesis)
        if not history:
            if record.stored is not None:
                out.append(f"config: {record.node} recorded a config its chain never applies")
            continue
        number, view = history[-1]
        if record.stored is None:
            out.append(
                f"config: {record.node} recorded no config; its chain applies sequence "
                f"{view.sequence} at block {number}"
            )
            continue
        config, at = record.stored
        sequence = config_pb2.ChannelConfig.FromString(config).sequence
        if config != view.config.SerializeToString() or at != number:
            out.append(
                f"config: {record.node} recorded sequence {sequence} at block {at}; its chain "
                f"applies sequence {view.sequence} at block {number}"
            )
    return out


def check_revoked(peer: Chain, revoked_at: int, tx_ids: Iterable[str]) -> list[str]:
    """No transaction in `tx_ids` (a revoked creator's) is VALID after block `revoked_at`."""
    theirs = set(tx_ids)
    return [
        f"revoked: {peer.node} marked {tx.tx_id[:12]} VALID at block {tx.block}, after its "
        f"creator was revoked at block {revoked_at}"
        for tx in peer.txs
        if tx.tx_id in theirs and tx.block > revoked_at and tx.code == VALID
    ]


def check_signers(node: str, path: Path, genesis: ChannelView) -> list[str]:
    """Every block of the ledger at `path` is signed by a quorum of the orderer list in force at
    its height and by no one outside that list (module docstring)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    try:
        rows = conn.execute("SELECT number, data FROM blocks ORDER BY number").fetchall()
    finally:
        conn.close()
    view, out = genesis, []
    for number, data in rows:
        if number == 0:
            continue
        block = block_pb2.Block.FromString(data)
        in_force = {o.identity for o in view.config.orderers}
        signers = {view.orderer_membership.resolved(s.signer) for s in block.metadata.signatures}
        needed = signatures_needed(view.config)
        if not signers <= in_force or len(signers) < needed:
            out.append(
                f"signers: {node} block {number} carries {len(signers & in_force)} signatures "
                f"of the {len(in_force)} orderers in force (needs {needed}) and "
                f"{len(signers - in_force)} of others"
            )
        in_full = sum(s.signer in in_force for s in block.metadata.signatures)
        if view.config.identity_references and in_full:
            out.append(
                f"signers: {node} block {number} names {in_full} orderers in full where the "
                "config in force takes identity references"
            )
        envelopes = block.data.envelopes
        if len(envelopes) == 1 and is_config_update(envelopes[0]):
            view = next_view(view, block)
    return out
