"""The simulated worlds a test's dissemination runs make, kept to look inside after a run."""

from __future__ import annotations

from typing import TypeVar

import pytest

from dltmw.sim import dissem_runner
from dltmw.sim.dissem_world import DissemWorld

W = TypeVar("W", bound=DissemWorld)


def recording(monkeypatch: pytest.MonkeyPatch, world: type[W], **attributes: object) -> list[W]:
    """Every world the runs make, of `world`'s kind with `attributes` set, in order."""
    made: list[W] = []

    class Recording(world):  # type: ignore[valid-type,misc]
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            for name, value in attributes.items():
                setattr(self, name, value)
            made.append(self)

    monkeypatch.setattr(dissem_runner, "DissemWorld", Recording)
    return made
