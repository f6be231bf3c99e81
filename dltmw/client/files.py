"""A client's material in a network directory made by `dltmw init`, loaded in one place.

`clients/<client_id>/client.toml` names the client's org, its default gateway and its files
(identity certificate and key, TLS certificate and key, TLS roots, address book, network map);
paths are relative to that file. Every SDK entry point (gateway, UTXO, privacy) loads it here.

Across hosts, the client finds nodes without a shared address book: its gateway's advertised
endpoint is in client.toml (`gateway_endpoint`, certified by `gateway_ca`), and the endpoints of
every peer and orderer are in the channel config blocks of the network directory
(`channels/*.block`, verified as a node verifies them when it joins).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from dltmw.core.genesis import read_genesis
from dltmw.core.identity import SigningIdentity
from dltmw.core.identity_table import takes_client_references
from dltmw.net.addressbook import AddressBook, Route, routes, split_endpoint
from dltmw.net.signer import key_ref, load_signer
from dltmw.rpc.tls import TlsMaterial
from dltmw.v1.block_pb2 import Block


@dataclass(frozen=True)
class ClientFiles:
    """A client's identity, TLS material, address book and the paths of its other files."""

    client_id: str
    gateway: str | None
    signer: SigningIdentity
    tls: TlsMaterial
    addresses: AddressBook
    files: dict[str, Path]
    # channels whose genesis config lets clients sign per batch (`client/creator_signing.py`)
    creator_batches: frozenset[str] = frozenset()
    # channels whose genesis config lets them sign private envelopes per batch too
    private_creator_batches: frozenset[str] = frozenset()
    # channels whose genesis config lets clients name themselves by reference
    # (`core/identity_table.py`; the client's first guess, corrected by the nodes' answers)
    client_references: frozenset[str] = frozenset()

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
        addresses = AddressBook(files["address_book"])
        batched: set[str] = set()
        private_batched: set[str] = set()
        referenced: set[str] = set()
        for block in sorted((network_dir / "channels").glob("*.block")):
            config = read_genesis(Block.FromString(block.read_bytes())).config
            addresses.learn(routes(config))
            if config.creator_batches:
                batched.add(config.channel_id)
            if config.private_creator_batches:
                private_batched.add(config.channel_id)
            if takes_client_references(config):
                referenced.add(config.channel_id)
        gateway = cfg["client"].get("gateway")
        endpoint = cfg["client"].get("gateway_endpoint")
        if gateway and endpoint:
            ca = files.get("gateway_ca", files["org_ca"]).read_bytes()
            addresses.learn({gateway: Route(endpoint, split_endpoint(endpoint)[0], ca)})
        return ClientFiles(
            client_id=client_id,
            gateway=gateway,
            signer=signer,
            tls=TlsMaterial.load(files["tls_cert"], files["tls_key"], files["tls_roots"]),
            addresses=addresses,
            files=files,
            creator_batches=frozenset(batched),
            private_creator_batches=frozenset(private_batched),
            client_references=frozenset(referenced),
        )
