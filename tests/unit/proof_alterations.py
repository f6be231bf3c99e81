"""The ways a batch proof is altered in the tests of items signed per batch (agreements,
endorsements): each must make the item fail its check."""

from __future__ import annotations

from typing import Any

PROOF_ALTERATIONS = ("index", "count", "path", "path-short", "no-proof")


def alter_proof(item: Any, how: str) -> bool:
    """Alter `item.batch_proof` in place as `how` names (one of PROOF_ALTERATIONS): the proof of
    another position, a tree of another size, a sibling hash replaced or left out, or no proof
    (the batch's signature passed off as a lone one). False for any other `how`."""
    p = item.batch_proof
    if how == "index":
        p.leaf_index = (p.leaf_index + 1) % p.leaf_count
    elif how == "count":
        p.leaf_count += 1
    elif how == "path":
        p.path[0] = bytes(32)
    elif how == "path-short":
        del p.path[-1]
    elif how == "no-proof":
        item.ClearField("batch_proof")
    else:
        return False
    return True
