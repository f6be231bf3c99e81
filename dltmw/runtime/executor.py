"""The executor contract of the one driver: what a role supplies to carry out its core's effects.

A role's executor is the only place that knows its stores and links. The driver
(`runtime/driver.py`) calls `load` before it steps the core (reads the step needs), then, for
the effects of the step, `persist`, `apply`, `send` and `reply` — in that order, each awaited
before the next (`core/effects.py` states why). `Executing` is the base to subclass when the
inputs are the core's messages and some effects never occur.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar

from dltmw.core.effects import D, D_contra, M, M_contra, P, P_contra, R, R_contra, Token

In = TypeVar("In")  # what callers queue
Msg = TypeVar("Msg")  # what the core steps (In once the executor loaded it)
In_contra = TypeVar("In_contra", contravariant=True)
Msg_co = TypeVar("Msg_co", covariant=True)


class Executor(Protocol[In_contra, Msg_co, P_contra, D_contra, M_contra, R_contra]):
    """What a role supplies: how to read what a step needs, and how to carry out effects."""

    async def load(self, inputs: Sequence[In_contra]) -> Sequence[Msg_co]:
        """The core's messages for these inputs, with what they must read (often the inputs)."""

    async def persist(self, records: Sequence[P_contra]) -> None:
        """Make the core's records durable."""

    async def apply(self, decided: Sequence[D_contra]) -> None:
        """Apply decisions durably, in order."""

    async def send(self, messages: Sequence[tuple[int, M_contra]]) -> None:
        """Hand messages to the links to other members."""

    async def reply(self, replies: Sequence[tuple[Token, R_contra]]) -> None:
        """Answer local callers."""


class Executing(Generic[In, P, D, M, R]):
    """An executor to subclass: nothing to load, nothing to do for an effect it never gets."""

    async def load(self, inputs: Sequence[In]) -> Sequence[In]:
        """The inputs are the core's messages."""
        return inputs

    async def persist(self, records: Sequence[P]) -> None:
        """No log."""

    async def apply(self, decided: Sequence[D]) -> None:
        """No decisions."""

    async def send(self, messages: Sequence[tuple[int, M]]) -> None:
        """No group."""

    async def reply(self, replies: Sequence[tuple[Token, R]]) -> None:
        """No callers."""
