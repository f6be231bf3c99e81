"""Encryption at rest (ledger/at_rest.py): records round-trip, a moved, altered or plaintext
record is refused, data keys survive a reopen and a rotation, and a canary written through the
private store and the vault store is in none of their files (database, -wal, -shm)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest
from private_backends import PrivateSite
from utxo_parties import make_parties, tx

from dltmw.core.rwset import StateWrite, Version
from dltmw.core.utxo.build import cash_output
from dltmw.core.utxo.model import Command
from dltmw.core.utxo.verify import read_signed
from dltmw.ledger.at_rest import (
    KEYS_FILE,
    PLAIN,
    DataKeyRing,
    RecordCipher,
    RecordUnreadable,
    ValueCodec,
    state_id,
)
from dltmw.ledger.private_store import NewPayload, PrivateTxn
from dltmw.ledger.vault_store import VaultStore
from dltmw.v1 import utxo_pb2

KEK = bytes(range(32))


def cipher(tmp_path: Path, kek: bytes = KEK) -> RecordCipher:
    return RecordCipher(DataKeyRing(tmp_path / KEYS_FILE, kek))


def test_a_record_round_trips_and_hides_its_value(tmp_path: Path) -> None:
    c = cipher(tmp_path)
    stored = c.seal("pstate", state_id("kv", "k"), b"canary value")
    assert b"canary" not in stored
    assert c.open("pstate", state_id("kv", "k"), stored) == b"canary value"


@pytest.mark.parametrize(
    ("table", "record_id"),
    [("pstate", state_id("kv", "other")), ("payloads", state_id("kv", "k"))],
    ids=["moved-to-another-row", "moved-to-another-table"],
)
def test_a_moved_record_is_refused(tmp_path: Path, table: str, record_id: bytes) -> None:
    c = cipher(tmp_path)
    stored = c.seal("pstate", state_id("kv", "k"), b"v")
    with pytest.raises(RecordUnreadable):
        c.open(table, record_id, stored)


@pytest.mark.parametrize("where", [0, 1, 6, -1], ids=["magic", "key-id", "nonce", "tag"])
def test_an_altered_record_is_refused(tmp_path: Path, where: int) -> None:
    c = cipher(tmp_path)
    stored = bytearray(c.seal("pstate", b"id", b"value"))
    stored[where] ^= 1
    with pytest.raises(RecordUnreadable):
        c.open("pstate", b"id", bytes(stored))


def test_a_plaintext_record_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RecordUnreadable):
        cipher(tmp_path).open("pstate", b"id", b"plain value written without a cipher")


def test_data_keys_survive_a_reopen_and_need_the_storage_key(tmp_path: Path) -> None:
    stored = cipher(tmp_path).seal("pstate", b"id", b"value")
    assert cipher(tmp_path).open("pstate", b"id", stored) == b"value"
    assert KEK.hex() not in (tmp_path / KEYS_FILE).read_text()
    assert (tmp_path / KEYS_FILE).stat().st_mode & 0o777 == 0o600  # the owner's alone
    with pytest.raises(RecordUnreadable):
        cipher(tmp_path, kek=bytes(32))  # another node's storage key


def test_rotation_keeps_old_records_readable_and_writes_under_the_new_key(
    tmp_path: Path,
) -> None:
    c = cipher(tmp_path)
    old = c.seal("pstate", b"a", b"old")
    assert c.ring.rotate() == 2
    new = c.seal("pstate", b"b", b"new")
    assert old[1:5] == (1).to_bytes(4, "big") and new[1:5] == (2).to_bytes(4, "big")
    reopened = cipher(tmp_path)  # e.g. after a restart: both keys, the new one current
    assert reopened.ring.current == 2
    assert reopened.open("pstate", b"a", old) == b"old"
    assert reopened.open("pstate", b"b", new) == b"new"


def node_files(tmp_path: Path, name: str) -> list[Path]:
    return [p for p in tmp_path.iterdir() if p.name.startswith(name)]


def count(paths: list[Path], needle: bytes) -> int:
    return sum(p.read_bytes().count(needle) for p in paths)


@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted", "plain-control"])
async def test_a_canary_in_the_private_store_is_in_none_of_its_files(
    tmp_path: Path, psite: PrivateSite, encrypted: bool
) -> None:
    """The control run (no cipher) finds the canary: the scan can see it when it is there (on
    PostgreSQL: in the cluster's table files)."""
    canary = b"pstate-canary-" + secrets.token_hex(8).encode()
    values: ValueCodec = cipher(tmp_path) if encrypted else PLAIN
    store = await psite.open(values=values)
    digest = os.urandom(32)
    try:
        await store.store_payloads([NewPayload(digest, b"payload " + canary, (os.urandom(32),))])

        def write(txn: PrivateTxn) -> None:
            txn.apply([StateWrite("kv", "k", b"value " + canary, Version(1, 0))])
            txn.set_cursor(2)

        await store.transaction(write)
        assert await store.private_state("kv") == {"k": b"value " + canary}
        assert await store.payload(digest) == b"payload " + canary
        if psite.backend == "sqlite":
            files = node_files(tmp_path, "c.private.sqlite")
            assert {p.name for p in files} >= {"c.private.sqlite", "c.private.sqlite-wal"}
        assert (psite.files_with(canary) == []) is encrypted
        audit = await store.audit(b"", 10)
        assert audit.recomputed_state_hash == audit.stored_state_hash
    finally:
        await store.close()


@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted", "plain-control"])
async def test_a_canary_in_the_vault_is_in_none_of_its_files(
    tmp_path: Path, encrypted: bool
) -> None:
    parties = make_parties()
    canary = "VAULTCANARY" + secrets.token_hex(6)
    owner = parties.bob.identity_bytes
    raw, _ = tx(
        outputs=[cash_output(parties.bank.identity_bytes, owner, canary, 5)],
        commands=[Command("cash", "issue", (parties.bank.identity_bytes,), b"")],
    )
    stx = read_signed(utxo_pb2.SignedUtxoTransaction(transaction=raw).SerializeToString())
    values: ValueCodec = cipher(tmp_path) if encrypted else PLAIN
    store = VaultStore(tmp_path / "vault.sqlite", values=values)
    await store.open()
    try:
        await store.record(stx, [0], [("n1", False)])
        assert (await store.transactions([stx.wire.tx_id]))[stx.wire.tx_id] == stx.raw
        [row] = await store.query(owner=owner)
        assert canary.encode() in row.output.data
        [delivery] = await store.outbox(10)
        assert delivery.stx == stx.raw
        assert await store.ancestors([stx.wire.tx_id], 10) == set()
        files = node_files(tmp_path, "vault.sqlite")
        assert (count(files, canary.encode()) == 0) is encrypted
    finally:
        await store.close()
