"""Work on overlapping keys in arrival order, work on disjoint keys at once.

Why: a pipelined handler (`aio/coalesce.pipelined`) runs several requests at once so that their
stores share one group commit, but two requests touching the SAME key may have to keep their
arrival order when one decides from what the other wrote (first user: a recipient's Push, where
whether a copy replaces the held one is decided from what is held; benchmarks/RESULTS.md,
branch priv6). `KeyOrder.turn` makes a turn wait for every earlier turn that names one of its
keys, and for nothing else. Generic asyncio: it knows nothing of what the keys are.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Hashable, Iterable


class KeyOrder:
    """Arrival order per key: `async with order.turn(keys):` enters once every earlier turn
    that shares a key with it has left (a turn cancelled while waiting still counts as left
    only when the turns before it have)."""

    def __init__(self) -> None:
        self._last: dict[Hashable, asyncio.Future[None]] = {}  # key -> its latest turn

    def __len__(self) -> int:
        """Keys with a turn in progress or waiting (bounded by those turns' keys)."""
        return len(self._last)

    @contextlib.asynccontextmanager
    async def turn(self, keys: Iterable[Hashable]) -> AsyncIterator[None]:
        """Wait for the earlier turns of `keys`, run the body, then let later ones in."""
        own = list(dict.fromkeys(keys))
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        before = {self._last[k] for k in own if k in self._last}
        for key in own:
            self._last[key] = mine
        try:
            if before:
                await asyncio.wait(before)  # never cancels them (a plain await would)
            yield
        finally:
            self._leave(own, mine, [f for f in before if not f.done()])

    def _leave(
        self, keys: list[Hashable], mine: asyncio.Future[None], waiting: list[asyncio.Future[None]]
    ) -> None:
        """End `mine` once the turns it waited for ended (at once unless it was cancelled)."""
        if waiting:
            left = [len(waiting)]

            def one_done(_: asyncio.Future[None]) -> None:
                left[0] -= 1
                if not left[0]:
                    self._leave(keys, mine, [])

            for future in waiting:
                future.add_done_callback(one_done)
            return
        mine.set_result(None)
        for key in keys:
            if self._last.get(key) is mine:
                del self._last[key]
