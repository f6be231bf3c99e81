"""The quorum of a PBFT-lite replica group, in a module of its own.

Why its own module: peers count an orderer group's block signatures with it
(`handlers/pbft_blocks.signatures_needed`, and through it the light client of every peer), and
importing it from `core/pbft` would load the whole PBFT-lite package (its package `__init__`
imports the replica state machine) into every peer, which never runs a replica.
"""

from __future__ import annotations


def quorum_of(n: int) -> int:
    """Quorum of a group of n >= 4 replicas: ceil((n + f + 1) / 2) with f = (n-1) // 3 (2f+1 when
    n = 3f+1). Peers count block signatures with it too (`pbft_blocks.signatures_needed`)."""
    f = (n - 1) // 3
    return (n + f + 2) // 2
