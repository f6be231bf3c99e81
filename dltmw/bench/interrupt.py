"""`dltmw bench` stops the node processes it started when it is interrupted (SIGINT, SIGTERM).

Why. The nodes run in sessions of their own (`ops/supervisor.py`), so neither a terminal's Ctrl-C
nor a SIGTERM sent to the bench reaches them. Python's default SIGTERM ended the bench without
running its `finally: sup.down()`, leaving the nodes running; a SIGINT became a cancellation
inside `asyncio.run` that the client's retrying code could outlive (> 20 s seen), and then
`sup.down()` waited its 10 s grace per node. So while a network runs, either signal stops the
nodes right in the handler — SIGTERM to every node, at most `GRACE_S`, then SIGKILL of their
process groups (`Supervisor.down`) — prints why, and ends the bench with `SystemExit(128 +
signal)`. The unwinding after that (the client's tasks being cancelled) is bounded too: a watchdog
thread exits the process after `UNWIND_S`; a second signal exits at once.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

GRACE_S = 5.0  # a node's graceful stop, before SIGKILL
UNWIND_S = 10.0  # the bench's own unwinding after the nodes are stopped
SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _exit_now(code: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@contextmanager
def nodes_stopped_on_signal(stop: Callable[[float], object]) -> Iterator[None]:
    """Within the block, SIGINT/SIGTERM call `stop(GRACE_S)` (stopping the node processes,
    bounded) and then raise SystemExit(128 + signal); see the module docstring."""
    signalled: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        code = 128 + signum
        name = signal.Signals(signum).name
        if signalled:
            _say(f"bench: {name} again: exiting at once")
            _exit_now(code)
        signalled.append(signum)
        _say(f"bench: {name} received: stopping the node processes (at most {GRACE_S:.0f} s) ...")
        try:
            stop(GRACE_S)
        finally:
            watchdog = threading.Timer(UNWIND_S, _exit_now, (code,))
            watchdog.daemon = True
            watchdog.start()
            _say(f"bench: interrupted by {name}; node processes stopped; exit code {code}")
        raise SystemExit(code)

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
