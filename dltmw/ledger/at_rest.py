"""Encryption at rest: one AEAD per stored record, under a node data key wrapped by the node's key.

Why: the private state, the private payloads and a vault's transactions and states sit in sqlite
files that an insider with file access (a backup, a copied disk, a support engineer) can read;
the paper's "peeping by insiders". With a `storage_key` in node.toml each record VALUE of those
stores is encrypted before it reaches SQL, so no plaintext reaches the database file, its WAL or
its shared-memory file. Keys and indexes (namespaces and key names, hashes, tx ids, owners) stay
in clear: they are what the stores look records up by.

Theory of operation:

* Record format: MAGIC (1 byte) || key id (u32 big-endian) || nonce (12 bytes) || AES-256-GCM
  ciphertext with tag. Associated data: "dltmw/at-rest/v1" || table label || 0x00 || record id
  (e.g. namespace 0x00 key, a payload hash, a tx id), so a value moved to another row or table
  does not decrypt (a swap is detected, not silently served).
* Data keys (DEKs): fresh 32-byte keys, each with a key id. They live in `<data_dir>/data-keys`
  (JSON), each wrapped (AES-256-GCM, associated data "dltmw/at-rest/dek/v1" || key id) under
  kek = HKDF-SHA256(the node's storage key, info "dltmw/at-rest/kek/v1"). The storage key is a
  key file (`storage.key`, written by `dltmw init`) read like every other private key
  (`net/keyfile.py`): encrypted under the operator's passphrase when one is given, so the data
  keys are as safe as the node's signing key file. (A PKCS#11 token could hold the kek instead;
  not done: `docs/privacy.md`, "Encryption at rest".)
* Rotation without downtime (`DataKeyRing.rotate`, `POST /data-key/rotate` on the operations
  endpoint): a new DEK becomes current for writes; older
  ones stay for reading the records they wrote (the key id in each record names its key), so
  nothing is rewritten at once and nodes keep serving. Old records move to the new key when they
  are next written; retiring an old key after a full re-encryption is left for later.
* Costs: one AES-GCM per record written or read (~1-2 µs for small values) and 33 bytes per
  record; measured in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from dltmw.aio.files import write_durably
from dltmw.core.errors import InvariantViolation

MAGIC = b"\xe1"
KEY_ID_BYTES = 4
NONCE_BYTES = 12
HEADER_BYTES = len(MAGIC) + KEY_ID_BYTES + NONCE_BYTES
RECORD_AD = b"dltmw/at-rest/v1"
DEK_AD = b"dltmw/at-rest/dek/v1"
KEK_INFO = b"dltmw/at-rest/kek/v1"
KEYS_FILE = "data-keys"
KEYS_MAX = 64  # rotations kept readable; far more than a node's life should need


class RecordUnreadable(InvariantViolation):
    """A stored record that does not decrypt: altered or moved on disk, or another node's file."""


