"""Installed contract packages of one node: `data/contracts/<package id>.zip`, durable.

Install checks the package completely before anything is written (`contract_sdk/loader.py`:
canonical bytes, limits, manifest, the static check, and that it loads), so a refused package
leaves nothing behind; then it writes a temporary file, fsyncs it, renames it into place and
fsyncs the directory, so after a crash a package is either fully installed or absent. The file
name is the id; a file whose bytes no longer hash to its name is ignored (and logged), never run.

Peers look packages up by id (`contract`) from their admission path, on the thread pool; a
package is loaded once per process and cached (loading is CPU work: parse, check, instrument,
compile). Nothing is ever removed: an installed package is immutable, like its id.

Vaults and notaries keep UTXO contract packages here too (`"kind": "utxo"`). Their verifiers
look code up while they verify, so they never touch the disk then: `preload` loads every
installed package when the node starts (on a worker thread), `install` adds a new one to the
cache, and `verify` answers from the cache alone (`runtime/utxo_code.py`).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from dltmw.aio.files import write_durably
from dltmw.contract_sdk.loader import LoadedPackage, load_package
from dltmw.contract_sdk.utxo_runner import MeteredVerify
from dltmw.core.contract import Contract
from dltmw.core.contract_package import PackageError, package_id
from dltmw.v1 import admin_service_pb2

logger = logging.getLogger(__name__)
SUFFIX = ".zip"
INSTALLED_MAX = 1000  # bounded: the ids a node holds


def describe(loaded: LoadedPackage) -> admin_service_pb2.InstalledContract:
    """The wire description of a loaded package."""
    return admin_service_pb2.InstalledContract(
        package_id=loaded.package_id,
        name=loaded.manifest.name,
        version=loaded.manifest.version,
        functions=[f"{n} ({k})" for n, k in sorted(loaded.functions.items())],
    )


class ContractStore:
    """The packages installed on one node (blocking file I/O: call from a worker thread)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._loaded: dict[str, LoadedPackage] = {}
        self._lock = threading.Lock()

    def install(self, data: bytes) -> tuple[LoadedPackage, bool]:
        """Check, then store `data`; (the loaded package, whether it was installed before).
        PackageError (nothing stored) if the package is refused."""
        loaded = load_package(data)
        path = self._path(loaded.package_id)
        with self._lock:
            if path.exists():
                self._loaded.setdefault(loaded.package_id, loaded)
                return self._loaded[loaded.package_id], True
            if len(self.ids()) >= INSTALLED_MAX:
                raise PackageError("too_many", f"{INSTALLED_MAX} packages are installed already")
            self._write(path, data)
            self._loaded[loaded.package_id] = loaded
        logger.info("installed contract package %s (%s)", loaded.package_id, loaded.manifest.name)
        return loaded, False

    def install_package(self, data: bytes) -> tuple[admin_service_pb2.InstalledContract, bool]:
        """`install`, described for the wire (AdminService.InstallContract)."""
        loaded, before = self.install(data)
        return describe(loaded), before

    def _write(self, path: Path, data: bytes) -> None:
        write_durably(path, data)

    def ids(self) -> list[str]:
        """Ids of the installed packages, sorted."""
        if not self.directory.is_dir():
            return []
        return sorted(p.name.removesuffix(SUFFIX) for p in self.directory.glob(f"*{SUFFIX}"))

    def package(self, pid: str) -> LoadedPackage | None:
        """The installed package `pid`, loaded (cached), or None if not installed here."""
        with self._lock:
            found = self._loaded.get(pid)
        if found is not None:
            return found
        path = self._path(pid)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        if package_id(data) != pid:
            logger.error("contract package %s is corrupt (its bytes hash otherwise)", path)
            return None
        try:
            loaded = load_package(data)
        except PackageError as exc:  # installed by an older, laxer version of the check
            logger.error("installed contract package %s no longer loads: %s", pid, exc.message)
            return None
        with self._lock:
            return self._loaded.setdefault(pid, loaded)

    def preload(self) -> int:
        """Load (and cache) every installed package; how many loaded."""
        loaded = 0
        for pid in self.ids():
            try:
                loaded += self.package(pid) is not None
            except PackageError as exc:  # a stray file whose name is no package id
                logger.error("%s: not a contract package: %s", pid, exc.message)
        return loaded

    def verify(self, pid: str) -> MeteredVerify | None:
        """The verify of UTXO package `pid` if it is installed and loaded (memory only: see
        the module docstring), else None."""
        with self._lock:
            found = self._loaded.get(pid)
        return found.verify if found is not None else None

    def contract(self, pid: str) -> Contract | None:
        """The contract of installed package `pid`, or None."""
        loaded = self.package(pid)
        return loaded.contract if loaded else None

    def named(self, name: str) -> list[str]:
        """Ids of the installed packages whose manifest names contract `name` (loads them)."""
        return [pid for pid in self.ids() if (p := self.package(pid)) and p.manifest.name == name]

    def installed(self) -> list[admin_service_pb2.InstalledContract]:
        """Every installed package, described, by id."""
        return [describe(p) for pid in self.ids() if (p := self.package(pid)) is not None]

    def _path(self, pid: str) -> Path:
        if len(pid) != 64 or not all(c in "0123456789abcdef" for c in pid):
            raise PackageError("bad_id", f"{pid!r} is not a package id")
        return self.directory / f"{pid}{SUFFIX}"
