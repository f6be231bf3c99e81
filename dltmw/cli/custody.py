"""`dltmw org init` and `dltmw channel create`: a consortium where each organisation keeps its
own keys (`pki/org.py`, docs/deploy.md)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from dltmw.cli.errors import EXIT_USAGE, UserError
from dltmw.cli.params import ChannelArg
from dltmw.net.hsm import MODULE_ENV, HsmError
from dltmw.net.nats_plan import PLAN_FILE, NatsPlan
from dltmw.ops.nats_cluster import NatsCluster
from dltmw.pki.certs import RenewError, issue_client, issue_node, renew
from dltmw.pki.network import HsmPlan
from dltmw.pki.org import (
    ChannelPlan,
    DefinitionError,
    create_channel,
    init_org,
    load_definition,
    write_network_map,
)

org_app = typer.Typer(
    no_args_is_help=True, help="An organisation's own keys and definition; add or remove one."
)
channel_app = typer.Typer(
    no_args_is_help=True, help="Create a channel; update its config; join a node to it."
)
cert_app = typer.Typer(no_args_is_help=True, help="Issue, renew and revoke certificates.")
netmap_app = typer.Typer(no_args_is_help=True, help="The UTXO network map from org definitions.")


@org_app.command("init")
def org_init(
    topology: Annotated[
        Path, typer.Argument(help="topology TOML of ONE organisation: its nodes and clients")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="the organisation's directory")],
    synchronous: Annotated[str, typer.Option(help="sqlite synchronous mode")] = "FULL",
    hsm: Annotated[
        list[str] | None, typer.Option(help="node or client whose key is made in the token")
    ] = None,
    hsm_token: Annotated[str, typer.Option(help="label of the PKCS#11 token")] = "",
    hsm_module: Annotated[str, typer.Option(help="PKCS#11 library")] = "",
) -> None:
    """Make this organisation's CA, node and client keys (here only) and its definition
    (OUT/<org>.org.json: certificates and public keys, to hand to the other organisations)."""
    if not topology.is_file():
        raise UserError(f"no topology file {topology}", EXIT_USAGE)
    plan = None
    if hsm:
        module = hsm_module or os.environ.get(MODULE_ENV, "")
        if not hsm_token or not module:
            raise UserError(f"--hsm needs --hsm-token and --hsm-module (or {MODULE_ENV})")
        plan = HsmPlan(hsm_token, module, frozenset(hsm))
    try:
        definition = init_org(topology, out, synchronous.upper(), hsm=plan)
    except (DefinitionError, HsmError) as exc:
        raise UserError(str(exc), EXIT_USAGE) from exc
    org = definition.organization.org_id
    typer.echo(f"organisation {org} written to {out}; its definition: {out / (org + '.org.json')}")


@channel_app.command("create")
def channel_create(
    org_dir: Annotated[
        Path, typer.Argument(help="directory of the organisation running the first orderer")
    ],
    channel: ChannelArg,
    definition: Annotated[
        list[Path], typer.Option("--definition", "-d", help="an org definition file (repeat)")
    ],
    member: Annotated[list[str], typer.Option(help="a member organisation (repeat)")],
    orderer: Annotated[list[str], typer.Option(help="an orderer node (repeat; first signs)")],
    ordering: Annotated[str, typer.Option(help="none or pbft")] = "none",
    endorsement_policy: Annotated[str, typer.Option(help="default: MAJORITY of members")] = "",
    contract: Annotated[
        list[str] | None, typer.Option(help="NAME or NAME=POLICY (repeat; default bank, kv)")
    ] = None,
    max_tx_count: Annotated[int, typer.Option(help="block cutting: tx per block")] = 100,
    timeout_ms: Annotated[int, typer.Option(help="block cutting: batch timeout")] = 250,
    cut_by_limits_only: Annotated[
        bool, typer.Option(help="cut by the limits only (Fabric's rule), not adaptively")
    ] = False,
) -> None:
    """Check the definitions and write block 0 of CHANNEL, signed by the first orderer (whose
    key is in ORG_DIR); hand the block to every member to join its nodes."""
    contracts = tuple(
        (name, policy) for name, _, policy in (c.partition("=") for c in contract or [])
    )
    plan = ChannelPlan(
        channel_id=channel,
        members=member,
        orderers=orderer,
        ordering=ordering,
        endorsement_policy=endorsement_policy,
        max_tx_count=max_tx_count,
        timeout_ms=timeout_ms,
        contracts=contracts or ChannelPlan.contracts,
        cut_by_limits_only=cut_by_limits_only,
    )
    try:
        path = create_channel(org_dir, plan, [load_definition(d) for d in definition])
    except (DefinitionError, HsmError, ValueError) as exc:
        raise UserError(str(exc)) from exc
    typer.echo(f"channel {channel}: block 0 written to {path}")


@netmap_app.command("create")
def netmap_create(
    org_dir: Annotated[Path, typer.Argument(help="the organisation's directory")],
    definition: Annotated[
        list[Path], typer.Option("--definition", "-d", help="an org definition file (repeat)")
    ],
    notary_cluster: Annotated[
        list[str] | None, typer.Option(help="ID=NODE,NODE,NODE,NODE: a notary cluster (repeat)")
    ] = None,
) -> None:
    """Write ORG_DIR/network-map.toml (vaults and notaries of every organisation, with their
    certificates and endpoints) from the definitions; each organisation runs it with the same
    definitions and gets the same map."""
    clusters = {}
    for spec in notary_cluster or []:
        cluster, _, members = spec.partition("=")
        clusters[cluster] = [m for m in members.split(",") if m]
    try:
        path = write_network_map(org_dir, [load_definition(d) for d in definition], clusters)
    except DefinitionError as exc:
        raise UserError(str(exc)) from exc
    typer.echo(f"network map written to {path}")


@cert_app.command("issue")
def cert_issue(
    org_dir: Annotated[Path, typer.Argument(help="the organisation's directory (holds its CA)")],
    org: Annotated[str, typer.Argument(help="the organisation")],
    client: Annotated[str, typer.Argument(help="the new client's id")],
    role: Annotated[str, typer.Option(help="client or admin")] = "client",
    gateway: Annotated[str | None, typer.Option(help="its gateway node")] = None,
) -> None:
    """Add a client (or admin) of ORG: keys, certificates from ORG's CA, client.toml."""
    try:
        home = issue_client(org_dir, org, client, role=role, gateway=gateway)
    except (RenewError, ValueError) as exc:
        raise UserError(str(exc)) from exc
    typer.echo(f"{client} ({role} of {org}) written to {home}")