def storage_kek(key_pem: bytes) -> bytes:
    """The 32-byte kek from the node's storage key file (plain PKCS#8 PEM, already decrypted)."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return HKDF(hashes.SHA256(), 32, None, KEK_INFO).derive(raw)


def _key_ad(key_id: int) -> bytes:
    return DEK_AD + key_id.to_bytes(KEY_ID_BYTES, "big")


class DataKeyRing:
    """The node's data keys: one current (for writes), every earlier one (for reads)."""

    def __init__(self, path: Path, kek: bytes) -> None:
        self._path = path
        self._kek = AESGCM(kek)
        self._keys: dict[int, AESGCM] = {}
        self._wrapped: dict[int, tuple[bytes, bytes]] = {}
        self.current = 0
        if path.exists():
            self._load()
        else:
            self.rotate()

    def _load(self) -> None:
        doc = json.loads(self._path.read_text())
        for entry in doc["keys"]:
            key_id = int(entry["id"])
            nonce, wrapped = bytes.fromhex(entry["nonce"]), bytes.fromhex(entry["wrapped"])
            try:
                dek = self._kek.decrypt(nonce, wrapped, _key_ad(key_id))
            except InvalidTag as exc:
                raise RecordUnreadable(
                    f"{self._path}: data key {key_id} does not unwrap (another node's storage "
                    "key, or an altered file)"
                ) from exc
            self._keys[key_id] = AESGCM(dek)
            self._wrapped[key_id] = (nonce, wrapped)
        self.current = int(doc["current"])
        if self.current not in self._keys:
            raise RecordUnreadable(f"{self._path}: current data key {self.current} missing")

    def rotate(self) -> int:
        """Make a fresh data key current (written durably first); returns its id."""
        if len(self._keys) >= KEYS_MAX:
            raise InvariantViolation(f"{self._path}: {KEYS_MAX} data keys already")
        key_id = max(self._keys, default=0) + 1
        dek, nonce = secrets.token_bytes(32), secrets.token_bytes(NONCE_BYTES)
        wrapped = self._kek.encrypt(nonce, dek, _key_ad(key_id))
        self._wrapped[key_id] = (nonce, wrapped)
        self._save(key_id)
        self._keys[key_id] = AESGCM(dek)
        self.current = key_id
        return key_id

    def _save(self, current: int) -> None:
        doc = {
            "current": current,
            "keys": [
                {"id": i, "nonce": n.hex(), "wrapped": w.hex()}
                for i, (n, w) in sorted(self._wrapped.items())
            ],
        }
        write_durably(self._path, json.dumps(doc), mode=0o600)

    def key(self, key_id: int) -> AESGCM:
        """The data key `key_id` (RecordUnreadable if this ring never had it)."""
        found = self._keys.get(key_id)
        if found is None:
            raise RecordUnreadable(f"record under unknown data key {key_id}")
        return found


class RecordCipher:
    """Seal and open record values for one store file (`label` names the table in the AD)."""

    def __init__(self, ring: DataKeyRing) -> None:
        self.ring = ring

    def seal(self, table: str, record_id: bytes, value: bytes) -> bytes:
        """The stored form of `value`: header, then AES-256-GCM under the current data key."""
        key_id = self.ring.current
        nonce = secrets.token_bytes(NONCE_BYTES)
        ad = RECORD_AD + table.encode() + b"\0" + record_id
        body = self.ring.key(key_id).encrypt(nonce, value, ad)
        return MAGIC + key_id.to_bytes(KEY_ID_BYTES, "big") + nonce + body

    def open(self, table: str, record_id: bytes, stored: bytes) -> bytes:
        """The value of a stored record; RecordUnreadable if it is not one this node sealed for
        this table and id."""
        if len(stored) < HEADER_BYTES or stored[:1] != MAGIC:
            raise RecordUnreadable(f"{table} record is not encrypted (or is damaged)")
        key_id = int.from_bytes(stored[1 : 1 + KEY_ID_BYTES], "big")
        nonce = stored[1 + KEY_ID_BYTES : HEADER_BYTES]
        ad = RECORD_AD + table.encode() + b"\0" + record_id
        try:
            return self.ring.key(key_id).decrypt(nonce, stored[HEADER_BYTES:], ad)
        except InvalidTag as exc:
            raise RecordUnreadable(f"{table} record does not authenticate") from exc


def state_id(namespace: str, key: str) -> bytes:
    """The record id of a state entry: namespace 0x00 key."""
    return namespace.encode() + b"\0" + key.encode()


def open_cipher(data_dir: Path, key_pem: bytes) -> RecordCipher:
    """The node's record cipher: its data keys (created on first use) under its storage key."""
    return RecordCipher(DataKeyRing(data_dir / KEYS_FILE, storage_kek(key_pem)))


class PlainValues:
    """No encryption (a node without a storage key): values are stored as they are."""

    def seal(self, table: str, record_id: bytes, value: bytes) -> bytes:
        """`value` unchanged."""
        return value

    def open(self, table: str, record_id: bytes, stored: bytes) -> bytes:
        """`stored` unchanged."""
        return stored


ValueCodec = RecordCipher | PlainValues
PLAIN = PlainValues()
