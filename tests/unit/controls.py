"""Negative controls of Hypothesis properties: the property's own strategy and check, searched
for a counterexample while the mechanism is deliberately broken.

`counterexample` is `hypothesis.find` without shrinking (a control needs one example, not the
smallest: shrinking cost most of its time), from a fixed seed (the same examples every run, so
a control cannot pass or fail by luck) and without the example database (a broken variant's
failures must not be replayed against the real mechanism). It raises NoSuchExample — the
control fails — when no example of `max_examples` shows the violation.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TypeVar

from hypothesis import Phase, find, settings
from hypothesis import strategies as st

T = TypeVar("T")


def counterexample(
    strategy: st.SearchStrategy[T], violates: Callable[[T], bool], max_examples: int = 3000
) -> T:
    """The first example drawn from `strategy` (seed 0) for which `violates` holds."""
    return find(
        strategy,
        violates,
        settings=settings(max_examples=max_examples, database=None, phases=[Phase.generate]),
        random=random.Random(0),
    )
