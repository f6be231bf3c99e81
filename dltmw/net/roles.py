"""The roles a node may host, and their rules: shared by the topology file (`net/topology.py`,
read by `dltmw init`) and a node's own node.toml (`runtime/config_file.py`).

Why a module of its own: a node process validates its node.toml with these, and importing them
from the topology module built that file's whole schema (a dozen pydantic models, ~0.15 s of
CPU at every start) in a process that never reads a topology.
"""

from __future__ import annotations

from typing import Literal

Role = Literal["peer", "orderer", "gateway", "notary", "vault"]


def check_roles(roles: list[Role]) -> None:
    """The role rules of a node (topology and node.toml alike)."""
    if "gateway" in roles and "peer" not in roles:
        raise ValueError("a gateway needs the peer role on the same node")
