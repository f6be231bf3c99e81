"""One simulated replica instance: its core (None while crashed), its durable records and its
decided log (the ledger), as `world.World` drives it and the checkers read it."""

from __future__ import annotations

from dataclasses import dataclass, field

from dltmw.core.pbft import Decided, Record, Replica


@dataclass
class Node:
    """One replica instance (twins share an index)."""

    name: str
    index: int
    replica: Replica | None
    storage: list[Record] = field(default_factory=list)
    decided: list[Decided] = field(default_factory=list)
    lose_sends_at_crash: bool = False
    dying: bool = False
    ticks: int = 0  # ticks given to the current core (a restarted core starts again at 1)
