"""The simulated worlds a test's dissemination runs make, kept to look inside after a run."""

from __future__ import annotations

from typing import TypeVar

import pytest

from dltmw.sim import dissem_runner
from dltmw.sim.dissem_world import DissemWorld

W = TypeVar("W", bound=DissemWorld)


def recording(monkeypatch: pytest.MonkeyPatch, world: type[W], **attributes: object) -> list[W]:
    """Every world the runs make, of `world`'s kind with `attributes` set, in order (a crash
    world: the runs that name it, `run_dissemination(crash=...)`)."""
    made: list[W] = []

    class Recording(world):  # type: ignore[valid-type,misc]
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            for name, value in attributes.items():
                setattr(self, name, value)
            made.append(self)

    crash = [name for name, kind in dissem_runner.CRASH_WORLDS.items() if kind is world]
    if crash:  # a run asks for it by name (`run_dissemination(crash=...)`)
        monkeypatch.setitem(dissem_runner.CRASH_WORLDS, crash[0], Recording)
    else:
        monkeypatch.setattr(dissem_runner, "DissemWorld", Recording)
    return made