@org_app.command("add-node")
def org_add_node(
    org_dir: Annotated[Path, typer.Argument(help="the organisation's directory (holds its CA)")],
    node: Annotated[str, typer.Argument(help="the new node's id")],
    role: Annotated[
        list[str], typer.Option(help="its roles (repeat): peer, gateway, orderer, vault, ...")
    ],
    org: Annotated[
        str | None, typer.Option(help="its organisation (if the dir has several)")
    ] = None,
    endpoint: Annotated[str, typer.Option(help="advertised host:port (across hosts)")] = "",
) -> None:
    """Add a node of the organisation: keys and certificates from its CA, node.toml (no channel
    yet), the topology and org definition updated. A peer then enters a channel by a config
    update (`channel update --add-peer`) and `channel join`."""
    try:
        home = issue_node(org_dir, node, role, org=org, endpoint=endpoint)
    except (RenewError, DefinitionError, ValueError) as exc:
        raise UserError(str(exc)) from exc
    typer.echo(f"{node} ({', '.join(role)}) written to {home}")
    if "orderer" in role and (org_dir / "jetstream" / PLAN_FILE).exists():
        told = NatsCluster(NatsPlan.load(org_dir / "jetstream")).reload()
        typer.echo(
            f"{node} let into the JetStream cluster (jetstream/*/nats.conf); {told} running"
            " nats-server(s) reloaded; members on other hosts need the new nats.conf and a reload"
        )


@cert_app.command("renew")
def cert_renew(
    org_dir: Annotated[Path, typer.Argument(help="the organisation's directory (holds its CA)")],
    party: Annotated[str, typer.Argument(help="a node or client of the organisation")],
    within_days: Annotated[
        float | None, typer.Option(help="only certificates expiring within DAYS")
    ] = None,
    valid_days: Annotated[int, typer.Option(help="validity of the new certificates")] = 825,
    identity: Annotated[
        bool, typer.Option(help="a node's identity too (then rotate it by a config update)")
    ] = False,
) -> None:
    """New certificates for PARTY's existing keys (a node restarts to use them)."""
    try:
        done = renew(
            org_dir, party, identity=identity, valid_days=valid_days, within_days=within_days
        )
    except (RenewError, ValueError) as exc:
        raise UserError(str(exc)) from exc
    for path in done.written:
        typer.echo(f"renewed {path}")
    for why in done.skipped:
        typer.echo(f"kept {why}")
