"""Contract packages: one canonical archive per contract version, named by its SHA-256.

A package is a ZIP archive (so `unzip -l` shows what is inside) written canonically, by our own
writer so no library default can change it: entries in sorted path order, stored (not
compressed: deflate output may differ between zlib versions, and the same content must give the
same bytes, hence the same id, on any machine), every timestamp 1980-01-01 00:00, permissions
0644, no comments, extra fields or data descriptors. The first entry is the manifest
`dltmw-contract.json` (canonical JSON: sorted keys, no spaces):

    {"entry": "contract:Counter", "name": "counter", "sdk_version": 1, "version": "1.0"}

A UTXO contract's manifest adds `"kind": "utxo"` and its entry names a function,
`module:verify` (docs/utxo.md "Installed UTXO contracts"); a channel contract's manifest has no
`kind` key at all (so the ids of every package written before kinds existed are unchanged, and
`"kind": ""` is not canonical). Then the modules: flat `*.py` files whose names are Python
identifiers, UTF-8. `read_package` accepts only archives that `write_package` would produce
from their own content (it rebuilds and compares the bytes), so one content has exactly one
package id — the id a lifecycle definition will name (`PackageRef` below is what it carries).

Limits are protocol constants, checked before anything is parsed: a package of at most
`PACKAGE_BYTES_MAX` bytes and `FILES_MAX` modules.
"""

from __future__ import annotations

import io
import json
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass

from dltmw.core.hashing import sha256

MANIFEST = "dltmw-contract.json"
SDK_VERSION = 1
PACKAGE_BYTES_MAX = 1024 * 1024
FILES_MAX = 64
NAME = re.compile(r"[a-z][a-z0-9_]{0,63}\Z")
VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,31}\Z")
MODULE_FILE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\.py\Z")
ENTRY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*):([A-Za-z_][A-Za-z0-9_]*)\Z")
CHANNEL_KIND = ""  # a channel contract (an SDK Contract class): the manifest says nothing
UTXO_KIND = "utxo"  # a UTXO contract: the entry is a `verify(tx)` function
KINDS = (CHANNEL_KIND, UTXO_KIND)
DOS_DATE = (0 << 9) | (1 << 5) | 1  # 1980-01-01, time 00:00 (the earliest a ZIP can say)


