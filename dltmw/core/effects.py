"""The one core contract: every pure handler is a `Core` and hands back one `Effects` type.

A core is a sans-I/O state machine (etcd raft's `Node`, h11's `Connection`). The world feeds it
inputs with `step(message)` and the passing of time with `tick(now)`; `ready()` then hands back,
in ONE frozen record, everything the world must do about it. The fields are listed in the order
they MUST be executed, which is what makes a crash harmless (raft's Ready contract):

1. `persist`  — the core's own log (queued envelopes, PBFT records): durable before anything
                below happens, so that nobody ever hears of something a crash could undo;
2. `decided`  — what was decided (blocks, batches, spends, a committed block's writes): applied
                durably, in order;
3. `send`     — messages to other members of the core's group, by index;
4. `replies`  — answers to local callers, each under the opaque token the caller's input
                carried (the core never sees a future, a stream or a socket).

Nothing else: no logs, no metrics, no callbacks. The runtime executes an `Effects` with its ONE
driver (`dltmw/runtime/driver.py`, asynchronously, through a per-role executor); the simulator
executes the same record synchronously with `execute` below, through the same four-method
contract (`Executor`). Time is passed in: `now` is the number of ticks the driver has issued to
this core instance (1, 2, 3, ...), so a core never reads a clock.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar, runtime_checkable

Token = Hashable  # what a caller's input carries so that its reply finds it again; opaque here
P = TypeVar("P")  # a record of the core's own log
D = TypeVar("D")  # a decision
M = TypeVar("M")  # a message to another member of the group
R = TypeVar("R")  # a reply to a local caller
P_contra = TypeVar("P_contra", contravariant=True)
D_contra = TypeVar("D_contra", contravariant=True)
M_contra = TypeVar("M_contra", contravariant=True)
R_contra = TypeVar("R_contra", contravariant=True)
In_contra = TypeVar("In_contra", contravariant=True)
Out_co = TypeVar("Out_co", covariant=True)


@dataclass(frozen=True, slots=True)
class Effects(Generic[P, D, M, R]):
    """What one core asks of the world, in execution order (see the module docstring)."""

    persist: tuple[P, ...] = ()
    decided: tuple[D, ...] = ()
    send: tuple[tuple[int, M], ...] = ()
    replies: tuple[tuple[Token, R], ...] = ()

    def is_empty(self) -> bool:
        """True when there is nothing to do."""
        return not (self.persist or self.decided or self.send or self.replies)


class Core(Protocol[In_contra, Out_co]):
    """What a driver (runtime or simulator) calls; `Out_co` is an `Effects`."""

    def step(self, message: In_contra) -> None:
        """Feed one input (a request, a peer's message, data the driver loaded for it)."""

    def tick(self, now: int) -> None:
        """Time passed: this is the `now`-th tick the driver gives this core."""

    def ready(self) -> Out_co:
        """Take the effects accumulated since the last call."""


@runtime_checkable
class Drains(Protocol):
    """A core that wants to know when its driver's intake is empty (the adaptive block cutter).

    The driver calls `drained()` after stepping a batch of inputs when nothing more is queued
    right now, before `ready()`. The core never looks at a queue or a clock itself: "drained"
    is an input, so a replay with the same inputs and the same drain events decides the same.
    """

    def drained(self) -> None:
        """Nothing more is queued for this core right now."""


@runtime_checkable
class Quiescent(Protocol):
    """A core that can say no tick would change anything now (the solo orderer with nothing
    pending). Its driver then stops ticking until the next input, so an idle node does not wake
    100 times a second for nothing; ticks resume with the next input. A core whose timers run
    on their own (PBFT-lite's view-change and retransmit timers) does not implement it.
    """

    def quiescent(self) -> bool:
        """Every tick from now until the next input would be a no-op."""


class Executor(Protocol[P_contra, D_contra, M_contra, R_contra]):
    """The synchronous side of the contract (the simulator's): one method per field."""

    def persist(self, records: Sequence[P_contra]) -> None:
        """Make the core's records durable."""

    def apply(self, decided: Sequence[D_contra]) -> None:
        """Apply the decisions durably, in order."""

    def send(self, messages: Sequence[tuple[int, M_contra]]) -> None:
        """Hand messages to the network."""

    def reply(self, replies: Sequence[tuple[Token, R_contra]]) -> None:
        """Answer local callers."""


def execute(effects: Effects[P, D, M, R], executor: Executor[P, D, M, R]) -> None:
    """Carry out `effects` in the contract's order: persist, apply, send, reply."""
    if effects.persist:
        executor.persist(effects.persist)
    if effects.decided:
        executor.apply(effects.decided)
    if effects.send:
        executor.send(effects.send)
    if effects.replies:
        executor.reply(effects.replies)
