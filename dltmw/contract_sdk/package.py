"""`dltmw contract package DIR`: a contract directory to canonical package bytes.

A contract directory holds `contract.json` (`{"name": ..., "version": ..., "entry":
"module:Class"}`, or for a UTXO contract `"kind": "utxo"` and `"entry": "module:verify"`) and
flat `*.py` modules; `__pycache__`, tests (`test_*.py`) and other files are not packaged.
The SDK version is the one this dltmw implements. The bytes depend on the content only
(`core/contract_package.py`), so the same directory gives the same package id on any
machine; the static check runs here too, so a refusal shows up before anyone installs.
"""

from __future__ import annotations

import json
from pathlib import Path

from dltmw.contract_sdk.loader import PackageRefused
from dltmw.core.contract_check import check_sources
from dltmw.core.contract_package import CHANNEL_KIND, Manifest, PackageError, write_package

SOURCE_MANIFEST = "contract.json"


def read_dir(directory: Path) -> tuple[Manifest, dict[str, str]]:
    """The manifest and module sources of a contract directory (PackageError if malformed)."""
    try:
        fields = json.loads((directory / SOURCE_MANIFEST).read_text(encoding="utf-8"))
        manifest = Manifest(
            str(fields["name"]),
            str(fields["version"]),
            str(fields["entry"]),
            kind=str(fields.get("kind", CHANNEL_KIND)),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PackageError("bad_manifest", f"{directory / SOURCE_MANIFEST}: {exc}") from None
    files = {
        p.name: p.read_text(encoding="utf-8")
        for p in sorted(directory.glob("*.py"))
        if not p.name.startswith("test_")
    }
    return manifest, files


def package_dir(directory: Path) -> bytes:
    """Canonical package bytes of a contract directory (PackageRefused on static findings)."""
    manifest, files = read_dir(directory)
    findings = check_sources(files)
    if findings:
        raise PackageRefused(findings)
    return write_package(manifest, files)
