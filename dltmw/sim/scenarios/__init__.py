"""Seeded whole-network scenarios: every flow on the production nodes, on simulated hosts.

Each scenario is `run(seed, trace) -> ScenarioResult` on a fresh `vloop.VirtualLoop`; the
same seed replays the same run byte for byte (`python -m dltmw.sim --seed N --scenario S`).

| scenario | flow | module |
|---|---|---|
| `eov-solo`, `eov-pbft` | endorse → order → validate, solo or PBFT-lite ordering | `eov.py` |
| `cfg-pbft` | config updates of a PBFT-lite channel under faults | `pbft_config.py` |
| `pbft-censor`, `pbft-cut-off` | the primary censors, or is cut off from backups | `censor.py` |
| `pbft-withhold`, `pbft-forged-headers` | Deliver withheld; headers forged | `withhold.py` |
| `cfg-pbft-members` | replica set 4 -> 5 -> 4, a replica re-keyed, faults | `pbft_members.py` |
| `notary` | notarised UTXO: one single notary under racing spends and crashes | `notary.py` |
| `private` | private payloads: lost pushes, a recipient down, a store lost | `private.py` |
| `jetstream` | jetstream ordering: the real cutter, a modelled stream, faults | `jetstream.py` |
| `xfer` | cross-channel DvPs: coordinator crashes, a stalled orderer, forged proofs | `xfer.py` |
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

from dltmw.sim import vloop
from dltmw.sim.scenarios import (
    censor,
    eov,
    jetstream,
    notary,
    pbft_config,
    pbft_members,
    private,
    reorder,
    withhold,
    xfer,
)
from dltmw.sim.scenarios.result import ScenarioResult

Scenario = Callable[..., Coroutine[Any, Any, ScenarioResult]]  # (seed, *, trace) -> result

SCENARIOS: dict[str, Scenario] = {
    "eov-solo": partial(eov.run, ordering="solo"),
    "eov-pbft": partial(eov.run, ordering="pbft"),
    "eov-pbft-reorder": partial(reorder.run, dissemination=True),
    "eov-pbft-envelopes-reorder": partial(reorder.run, dissemination=False),
    "cfg-pbft": pbft_config.run,
    "cfg-pbft-members": pbft_members.run,
    "cfg-pbft-members-dissemination": partial(pbft_members.run, dissemination=True),
    "pbft-censor": partial(censor.run, mode="censor"),
    "pbft-cut-off": partial(censor.run, mode="cut-off"),
    "pbft-withhold": partial(withhold.run, mode="withhold"),
    "pbft-forged-headers": partial(withhold.run, mode="forged-headers"),
    "notary": notary.run,
    "private": private.run,
    "jetstream": jetstream.run,
    "xfer": xfer.run,
}


def run_scenario(name: str, seed: int, trace: bool = False) -> ScenarioResult:
    """Run scenario `name` with `seed` on its own virtual-time loop."""
    scenario = SCENARIOS[name]
    return vloop.run(seed, lambda: scenario(seed, trace=trace))
