"""`dltmw channel update|join`, `dltmw org add|remove`, `dltmw cert revoke` (docs/governance.md).

Building an update reads the channel's CURRENT config (replayed from an orderer's blocks,
`client/governance.py`), applies the edit (`core/config_edit.py`) and writes the unsigned
update to a file; each admin then adds a signature with `channel update --sign FILE`, and any
member submits it with `channel update --submit FILE`, which prints the validation code.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import grpc
import typer
from cryptography import x509
from google.protobuf.message import DecodeError

from dltmw.cli import params
from dltmw.cli.custody import cert_app, channel_app, org_app
from dltmw.cli.errors import UserError
from dltmw.cli.params import ChannelArg, NetworkDir, NodeArg
from dltmw.client.contracts import NodeAdmin
from dltmw.client.files import ClientFiles
from dltmw.client.governance import (
    current_config,
    genesis_of,
    sign_update_file,
    submit_update,
)
from dltmw.core import config_edit
from dltmw.core.block import block_hash
from dltmw.core.config_update import update_content
from dltmw.core.genesis import read_genesis
from dltmw.net.netmap import NetworkMap
from dltmw.pki.network import agreement_settings
from dltmw.pki.org import DefinitionError, check_definition, load_definition, node_entry
from dltmw.rpc.status import reason_of
from dltmw.runtime.config import NodeConfig
from dltmw.v1 import block_pb2, config_pb2, config_update_pb2, transaction_pb2

# `dltmw org` and `dltmw channel` are shared with the custody commands (org init, channel create)

OutOpt = Annotated[Path, typer.Option("--out", "-o", help="file to write the unsigned update to")]
AsOpt = Annotated[
    str, typer.Option("--client", "-c", help="client that reads the config / signs / submits")
]


def _check_channel(network: Path, channel: str) -> None:
    """UserError unless the network has `channel` and its first orderer is running."""
    if not (network / "channels" / f"{channel}.block").is_file():
        raise UserError(f"no channel {channel!r} in {network}")
    params.check_running(network, read_genesis(genesis_of(network, channel)).orderer_ids()[0])


def _write_update(
    network: Path, channel: str, client: str, out: Path, edit: config_edit.Edit
) -> None:
    _check_channel(network, channel)
    view = asyncio.run(current_config(network, client, channel))
    try:
        new = edit(view.config)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    update = config_update_pb2.ConfigUpdate(content=update_content(view, new))
    out.write_bytes(update.SerializeToString())
    typer.echo(f"{out}: update of {channel} from sequence {view.sequence} (unsigned)")


@channel_app.command("update")
def update(
    network: NetworkDir,
    channel: ChannelArg,
    client: AsOpt = "",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="write a new update")] = None,
    sign: Annotated[Path | None, typer.Option("--sign", help="add --client's signature")] = None,
    submit: Annotated[Path | None, typer.Option("--submit", help="submit this update")] = None,
    endorsement_policy: Annotated[str | None, typer.Option(help="default policy")] = None,
    admin_policy: Annotated[str | None, typer.Option(help="policy config updates need")] = None,
    lifecycle_policy: Annotated[
        str | None, typer.Option(help="policy committing a contract definition needs")
    ] = None,
    max_tx_count: Annotated[int | None, typer.Option(help="block cutting: tx per block")] = None,
    timeout_ms: Annotated[int | None, typer.Option(help="block cutting: batch timeout")] = None,
    add_peer: Annotated[
        str | None, typer.Option(help="a peer of a member org to add (from nodes/NODE)")
    ] = None,
    remove_peer: Annotated[str | None, typer.Option(help="a peer to take out")] = None,
    add_orderer: Annotated[
        str | None,
        typer.Option(
            help="an orderer node to add (nodes/NODE): a PBFT-lite replica or a JetStream orderer"
        ),
    ] = None,
    remove_orderer: Annotated[str | None, typer.Option(help="an orderer to take out")] = None,
    rotate_peer: Annotated[
        str | None, typer.Option(help="a peer whose renewed identity (nodes/NODE) replaces its own")
    ] = None,
    trust_genesis: Annotated[
        Path | None,
        typer.Option(help="block 0 of another channel whose proofs this channel accepts"),
    ] = None,
    trust_notary: Annotated[
        str | None,
        typer.Option(help="a notary node (nodes/NODE) whose notarisations this channel accepts"),
    ] = None,
    private_agreement: Annotated[
        str | None,
        typer.Option(
            help="agreements private transactions need: all-recipients, none, or a policy"
            " expression such as 'OutOf(2, Org1.peer, Org2.peer, Org3.peer)'"
        ),
    ] = None,
    private_agreement_batches: Annotated[
        bool | None,
        typer.Option(
            "--private-agreement-batches/--no-private-agreement-batches",
            help="parties sign one root per batch of agreements (upgrade every peer first)",
        ),
    ] = None,
    creator_batches: Annotated[
        bool | None,
        typer.Option(
            "--creator-batches/--no-creator-batches",
            help="clients sign one root per request's proposals and envelopes (upgrade every"
            " node first)",
        ),
    ] = None,
    endorsement_batches: Annotated[
        bool | None,
        typer.Option(
            "--endorsement-batches/--no-endorsement-batches",
            help="endorsers sign one root per batch of endorsements (upgrade every peer first)",
        ),
    ] = None,
    private_creator_batches: Annotated[
        bool | None,
        typer.Option(
            "--private-creator-batches/--no-private-creator-batches",
            help="clients sign one root per request's private envelopes too (upgrade every"
            " node first)",
        ),
    ] = None,
    identity_references: Annotated[
        bool | None,
        typer.Option(
            "--identity-references/--no-identity-references",
            help="the config's peers and orderers sign by a reference to their certificate"
            " (upgrade every node first)",
        ),
    ] = None,
    client_identity_references: Annotated[
        bool | None,
        typer.Option(
            "--client-identity-references/--no-client-identity-references",
            help="clients may name themselves by a reference to a certificate an earlier block"
            " carried in full (with --identity-references; upgrade every node first)",
        ),
    ] = None,
) -> None:
    """Build (--out), sign (--sign, once per admin) or submit (--submit) a config update."""
    if sum(x is not None for x in (out, sign, submit)) != 1:
        raise UserError("give exactly one of --out, --sign, --submit")
    if not client:
        raise UserError("--client is required")
    params.check_client(network, client)
    if sign is not None:
        count = sign_update_file(sign, network, client)
        typer.echo(f"{sign}: signed by {client} ({count} signature(s))")
    elif submit is not None:
        _submit(network, channel, client, submit)
    elif out is not None:
        added = _local_entry(network, add_peer) if add_peer else None
        replica = _local_entry(network, add_orderer) if add_orderer else None
        rotated = _local_entry(network, rotate_peer) if rotate_peer else None
        trusted = _genesis_root(trust_genesis) if trust_genesis else None
        notary = _validating_notary(network, trust_notary) if trust_notary else None

        def edit(c: config_pb2.ChannelConfig) -> config_pb2.ChannelConfig:
            if added is not None:
                c = config_edit.with_peer(c, added)
            if rotated is not None:
                c = config_edit.with_rotated_peer(c, rotated)
            if remove_peer:
                c = config_edit.without_peer(c, remove_peer)
            if replica is not None:
                c = config_edit.with_orderer(c, replica)
            if remove_orderer:
                c = config_edit.without_orderer(c, remove_orderer)
            if trusted is not None:
                c = config_edit.with_trusted_channel(c, *trusted)
            if notary is not None:
                c = config_edit.with_trusted_notary(c, notary)
            return config_edit.with_settings(
                c,
                endorsement_policy=endorsement_policy,
                admin_policy=admin_policy,
                lifecycle_policy=lifecycle_policy,
                max_tx_count=max_tx_count,
                timeout_ms=timeout_ms,
                private_agreement=agreement,
                private_agreement_batches=private_agreement_batches,
                creator_batches=creator_batches,
                endorsement_batches=endorsement_batches,
                private_creator_batches=private_creator_batches,
                identity_references=identity_references,
                client_identity_references=client_identity_references,
            )

        agreement = None
        if private_agreement is not None:
            settings = agreement_settings(private_agreement)
            agreement = (
                settings["private_agreement"],
                settings.get("private_agreement_policy", ""),
            )
        _write_update(network, channel, client, out, edit)


def _genesis_root(path: Path) -> tuple[str, bytes]:
    """(channel id, block hash) of a block 0 file (`channels/CHANNEL.block` of its network)."""
    try:
        block = block_pb2.Block.FromString(path.read_bytes())
    except (OSError, DecodeError) as exc:
        raise UserError(f"{path}: not a block ({exc})") from None
    if block.header.number != 0 or not block.header.channel_id:
        raise UserError(f"{path}: not a channel's block 0")
    return block.header.channel_id, block_hash(block)


def _validating_notary(network: Path, node: str) -> bytes:
    """The identity of notary `node`, which must be a validating one (a channel relies on its
    having run the contracts: docs/cross-channel.md "Across flows")."""
    try:
        validating = NetworkMap.load(network / "network-map.toml").validating
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"{network}: no readable network map ({exc})") from None
    if node not in validating:
        raise UserError(f"{node} is not a notary of this network")
    if not validating[node]:
        raise UserError(f"{node} is not a validating notary: a channel cannot trust it")
    return _local_entry(network, node).identity


def _local_entry(network: Path, node: str) -> config_pb2.NodeConfig:
    """How the channel config names `node` of this network directory (its current identity
    certificate and privacy key; the endpoint is kept from the config when rotating)."""
    params.check_node(network, node)
    home = network / "nodes" / node
    try:
        org = NodeConfig.load(home / "node.toml").org_id
        return node_entry(home, org, node)
    except (OSError, ValueError, DefinitionError) as exc:
        raise UserError(str(exc)) from None


def _submit(network: Path, channel: str, client: str, path: Path) -> None:
    gateway = ClientFiles.load(network, client).gateway
    if gateway:
        params.check_running(network, gateway)
    data = config_update_pb2.ConfigUpdate.FromString(path.read_bytes())
    try:
        tx_id, code, number = asyncio.run(submit_update(network, client, channel, data))
    except grpc.aio.AioRpcError as exc:
        raise UserError(f"refused: {exc.code().name} {reason_of(exc)}: {exc.details()}") from None
    name = transaction_pb2.TxValidationCode.Name(code).removeprefix("TX_VALIDATION_CODE_")  # type: ignore[arg-type]
    typer.echo(f"{tx_id} {name} in block {number}")
    if code != transaction_pb2.TX_VALIDATION_CODE_VALID:
        raise UserError(f"config update committed as {name}: nothing changed")


@channel_app.command("join")
def join(network: NetworkDir, channel: ChannelArg, node: NodeArg) -> None:
    """Make a running node serve a channel (its block 0; an added org's peer catches up)."""
    params.check_node(network, node)
    params.check_running(network, node)
    block = genesis_of(network, channel).SerializeToString()
    joined = asyncio.run(NodeAdmin(network, node).join(block))
    typer.echo(f"{node} joined {joined}")


@org_app.command("add")
def org_add(
    network: NetworkDir,
    channel: ChannelArg,
    org: Annotated[str, typer.Argument(help="organisation id (its CA: orgs/ORG/ca.pem)")],
    out: OutOpt,
    client: AsOpt = "",
    peer: Annotated[list[str] | None, typer.Option(help="a peer of the org (repeat)")] = None,
    definition: Annotated[
        Path | None,
        typer.Option("--definition", "-d", help="ORG's definition (dltmw org init): CA, peers"),
    ] = None,
    endorsement_policy: Annotated[str | None, typer.Option(help="new default policy")] = None,
) -> None:
    """Write an update that adds ORG (its root CA and peers) as a member: from its definition
    (across hosts), or from this network directory (one machine, --peer)."""
    params.check_client(network, client)
    if definition is not None:
        try:
            found = load_definition(definition)
            check_definition(found, datetime.now(UTC))
        except DefinitionError as exc:
            raise UserError(str(exc)) from None
        if found.organization.org_id != org:
            raise UserError(f"{definition} defines {found.organization.org_id}, not {org}")
        ca, peers = found.organization.root_certificate_pem, list(found.peers)
    else:
        ca = (network / "orgs" / org / "ca.pem").read_bytes()
        peers = [_local_entry(network, p) for p in peer or []]

    def edit(c: config_pb2.ChannelConfig) -> config_pb2.ChannelConfig:
        c = config_edit.with_org(c, org, ca, peers)
        return config_edit.with_settings(c, endorsement_policy=endorsement_policy)

    _write_update(network, channel, client, out, edit)


@org_app.command("remove")
def org_remove(
    network: NetworkDir,
    channel: ChannelArg,
    org: Annotated[str, typer.Argument(help="organisation id")],
    out: OutOpt,
    client: AsOpt = "",
    endorsement_policy: Annotated[str | None, typer.Option(help="new default policy")] = None,
) -> None:
    """Write an update that removes member ORG (and its peers)."""
    params.check_client(network, client)

    def edit(c: config_pb2.ChannelConfig) -> config_pb2.ChannelConfig:
        c = config_edit.without_org(c, org)
        return config_edit.with_settings(c, endorsement_policy=endorsement_policy)

    _write_update(network, channel, client, out, edit)


@cert_app.command("revoke")
def cert_revoke(
    network: NetworkDir,
    channel: ChannelArg,
    cert: Annotated[Path, typer.Argument(help="PEM certificate to revoke")],
    out: OutOpt,
    client: AsOpt = "",
) -> None:
    """Write an update that adds CERT's serial to its organisation's revocation list."""
    params.check_client(network, client)
    parsed = x509.load_pem_x509_certificate(cert.read_bytes())
    orgs = parsed.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)
    if not orgs:
        raise UserError(f"{cert}: the certificate names no organisation (O=)")
    org = str(orgs[0].value)
    serial = parsed.serial_number
    _write_update(
        network, channel, client, out, lambda c: config_edit.with_revoked(c, org, [serial])
    )
