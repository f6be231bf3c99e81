"""A channel's table of client certificates that may be named by reference (identity references,
stage (b)): which entries a block adds. Pure: block bytes and the config in force, nothing else.

On a channel with `ChannelConfig.client_identity_references` a client may put
`Identity{org_id, certificate_ref}` (~40 bytes) where its ~450-byte identity went
(`Header.creator`, and so its tx_id = SHA-256(nonce || creator as sent)). What the reference
resolves to must be the same on every node at the same block, so the table is a function of the
blocks alone: a certificate becomes referable from block N+1 when block N carries an envelope
whose `Header.creator` is that certificate IN FULL and passes the time-independent identity
checks under the config in force for block N (it parses, is issued by its organisation's root,
is not a CA, is not revoked: `Membership.checked`). Not the validation codes (a transaction
invalid for an MVCC conflict registered its creator all the same), not a clock (validity is
judged at each use, as for a certificate in full), not the order of a block's transactions
(the entries take effect after the whole block: N+1, not "from the next transaction"). So a
peer, whose table is committed with each block (`ledger`), and anything replaying the blocks
builds the same table.

Entries are never removed: a revoked certificate's reference still resolves, and the check of
the certificate then refuses it exactly as it refuses the certificate sent in full. The table is
bounded by the certificates the member organisations' CAs issue.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from dltmw.core.identity import IdentityError, Membership
from dltmw.v1 import block_pb2, common_pb2, config_pb2, identity_pb2

__all__ = ["IdentityTable", "TableEntry", "new_entries", "takes_client_references"]

TableKey = tuple[str, bytes]  # (org_id, certificate_ref)


@dataclass(frozen=True)
class TableEntry:
    """One client certificate referable on a channel from block `first_block` + 1 on."""

    org_id: str
    certificate_ref: bytes  # SHA-256 of certificate_der
    certificate_der: bytes
    first_block: int  # the block whose envelope carried it in full

    @property
    def key(self) -> TableKey:
        """What a reference names: (organisation, certificate hash)."""
        return self.org_id, self.certificate_ref


class IdentityTable(Mapping[TableKey, TableEntry]):
    """One node's table of one channel (the peer ledger owns it and adds a block's entries once
    the block's transaction committed, so it is exactly as old as the ledger). Adding is the
    only change; the first entry for a key stays."""

    def __init__(self, entries: Iterable[TableEntry] = ()) -> None:
        self._entries: dict[TableKey, TableEntry] = {}
        self.add(entries)

    def add(self, entries: Iterable[TableEntry]) -> None:
        """Add the entries of a committed block (or those loaded at open)."""
        for entry in entries:
            self._entries.setdefault(entry.key, entry)

    def __getitem__(self, key: TableKey) -> TableEntry:
        return self._entries[key]

    def __iter__(self) -> Iterator[TableKey]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def takes_client_references(config: config_pb2.ChannelConfig) -> bool:
    """Whether a channel config lets clients name themselves by reference (both flags)."""
    return config.identity_references and config.client_identity_references


def _creator(envelope_bytes: bytes) -> bytes | None:
    """The `Header.creator` bytes of an envelope, or None for anything that does not parse."""
    try:
        envelope = common_pb2.Envelope.FromString(envelope_bytes)
        payload = common_pb2.Payload.FromString(envelope.payload)
        return common_pb2.Header.FromString(payload.header).creator
    except DecodeError:
        return None


def new_entries(
    block: block_pb2.Block, membership: Membership, known: Mapping[TableKey, TableEntry]
) -> list[TableEntry]:
    """The entries block `block` adds to a table holding `known`, under `membership` (the
    config in force for the block, whose flags the caller checked: `takes_client_references`).
    Sorted by key; each certificate once; none already known."""
    number = block.header.number
    found: dict[TableKey, TableEntry] = {}
    for creator in {c for c in map(_creator, block.data.envelopes) if c}:
        try:
            msg = identity_pb2.Identity.FromString(creator)
        except DecodeError:
            continue
        if not msg.org_id or not msg.certificate_der or msg.certificate_ref:
            continue
        key = msg.org_id, hashlib.sha256(msg.certificate_der).digest()
        if key in known or key in found:
            continue
        try:
            membership.checked(creator)
        except IdentityError:
            continue
        found[key] = TableEntry(msg.org_id, key[1], msg.certificate_der, number)
    return [found[k] for k in sorted(found)]