class PackageError(ValueError):
    """Bytes that are not a valid contract package; `reason` names which rule failed."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Manifest:
    """What a package says about itself."""

    name: str
    version: str
    entry: str  # "module:Class" ("module:function" for a UTXO contract)
    sdk_version: int = SDK_VERSION
    kind: str = CHANNEL_KIND

    def to_json(self) -> bytes:
        """Canonical JSON bytes (`kind` only when it is not a channel contract's)."""
        fields: dict[str, str | int] = {
            "entry": self.entry,
            "name": self.name,
            "sdk_version": self.sdk_version,
            "version": self.version,
        }
        if self.kind != CHANNEL_KIND:
            fields["kind"] = self.kind
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class PackageRef:
    """How a lifecycle definition names a package: name, version and the id of its bytes."""

    name: str
    version: str
    package_id: str  # lower-case hex SHA-256 of the package bytes


@dataclass(frozen=True)
class Package:
    """A parsed package: its id, manifest and module sources."""

    package_id: str
    manifest: Manifest
    files: dict[str, str]

    @property
    def ref(self) -> PackageRef:
        """The reference a lifecycle definition carries."""
        return PackageRef(self.manifest.name, self.manifest.version, self.package_id)


def package_id(data: bytes) -> str:
    """The id of package bytes: lower-case hex SHA-256."""
    return sha256(data).hex()


def validate_manifest(manifest: Manifest, files: dict[str, str]) -> None:
    """PackageError unless the manifest and module names follow the rules."""
    if not NAME.match(manifest.name):
        raise PackageError("bad_name", f"contract name {manifest.name!r} must match {NAME.pattern}")
    if not VERSION.match(manifest.version):
        raise PackageError("bad_version", f"version {manifest.version!r} is not allowed")
    if manifest.kind not in KINDS:
        raise PackageError("bad_kind", f"kind {manifest.kind!r} is not one of {KINDS}")
    if manifest.sdk_version != SDK_VERSION:
        raise PackageError("sdk_version", f"SDK version {manifest.sdk_version} is not supported")
    match = ENTRY.match(manifest.entry)
    if not match or f"{match.group(1)}.py" not in files:
        raise PackageError("bad_entry", f"entry {manifest.entry!r} is not module:Class of a file")
    if not files or len(files) > FILES_MAX:
        raise PackageError("file_count", f"a package holds 1..{FILES_MAX} modules")
    for path in files:
        if not MODULE_FILE.match(path):
            raise PackageError("bad_path", f"{path!r}: modules are flat identifier.py files")


def write_package(manifest: Manifest, files: dict[str, str]) -> bytes:
    """The canonical package bytes of `manifest` and `files` ({"contract.py": source})."""
    validate_manifest(manifest, files)
    entries = [(MANIFEST, manifest.to_json())]
    entries += [(path, files[path].encode()) for path in sorted(files)]
    data = _stored_zip(entries)
    if len(data) > PACKAGE_BYTES_MAX:
        raise PackageError("too_large", f"package of {len(data)} bytes > {PACKAGE_BYTES_MAX}")
    return data


def _stored_zip(entries: list[tuple[str, bytes]]) -> bytes:
    """A ZIP of stored entries, every field fixed (APPNOTE 4.3): written here rather than by
    `zipfile`, whose header defaults may change between Python versions — the bytes are the
    package's identity, so they must not."""
    local: list[bytes] = []
    central: list[bytes] = []
    offset = 0
    for path, content in entries:
        name = path.encode()
        crc = zlib.crc32(content)
        fixed = struct.pack("<HHHHHIII", 20, 0, 0, 0, DOS_DATE, crc, len(content), len(content))
        header = b"PK\x03\x04" + fixed + struct.pack("<HH", len(name), 0) + name
        local.append(header + content)
        central.append(
            b"PK\x01\x02"
            + struct.pack("<H", (3 << 8) | 20)
            + fixed
            + struct.pack("<HHHHHII", len(name), 0, 0, 0, 0, 0o100644 << 16, offset)
            + name
        )
        offset += len(header) + len(content)
    directory = b"".join(central)
    end = b"PK\x05\x06" + struct.pack(
        "<HHHHIIH", 0, 0, len(entries), len(entries), len(directory), offset, 0
    )
    return b"".join(local) + directory + end


def read_package(data: bytes) -> Package:
    """Parse and check package bytes; PackageError (with a reason) if they are not canonical."""
    if len(data) > PACKAGE_BYTES_MAX:
        raise PackageError("too_large", f"package of {len(data)} bytes > {PACKAGE_BYTES_MAX}")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
            if len(infos) > FILES_MAX + 1 or sum(i.file_size for i in infos) > PACKAGE_BYTES_MAX:
                raise PackageError("too_large", "too many or too large entries")
            contents = {i.filename: archive.read(i) for i in infos}
    except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError) as exc:
        if isinstance(exc, PackageError):
            raise
        raise PackageError("not_a_package", f"not a contract package: {exc}") from None
    raw_manifest = contents.pop(MANIFEST, None)
    if raw_manifest is None:
        raise PackageError("no_manifest", f"the package has no {MANIFEST}")
    manifest = _manifest(raw_manifest)
    try:
        files = {path: content.decode() for path, content in contents.items()}
    except UnicodeDecodeError:
        raise PackageError("not_utf8", "a module is not UTF-8") from None
    if write_package(manifest, files) != data:
        raise PackageError("not_canonical", "the archive is not in canonical form")
    return Package(package_id(data), manifest, files)


def _manifest(raw: bytes) -> Manifest:
    try:
        fields = json.loads(raw)
        manifest = Manifest(
            name=str(fields["name"]),
            version=str(fields["version"]),
            entry=str(fields["entry"]),
            sdk_version=int(fields["sdk_version"]),
            kind=str(fields.get("kind", CHANNEL_KIND)),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise PackageError("bad_manifest", f"{MANIFEST} does not parse: {exc}") from None
    return manifest
