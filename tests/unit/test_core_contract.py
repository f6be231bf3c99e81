"""One core contract: every deciding core of dltmw steps, ticks and hands back the ONE effects
type (`core/effects.py`), so the one driver and the simulator can run each of them."""

from __future__ import annotations

import os

import pytest
from pbft_messages import KEYS

from dltmw.core.committer import CommitCore
from dltmw.core.cutter import BlockCutter
from dltmw.core.effects import Effects
from dltmw.core.handlers.jetstream import JetStreamCutter
from dltmw.core.handlers.notary import SingleNotary
from dltmw.core.handlers.pbft_blocks import BlockAssembler
from dltmw.core.handlers.pbft_orderer import PbftOrdererCore
from dltmw.core.handlers.solo import SoloOrderer
from dltmw.core.hashing import ZERO_HASH
from dltmw.core.notary_cluster import ClusterDecider
from dltmw.core.pbft import PbftConfig, Replica
from dltmw.core.privacy.blocks import PrivateExecution
from dltmw.core.privacy.envelope import PrivacyKey

CONFIG = PbftConfig(n=4)


def replica() -> Replica:
    return Replica(CONFIG, 0, KEYS.signer(0), KEYS.verify)


CORES = {
    "solo-orderer": lambda: SoloOrderer("ch", 1, ZERO_HASH, BlockCutter(10, 1000, 5)),
    "jetstream-cutter": lambda: JetStreamCutter("ch", 1, ZERO_HASH, 0, BlockCutter(10, 1000, 5)),
    "pbft-replica": replica,
    "pbft-orderer": lambda: PbftOrdererCore(
        replica(), BlockAssembler("ch", 0, 3, [b"o"] * 4, KEYS.verify), KEYS.signer(0), 1, b""
    ),
    "single-notary": lambda: SingleNotary(KEYS.signer(0)),
    "notary-cluster-decider": lambda: ClusterDecider(KEYS.signer(0), 0),
    "peer-committer": lambda: CommitCore("ch", 1, ZERO_HASH),
    "private-executor": lambda: PrivateExecution(PrivacyKey(os.urandom(32)), lambda _: None, 0),
}


@pytest.mark.parametrize("make", CORES.values(), ids=list(CORES))
def test_every_core_ticks_and_hands_back_the_one_effects_type(make: object) -> None:
    core = make()  # type: ignore[operator]
    for now in range(1, 4):
        core.tick(now)
    assert isinstance(core.ready(), Effects)
    assert callable(core.step)
