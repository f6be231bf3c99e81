"""Checkers, kept apart from the workload: they read only what honest replicas decided.

- agreement: no two honest replicas decide different batches (digest or requests) at one
  sequence, and each honest replica decides sequences 1, 2, 3, ... without gaps;
- validity: every decided request was submitted by a client (a faulty primary or forwarder
  may invent requests: the admission rule `request_ok` must keep them out);
- no duplicates: a request is decided (as fresh) at most once within any `window` consecutive
  sequences (the replicas' de-duplication window, `core/pbft/recent.py`: a copy ordered later
  is the peers' to mark DUPLICATE_TXID), and every replica agrees where;
- alone: a lone request (`Keys.lone`, the stand-in for a config update) is decided in a batch
  of its own;
- liveness: after the faults heal, every submitted request is decided by every honest replica
  within a bound of ticks (checked by the runner, which knows the heal tick).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from dltmw.sim.keys import request_name
from dltmw.sim.node import Node


def check_safety(
    nodes: Iterable[Node], submitted: Iterable[bytes], window: int | None = None
) -> list[str]:
    """Agreement, validity and no-duplicate violations among `nodes` (honest ones); `window`:
    the replicas' de-duplication window in sequences (None: a request once in the chain)."""
    known = set(submitted)
    violations: list[str] = []
    by_seq: dict[int, tuple[str, bytes, tuple[bytes, ...]]] = {}
    where: dict[tuple[bytes, int], int] = {}  # (request, copy) -> sequence
    for node in nodes:
        seen: dict[bytes, int] = {}  # request -> the sequence of its latest copy here
        copies: dict[bytes, int] = {}
        for expected, decided in enumerate(node.decided, start=1):
            if decided.sequence != expected:
                violations.append(f"gap: {node.name} decided seq {decided.sequence} at {expected}")
                break
            first = by_seq.setdefault(
                decided.sequence, (node.name, decided.digest, decided.requests)
            )
            if (first[1], first[2]) != (decided.digest, decided.requests):
                violations.append(
                    f"agreement: seq {decided.sequence} {first[0]}={first[1].hex()[:8]} "
                    f"{node.name}={decided.digest.hex()[:8]}"
                )
            for request in decided.fresh:
                name = request_name(request)
                if request not in known:
                    violations.append(f"validity: {node.name} decided unknown request {name}")
                last = seen.get(request)
                if last is not None and (window is None or decided.sequence - last <= window):
                    violations.append(f"duplicate: {node.name} decided {name} twice")
                seen[request] = decided.sequence
                copy = copies[request] = copies.get(request, -1) + 1
                if where.setdefault((request, copy), decided.sequence) != decided.sequence:
                    violations.append(f"duplicate: {name} decided at two sequences")
    return violations


def check_alone(nodes: Iterable[Node], lone: Callable[[bytes], bool]) -> list[str]:
    """Batches decided by `nodes` (honest ones) that hold a lone request with other requests."""
    violations = []
    for node in nodes:
        for decided in node.decided:
            if len(decided.requests) > 1 and any(lone(r) for r in decided.requests):
                names = ",".join(request_name(r) for r in decided.requests)
                violations.append(f"alone: {node.name} decided seq {decided.sequence} = {names}")
                break
    return violations


def missing(nodes: Iterable[Node], submitted: Iterable[bytes]) -> list[str]:
    """Liveness: submitted requests some honest node has not decided, as readable strings."""
    need = set(submitted)
    out = []
    for node in nodes:
        got = {r for d in node.decided for r in d.fresh}
        lacking = need - got
        if node.replica is None:
            out.append(f"{node.name} is down")
        elif lacking:
            names = sorted(request_name(r) for r in lacking)
            out.append(f"{node.name} lacks {len(lacking)}: {','.join(names[:5])}")
    return out
