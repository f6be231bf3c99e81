"""Concurrent private writes to one key, made a public and decidable verdict.

The problem (stop 26's open point): every recipient agrees on the same pre-state, the first of
two concurrent private transactions on a key commits, and the second is STALE at every recipient
while its public code is VALID: the client is told VALID for a write that did not happen. Non-
recipients cannot decide anything about private keys, so the public verdict needs public data
that stands for them.

Fabric's answer for private data collections, used here: the keys go public as HASHES with their
versions. Each party's agreement names every private key its execution read or wrote
(`hashed_reads`: key hash and the private version read, or absent) and the keys it wrote
(`hashed_writes`), hashed together with the recipient set: parties with another recipient set
keep another private history of a key of the same name. At commit, on every node, the agreed
transaction's public read-write set is `private_rwset`: point reads of those hashes at those
versions and writes of the written ones, in the reserved namespace `NAMESPACE` of the public
world state. The ordinary MVCC rule (`core/validation.py`) then decides: a hash written by a
VALID private transaction after the agreement (earlier in the block or in an earlier block) has
another version than the one read, and the transaction gets PRIVATE_STATE_CONFLICT (the MVCC
code, renamed for this namespace).

Why the versions match: a private write by the transaction at (block, index) gets version
(block, index) in every recipient's private state (`core/privacy/blocks.py`), and the same
transaction's public write of the key's hash gets the same version from MVCC. So a party that
executed every earlier private transaction reads exactly the public version; one that lagged
reads an older one and its transaction conflicts (decidably) instead of going STALE later. A
purge deletes the hashes of the keys it deletes (`purge_rwset`), as it deletes the values.

Disclosed: which transactions touch the same private key (linkable hashes), and for a guessable
key name, which key (the same as Fabric's hashed keys). Range reads of private state are checked
key by key (the keys read), not as ranges: a key inserted into a range read is not a conflict.
A privacy group's keys are scoped by the group (`scope_of`: its namespace names the group), so
they stay the same when members are added; outside groups the recipient set scopes them, and a
transaction among a SUBSET of the parties that changed a key is not seen by the larger set's
hash (STALE there, as before). Only channels whose private transactions carry
agreements use it (a channel without `ALL_RECIPIENTS` has no agreed pre-state to be stale).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from dltmw.core.privacy.execution import PrivateOutcome
from dltmw.core.privacy.groups import MEMBERS_KEY, purge_namespace, scoped
from dltmw.core.rwset import Version
from dltmw.v1 import private_agreement_pb2, private_conflict_pb2, private_purge_pb2, rwset_pb2

NAMESPACE = "_private"  # public world-state namespace of private key hashes (no contract's)
KEY_DOMAIN = b"dltmw/pp/key/v1"
HashedRead = tuple[bytes, Version | None]  # (key hash, private version read or None)
# agreement fields: hashed reads, hashed writes, hashed deletes (a subset of the writes)
Hashed = tuple[list[private_conflict_pb2.HashedRead], list[bytes], list[bytes]]


def key_hash(recipient_keys: Iterable[bytes], namespace: str, key: str) -> bytes:
    """The public stand-in of one private key of the private state the recipients share. A
    privacy group's key is scoped by the group instead (`scope_of`: no recipient keys, the
    group's namespace), so it stays the same when members are added."""
    h = hashlib.sha256(KEY_DOMAIN)
    for part in (b"".join(sorted(recipient_keys)), namespace.encode(), key.encode()):
        h.update(len(part).to_bytes(4, "big") + part)
    return h.digest()


def group_record_hash(group: str) -> bytes:
    """The public stand-in of a privacy group's membership record: written by its CREATE (and
    every change) on channels with agreements, so its presence in the world state says the id
    is taken on the channel (group ids are one namespace per channel, docs/privacy.md)."""
    return key_hash(scope_of(group, ()), scoped(group, ""), MEMBERS_KEY)


