"""Readable protocol stories for golden tests (raft's datadriven testdata, in miniature).

A script is a list of commands, one per line, each written as `> command`; the lines after a
command are the trace it produced (decisions, view changes, checkpoints, crashes). Running a
script re-executes the commands on a fresh world and returns the same format, so a golden file
is compared as a whole. Commands:

    config n=4 checkpoint=4 batch=2      (first command; PbftConfig overrides)
    submit CLIENT COUNTER to REPLICA     a client sends one request to one replica
    tick [K]                             advance K ticks (default 1)
    crash REPLICA | restart REPLICA      lose everything not persisted / rebuild from storage
    silence REPLICA | unsilence REPLICA  drop / resume everything the replica sends
    isolate REPLICA [one-way] | heal     partitions
    drop SRC DST                         discard in-flight messages from SRC to DST
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from dltmw.core.pbft import Envelope, PbftConfig
from dltmw.sim.node import Node
from dltmw.sim.world import Behaviour, World

BASE = PbftConfig(
    n=4,
    checkpoint_interval=4,
    batch_size_max=2,
    view_change_timeout_ticks=20,
    request_timeout_ticks=20,
    retransmit_ticks=6,
    probe_ticks=10,
)
KEYS = {"n": "n", "checkpoint": "checkpoint_interval", "batch": "batch_size_max"}


class Scripted(Behaviour):
    """Honest replicas, except that silenced ones send nothing."""

    def __init__(self) -> None:
        self.silenced: set[int] = set()

    def outgoing(self, world: World, node: Node, destination: int, envelope: Envelope) -> None:
        if node.index not in self.silenced:
            world.net.send(node.index, destination, envelope)


class ScriptError(ValueError):
    """A script line that is not a known command."""


def _node(world: World, word: str) -> Node:
    return world.nodes[int(word.lstrip("r"))]


def _execute(world: World, behaviour: Scripted, words: list[str]) -> None:
    """Run one command on `world`."""
    verb, args = words[0], words[1:]
    if verb == "submit":
        world.submit(int(args[0]), int(args[1]), int(args[3].lstrip("r")))
    elif verb == "tick":
        for _ in range(int(args[0]) if args else 1):
            world.tick()
    elif verb == "crash":
        world.crash(_node(world, args[0]))
    elif verb == "restart":
        world.restart(_node(world, args[0]))
    elif verb in ("silence", "unsilence"):
        index = _node(world, args[0]).index
        (behaviour.silenced.add if verb == "silence" else behaviour.silenced.discard)(index)
        world.log(f"r{index} {verb}d")
    elif verb == "isolate":
        index = _node(world, args[0]).index
        others = [i for i in range(world.config.n) if i != index]
        world.net.isolate(index, others, one_way=bool(args and args[-1] == "one-way"))
        world.log(f"r{index} isolated{' one-way' if args[-1] == 'one-way' else ''}")
    elif verb == "heal":
        world.net.heal()
        world.log("network healed")
    elif verb == "drop":
        src, dst = int(args[0].lstrip("r")), int(args[1].lstrip("r"))
        count = world.net.discard(lambda m: (m.source, m.destination) == (src, dst))
        world.log(f"dropped {count} in-flight r{src}->r{dst}")
    else:
        raise ScriptError(f"unknown command {verb!r}")


def run_script(text: str) -> str:
    """Execute the commands of `text`; return the transcript in the same format.

    Lines starting with `#` are comments and kept in place; other non-command lines are the
    expected output and are replaced by what the commands actually produced.
    """
    lines = [line for line in text.splitlines() if line.startswith(("> ", "#"))]
    commands = [line[2:].strip() for line in lines if line.startswith("> ")]
    config = BASE
    if commands and commands[0].startswith("config"):
        overrides = dict(word.split("=") for word in commands[0].split()[1:])
        values: dict[str, Any] = {KEYS[k]: int(v) for k, v in overrides.items()}
        config = replace(BASE, **values)
    behaviour = Scripted()
    world = World(0, config, behaviour, trace=True)
    out: list[str] = []
    for line in lines:
        out.append(line)
        command = line[2:].strip()
        if line.startswith("#") or command.startswith("config"):
            continue
        before = len(world.trace or [])
        _execute(world, behaviour, command.split())
        out.extend((world.trace or [])[before:])
    return "\n".join(out) + "\n"
