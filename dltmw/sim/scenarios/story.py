"""Readable endorse → order → validate stories with golden transcripts (the paper's Figure 8).

A story is a script of commands, one per line, written `> command`; the lines after a command
are what it produced, and the whole transcript is the assertion (like `sim/script.py` for
PBFT-lite, raft's datadriven testdata). Running a story executes its commands, in order, on a
simulated network of production nodes (`scenario eov`'s two-org network) and returns the same
format, so a golden file is compared as a whole. Commands:

    network solo|pbft [batch_ms=N] [cut=limits] [contract=bank|bank_rmw]
                                            first command: the network (blocks cut after N ms;
                                            `cut=limits`: only by the limits, Fabric's rule, not
                                            as soon as the orderer has nothing queued) and the
                                            bank every command calls (default `bank`)
    submit CLIENT FUNCTION ARG...           endorse, submit and wait: the commit status
    endorse NAME CLIENT FUNCTION ARG...     endorse only; the envelope is kept as NAME
    broadcast NAME...                       submit kept envelopes, in this order
    status NAME...                          wait for each one's commit status
    query CLIENT FUNCTION ARG...            evaluate on the client's gateway peer
    state PEER KEY...                       a peer's committed value and version of the bank's keys
    kill NODE | restart NODE                kill -9 a node / start it again
    wait SECONDS                            let virtual time pass

Lines starting with `#` are comments and kept in place.
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass, field

import grpc

from dltmw.client.gateway import GatewayClient
from dltmw.rpc.status import reason_of
from dltmw.sim import vloop
from dltmw.sim.deployment import Deployment
from dltmw.sim.ledger_checks import code_name
from dltmw.sim.scenarios.eov import CHANNEL, topology
from dltmw.v1 import common_pb2


class StoryError(ValueError):
    """A line that is not a known command."""


@dataclass(frozen=True)
class _Kept:
    """An endorsed transaction kept for later: whose, its envelope, its tx_id."""

    client_id: str
    envelope: common_pb2.Envelope
    tx_id: str


@dataclass
class _Story:
    """A running story: its network, clients and kept envelopes."""

    dep: Deployment
    contract: str = "bank"
    clients: dict[str, GatewayClient] = field(default_factory=dict)
    kept: dict[str, _Kept] = field(default_factory=dict)

    def client(self, client_id: str) -> GatewayClient:
        if client_id not in self.clients:
            self.clients[client_id] = self.dep.gateway_client(client_id)
        return self.clients[client_id]


async def _execute(story: _Story, words: list[str]) -> list[str]:
    """Run one command; returns its output lines."""
    verb, args = words[0], words[1:]
    try:
        return await _COMMANDS[verb](story, args)
    except KeyError:
        raise StoryError(f"unknown command {verb!r}") from None
    except grpc.aio.AioRpcError as exc:
        return [f"refused: {exc.code().name} {reason_of(exc) or ''}".rstrip()]


async def _submit(story: _Story, args: list[str]) -> list[str]:
    done = await story.client(args[0]).submit_transaction(
        CHANNEL, story.contract, args[1], *args[2:]
    )
    status = done.status
    return [f"{code_name(status.result)} block={status.block_number} tx={status.tx_index}"]


async def _endorse(story: _Story, args: list[str]) -> list[str]:
    name, client = args[0], story.client(args[1])
    signed, tx_id = client.proposal(CHANNEL, story.contract, args[2], args[3:])
    endorsed = await client.endorse(signed)
    story.kept[name] = _Kept(args[1], client.envelope(endorsed.prepared_payload), tx_id)
    return [f"{name} endorsed: {endorsed.result.payload.decode()}"]


async def _broadcast(story: _Story, args: list[str]) -> list[str]:
    for name in args:
        kept = story.kept[name]
        await story.client(kept.client_id).submit(kept.envelope)
    return [f"submitted {' '.join(args)}"]


async def _status(story: _Story, args: list[str]) -> list[str]:
    out = []
    for name in args:
        kept = story.kept[name]
        status = await story.client(kept.client_id).commit_status(CHANNEL, kept.tx_id)
        code = code_name(status.result)
        out.append(f"{name} {code} block={status.block_number} tx={status.tx_index}")
    return out


async def _query(story: _Story, args: list[str]) -> list[str]:
    result = await story.client(args[0]).evaluate(CHANNEL, story.contract, args[1], *args[2:])
    return [result.payload.decode()]


async def _state(story: _Story, args: list[str]) -> list[str]:
    path = story.dep.data(args[0]) / f"{CHANNEL}.peer.sqlite"
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        out = []
        for key in args[1:]:
            row = conn.execute(
                "SELECT value, block_number, tx_index FROM state WHERE namespace=? AND key=?",
                (story.contract, key),
            ).fetchone()
            out.append(
                f"{key} absent"
                if row is None
                else f"{key}={row[0].decode()} version=({row[1]},{row[2]})"
            )
        return out
    finally:
        conn.close()


async def _kill(story: _Story, args: list[str]) -> list[str]:
    story.dep.kill(args[0])
    return [f"{args[0]} killed"]


async def _restart(story: _Story, args: list[str]) -> list[str]:
    await story.dep.restart(args[0])
    return [f"{args[0]} restarted"]


async def _wait(story: _Story, args: list[str]) -> list[str]:
    await asyncio.sleep(float(args[0]))
    return []


_COMMANDS = {
    "submit": _submit,
    "endorse": _endorse,
    "broadcast": _broadcast,
    "status": _status,
    "query": _query,
    "state": _state,
    "kill": _kill,
    "restart": _restart,
    "wait": _wait,
}


def run_story(text: str) -> str:
    """Execute the commands of `text`; return the transcript in the same format."""
    lines = [line for line in text.splitlines() if line.startswith(("> ", "#"))]
    commands = [line[2:].split() for line in lines if line.startswith("> ")]
    if not commands or commands[0][0] != "network":
        raise StoryError("a story starts with `> network solo|pbft [batch_ms=N]`")
    ordering = commands[0][1]
    options = dict(word.split("=") for word in commands[0][2:])
    batch_ms = int(options.get("batch_ms", "50"))
    by_limits_only = options.get("cut", "") == "limits"

    async def main() -> list[str]:
        deployment = Deployment(topology(ordering, batch_ms, by_limits_only))
        story = _Story(deployment, options.get("contract", "bank"))
        out: list[str] = []
        try:
            await story.dep.start()
            for line in lines:
                out.append(line)
                if line.startswith("> ") and not line[2:].startswith("network"):
                    out.extend(f"  {o}" for o in await _execute(story, line[2:].split()))
        finally:
            await story.dep.stop()
            story.dep.remove()
        return out

    return "\n".join(vloop.run(0, main)) + "\n"
