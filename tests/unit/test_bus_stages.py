"""benchmarks/bus_stages.py times named coroutine methods of the bus's path: each must still
exist and be a coroutine function (a rename on the path broke the script once, unnoticed until
the next measurement)."""

from __future__ import annotations

import inspect

from benchmarks import bus_stages


def test_every_timed_stage_is_a_coroutine_method_of_the_path() -> None:
    stages = bus_stages.stages()
    assert len(stages) >= 15
    missing = [
        f"{cls.__name__}.{name}"
        for cls, name, _, _ in stages
        if not inspect.iscoroutinefunction(getattr(cls, name, None))
    ]
    assert missing == []