def hashed(
    recipient_keys: Iterable[bytes],
    namespace: str,
    touched: Iterable[tuple[str, Version | None]],
    written: Iterable[str],
    deleted: Iterable[str] = (),
) -> Hashed:
    """An execution's keys (read with their versions, written, deleted) as agreement fields."""
    keys = sorted(recipient_keys)
    reads = hashed_reads_msg((key_hash(keys, namespace, k), v) for k, v in touched)
    gone = sorted({key_hash(keys, namespace, k) for k in deleted})
    return reads, sorted({key_hash(keys, namespace, k) for k in written}), gone


def scope_of(group: str, recipient_keys: Iterable[bytes]) -> list[bytes]:
    """What a key hash is scoped by besides its namespace: the recipient set for the no-group
    state; nothing for a group's key, whose namespace names the group (`groups.scoped`)."""
    return [] if group else sorted(recipient_keys)


def outcome_hashed(
    recipient_keys: Iterable[bytes], contract: str, outcome: PrivateOutcome
) -> Hashed:
    """An execution's keys as agreement fields, scoped for its group (or recipient set): the
    keys of `outcome.namespace` (default the contract's) and the extra keys it read."""
    scope = scope_of(outcome.group, recipient_keys)
    ns = outcome.namespace or contract
    reads, writes, deletes = hashed(scope, ns, outcome.touched, outcome.written, outcome.deleted)
    if outcome.extra_touched:
        extra = [(key_hash(scope, n, k), v) for n, k, v in outcome.extra_touched]
        mine = [(r.key_hash, _version_of(r)) for r in reads]
        reads = hashed_reads_msg([*extra, *mine])
    return reads, writes, deletes


def _version_of(read: private_conflict_pb2.HashedRead) -> Version | None:
    return Version(read.block_number, read.tx_index) if read.present else None


def hashed_reads_msg(reads: Iterable[HashedRead]) -> list[private_conflict_pb2.HashedRead]:
    """The wire form of (key hash, version read) pairs, sorted by hash (one per key)."""
    out = []
    for digest, version in sorted(dict(reads).items()):
        if version is None:
            out.append(private_conflict_pb2.HashedRead(key_hash=digest))
        else:
            out.append(
                private_conflict_pb2.HashedRead(
                    key_hash=digest,
                    block_number=version.block_number,
                    tx_index=version.tx_index,
                    present=True,
                )
            )
    return out


def private_rwset(body: private_agreement_pb2.PrivateAgreementBody) -> rwset_pb2.ReadWriteSet:
    """The public read-write set of an agreed private transaction (see the module docstring):
    every hash read at its version, every written hash written (its value is empty: the
    version is what counts)."""
    rwset = rwset_pb2.ReadWriteSet(namespace=NAMESPACE)
    for read in body.hashed_reads:
        entry = rwset.reads.add(key=read.key_hash.hex())
        if read.present:
            entry.version.block_number = read.block_number
            entry.version.tx_index = read.tx_index
    deleted = set(body.hashed_deletes)
    for digest in sorted(set(body.hashed_writes) | deleted):
        if digest in deleted:
            rwset.writes.add(key=digest.hex(), is_delete=True)
        else:
            rwset.writes.add(key=digest.hex(), value=b"\x01")
    return rwset


def purge_rwset(body: private_purge_pb2.PrivatePurgeBody) -> rwset_pb2.ReadWriteSet:
    """A purge's public read-write set: the hashes of the keys it deletes are deleted."""
    rwset = rwset_pb2.ReadWriteSet(namespace=NAMESPACE)
    scope = scope_of(body.group, body.recipient_keys)
    names = [(purge_namespace(body.group, k.namespace), k.key) for k in body.keys]
    for digest in sorted({key_hash(scope, ns, key) for ns, key in names}):
        rwset.writes.add(key=digest.hex(), is_delete=True)
    return rwset
