"""A client's material in a network directory made by `dltmw init`, loaded in one place.

`clients/<client_id>/client.toml` names the client's org, its default gateway and its files
(identity certificate and key, TLS certificate and key, TLS roots, address book, network map);
paths are relative to that file. Every SDK entry point (gateway, UTXO, privacy) loads it here.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from dltmw.core.identity import SigningIdentity
from dltmw.net.addressbook import AddressBook
from dltmw.net.signer import key_ref, load_signer
from dltmw.rpc.tls import TlsMaterial


@dataclass(frozen=True)
class ClientFiles:
    """A client's identity, TLS material, address book and the paths of its other files."""

    client_id: str
    gateway: str | None
    signer: SigningIdentity
    tls: TlsMaterial
    addresses: AddressBook
    files: dict[str, Path]

    @staticmethod
    def load(network_dir: Path, client_id: str) -> ClientFiles:
        """Load `clients/<client_id>/client.toml`; KeyError names a missing entry."""
        home = network_dir / "clients" / client_id
        with (home / "client.toml").open("rb") as f:
            cfg = tomllib.load(f)
        names = {k: v for k, v in cfg["files"].items() if k != "identity_key"}
        files = {k: (home / v).resolve() for k, v in names.items()}
        key = key_ref(home, cfg["files"]["identity_key"])
        if isinstance(key, Path):
            files["identity_key"] = key.resolve()
        signer = load_signer(cfg["client"]["org"], files["identity_cert"], key)
        return ClientFiles(
            client_id=client_id,
            gateway=cfg["client"].get("gateway"),
            signer=signer,
            tls=TlsMaterial.load(files["tls_cert"], files["tls_key"], files["tls_roots"]),
            addresses=AddressBook(files["address_book"]),
            files=files,
        )
