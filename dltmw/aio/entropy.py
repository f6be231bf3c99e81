"""The randomness of node and SDK code: from the running event loop's world, like its clock.

Nonces (a proposal's, a private payload's), a private payload's fresh AES key and the jitter of
retry backoffs come from here. Outside a simulation they are the operating system's randomness
(`secrets`, for anything that must not be guessed) and `random` (jitter only). The simulator's
virtual-time loop (`dltmw/sim/vloop.py`) exposes `random_bytes(n)` and `random()` drawn from the
run's seed, so a simulated run replays exactly — the same way `aio/clock.utc_now` reads the
loop's `wall_clock()`. No other loop has these methods.
"""

from __future__ import annotations

import asyncio
import random
import secrets


def _loop_method(name: str) -> object | None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return getattr(loop, name, None)


def token_bytes(n: int) -> bytes:
    """`n` random bytes: `secrets.token_bytes` unless the running loop supplies its own."""
    supply = _loop_method("random_bytes")
    if callable(supply):
        out: bytes = supply(n)
        return out
    return secrets.token_bytes(n)


def fraction() -> float:
    """A random float in [0, 1) for jitter (not for secrets)."""
    supply = _loop_method("random")
    if callable(supply):
        out: float = supply()
        return out
    return random.random()  # jitter, not cryptography
