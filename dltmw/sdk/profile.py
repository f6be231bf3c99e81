"""Connection profiles: who the client is and which gateways it may use, in one file.

A program that embeds dltmw should not depend on the directory layout `dltmw init` writes: a
profile names the client's identity (org, certificate, key), its TLS material and an ordered
list of gateways (the TLS server name each must present and either a fixed `host:port` or an
address book directory to resolve it from, for nodes that listen on ephemeral ports). The SDK
tries the gateways in order and fails over to the next when one is unreachable.

A profile is TOML (or a dict); unknown keys are refused with their path, like every other dltmw
config (pydantic, `extra="forbid"`). `Profile.from_network` builds one from a `dltmw init`
directory: the client's default gateway first, then the other gateways of its org.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dltmw.core.identity import SigningIdentity
from dltmw.net.hsm import HsmError, is_uri
from dltmw.net.keyfile import KeyFileError
from dltmw.net.signer import key_ref, load_signer
from dltmw.net.topology import Topology
from dltmw.rpc.tls import TlsMaterial

__all__ = ["GatewayEndpoint", "Profile", "ProfileError"]


def _key_relative_to(key: str, fix: Callable[[Path], Path]) -> str:
    """A key file's path made absolute; a PKCS#11 URI unchanged."""
    return key if is_uri(key) else str(fix(Path(key)))


class ProfileError(ValueError):
    """A profile that cannot be used (names the key path or the file)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IdentityFiles(_Strict):
    """The client's signing identity."""

    org: str = Field(min_length=1, description="the client's organisation (MSP id)")
    cert: Path = Field(description="identity certificate (PEM)")
    key: str = Field(
        min_length=1,
        description="identity private key: a PEM file or a PKCS#11 URI (pkcs11:token=..;object=..)",
    )


class TlsFiles(_Strict):
    """The client's TLS certificate and the roots it trusts."""

    cert: Path
    key: Path
    roots: Path


class GatewayEndpoint(_Strict):
    """One gateway: the TLS name it presents and where to reach it."""

    name: str = Field(min_length=1, description="node id = the TLS server name it presents")
    address: str = Field("", description="host:port; empty: resolve `name` in address_book")
    address_book: Path | None = Field(None, description="directory of published addresses")

    @model_validator(mode="after")
    def _reachable(self) -> GatewayEndpoint:
        if not self.address and self.address_book is None:
            raise ValueError(f"gateway {self.name}: give an address or an address_book")
        return self


class Profile(_Strict):
    """Everything a client needs to connect: identity, TLS, gateways in order of preference."""

    client_id: str = Field(min_length=1)
    identity: IdentityFiles
    tls: TlsFiles
    gateways: tuple[GatewayEndpoint, ...] = Field(min_length=1)

    @staticmethod
    def load(path: Path) -> Profile:
        """Read a TOML profile; relative paths are relative to the file."""
        try:
            with path.open("rb") as f:
                raw = tomllib.load(f)
            return Profile.from_dict(raw, base=path.parent)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ProfileError(f"{path}: {exc}") from exc

    @staticmethod
    def from_dict(raw: dict[str, Any], base: Path = Path(".")) -> Profile:
        """Validate a profile given as a dict (paths relative to `base`)."""
        try:
            profile = Profile.model_validate(raw)
        except ValidationError as exc:
            raise ProfileError(_describe(exc)) from exc
        return profile._relative_to(base)

    @staticmethod
    def from_network(network_dir: Path, client_id: str) -> Profile:
        """The profile of `client_id` in a `dltmw init` directory (module docstring)."""
        home = network_dir / "clients" / client_id
        try:
            with (home / "client.toml").open("rb") as f:
                cfg = tomllib.load(f)
        except OSError as exc:
            raise ProfileError(f"no client {client_id!r} in {network_dir}: {exc}") from exc
        files = {k: (home / v).resolve() for k, v in cfg["files"].items() if k != "identity_key"}
        key = key_ref(home, cfg["files"]["identity_key"])
        key_text = str(key.resolve() if isinstance(key, Path) else key)
        org = cfg["client"]["org"]
        topology = Topology.load(network_dir / "topology.toml").raw
        same_org = [
            n["id"] for n in topology["nodes"] if n["org"] == org and "gateway" in n["roles"]
        ]
        first = cfg["client"].get("gateway")
        endpoint = cfg["client"].get("gateway_endpoint", "")  # advertised (across hosts)
        names = ([first] if first else []) + [n for n in same_org if n != first]
        if not names:
            raise ProfileError(f"client {client_id}: no gateway in its org {org}")
        book = files["address_book"]
        return Profile(
            client_id=client_id,
            identity=IdentityFiles(org=org, cert=files["identity_cert"], key=key_text),
            tls=TlsFiles(cert=files["tls_cert"], key=files["tls_key"], roots=files["tls_roots"]),
            gateways=tuple(
                GatewayEndpoint(name=n, address=endpoint if n == first else "", address_book=book)
                for n in names
            ),
        )

    def signer(self) -> SigningIdentity:
        """The client's signing identity, loaded from its files."""
        try:
            key = key_ref(Path("."), self.identity.key)
            return load_signer(self.identity.org, self.identity.cert, key)
        except (OSError, KeyFileError, HsmError) as exc:
            raise ProfileError(f"client {self.client_id}: {exc}") from exc

    def tls_material(self) -> TlsMaterial:
        """The client's TLS material, loaded from its files."""
        try:
            return TlsMaterial.load(self.tls.cert, self.tls.key, self.tls.roots)
        except (OSError, KeyFileError) as exc:
            raise ProfileError(f"client {self.client_id}: {exc}") from exc

    def _relative_to(self, base: Path) -> Profile:
        def fix(p: Path) -> Path:
            return p if p.is_absolute() else (base / p).resolve()

        return Profile(
            client_id=self.client_id,
            identity=IdentityFiles(
                org=self.identity.org,
                cert=fix(self.identity.cert),
                key=_key_relative_to(self.identity.key, fix),
            ),
            tls=TlsFiles(cert=fix(self.tls.cert), key=fix(self.tls.key), roots=fix(self.tls.roots)),
            gateways=tuple(
                g.model_copy(
                    update={"address_book": fix(g.address_book) if g.address_book else None}
                )
                for g in self.gateways
            ),
        )


def _describe(exc: ValidationError) -> str:
    """One line per problem, each with its key path."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '<profile>'}: {e['msg']}" for e in exc.errors()
    )
