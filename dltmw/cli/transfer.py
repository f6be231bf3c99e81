"""`dltmw transfer`: run one two-phase transfer across two channels (`client/transfer.py`).

    dltmw transfer NET --client trader.brokera \\
        --leg trading:BrokerA-sec:BrokerB-sec:10 --leg cash:BrokerB-cash:BrokerA-cash:500 \\
        --peers trading=peer.exchange,peer.brokera --peers cash=peer.bank,peer.brokerb

The client submits on both channels through its gateway (a member of both) and gathers each
lock's commit proof from the named peers of its channel.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path
from typing import Annotated

import typer

from dltmw.aio.clock import utc_now
from dltmw.cli import params
from dltmw.cli.errors import UserError
from dltmw.cli.params import ClientOpt, JsonOpt, NetworkDir
from dltmw.client import GatewayClient
from dltmw.client.files import ClientFiles
from dltmw.client.transfer import Leg, dvp_terms, run_transfer

LegOpt = Annotated[
    list[str],
    typer.Option("--leg", help="CHANNEL:FROM:TO:AMOUNT (twice: one per channel)"),
]
PeersOpt = Annotated[
    list[str],
    typer.Option("--peers", help="CHANNEL=NODE,NODE...: whose attestations prove its lock"),
]


def _legs(raw: list[str]) -> dict[str, tuple[str, str, int]]:
    legs: dict[str, tuple[str, str, int]] = {}
    for text in raw:
        parts = text.split(":")
        if len(parts) != 4 or not parts[3].isdigit():
            raise UserError(f"--leg {text!r}: expected CHANNEL:FROM:TO:AMOUNT")
        legs[parts[0]] = (parts[1], parts[2], int(parts[3]))
    if len(legs) != 2:
        raise UserError("a transfer has exactly two legs on two channels")
    return legs


def _peers(raw: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for text in raw:
        channel, _, nodes = text.partition("=")
        if not channel or not nodes:
            raise UserError(f"--peers {text!r}: expected CHANNEL=NODE,NODE...")
        out[channel] = [n for n in nodes.split(",") if n]
    return out


def _check_nodes_run(network: Path, client: str, peers: dict[str, list[str]]) -> None:
    """Before any transaction: the client's gateway and every named peer exist and run, so a
    stopped network is named at once instead of after each connection's address wait."""
    files = ClientFiles.load(network, client)
    if not files.gateway:
        raise UserError(f"client {client} has no default gateway")
    for node in [files.gateway, *sorted({n for ns in peers.values() for n in ns})]:
        params.check_running(network, node, files.addresses)


async def _run(
    network: Path,
    client: str,
    legs: dict[str, tuple[str, str, int]],
    peers: dict[str, list[str]],
    deadline_s: int,
) -> dict[str, object]:
    nodes = sorted({n for ns in peers.values() for n in ns})
    conns = {n: await GatewayClient.connect(network, client, n) for n in nodes}
    gateway = await GatewayClient.connect(network, client)
    try:
        a, b = (Leg(c, gateway, [(n, conns[n].channel) for n in peers.get(c, [])]) for c in legs)
        terms = dvp_terms(legs, deadline_s, secrets.token_hex(8))
        done = await run_transfer(a, b, terms, deadline_s)
    finally:
        for c in (gateway, *conns.values()):
            await c.close()
    return {"transfer_id": done.transfer_id, "outcome": done.outcome, "tx_ids": done.tx_ids}


def transfer(
    network: NetworkDir,
    client: ClientOpt,
    leg: LegOpt,
    peers: PeersOpt,
    deadline_s: Annotated[
        int, typer.Option("--deadline-s", help="seconds from now until a missing lock aborts")
    ] = 60,
    as_json: JsonOpt = False,
) -> None:
    """Run one atomic transfer across two channels: lock both, then claim both (or refund)."""
    params.check_client(network, client)
    legs, by_channel = _legs(leg), _peers(peers)
    _check_nodes_run(network, client, by_channel)
    deadline = int(utc_now().timestamp()) + deadline_s
    result = asyncio.run(_run(network, client, legs, by_channel, deadline))
    if as_json:
        print(json.dumps(result))
    else:
        print(f"{result['transfer_id']} {result['outcome']}")
