"""The agreement run kept by the runtime and applied by the executor, on a real store (`psite`):
`Agreements._run_many` keeps each reusable run in the channel's `PriorRuns`, the executor's
`load` takes a block's runs out, and the commit applies them without executing — with the same
records and private state as an executor that kept nothing (a restart) and executes each.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from private_backends import PrivateSite
from test_privacy_store import ME, OTHER, executor, sealed

from dltmw.core.privacy.blocks import PrivateEffects
from dltmw.ledger.private_store import PrivateStore
from dltmw.runtime.roles.privacy.agreement import Agreements
from dltmw.runtime.roles.privacy.executor import BlockExecutor, CommittedPrivate, PrivateExecutor
from dltmw.runtime.roles.privacy.prior_runs import PriorRuns
from dltmw.v1 import block_pb2, config_pb2
from dltmw.v1 import privacy_manager_service_pb2 as P


async def commit(ex: PrivateExecutor, number: int, digests: list[bytes]) -> int:
    """One driver step by hand through `BlockExecutor` (load, core on the store's thread,
    apply); returns how many outcomes reused their agreement run."""
    block = block_pb2.Block(header=block_pb2.BlockHeader(number=number))
    parsed = CommittedPrivate(
        block, tuple((i, f"t{i}", d, None) for i, d in enumerate(digests)), ()
    )
    loaded = await BlockExecutor(ex).load([parsed])
    core = ex.core(await ex.store.cursor())

    def step() -> PrivateEffects:
        core.step(loaded[0])
        return core.ready()

    effects = await asyncio.get_running_loop().run_in_executor(ex.store.executor, step)
    await BlockExecutor(ex).apply(effects.decided)
    return sum(o.reused for e in effects.decided for o in e.outcomes)


async def run_and_commit(
    store: PrivateStore, digests: list[bytes], runs: PriorRuns | None
) -> tuple[int, list[object], dict[str, bytes], int]:
    """Agreement runs then commits of the opening (block 1), then of a deposit and a refused
    withdrawal (block 2), each agreed on the state before its block."""
    ex = executor(store)
    ex.prior_runs = runs
    channel = SimpleNamespace(
        store=store,
        view=SimpleNamespace(config=config_pb2.ChannelConfig()),
        prior_runs=runs if runs is not None else PriorRuns(),
    )
    agreements = Agreements(SimpleNamespace(), ME)  # type: ignore[arg-type]
    ran = await agreements._run_many(channel, ex.contract_of, digests[:1])  # type: ignore[arg-type]
    assert not isinstance(ran[0], BaseException)
    reused = await commit(ex, 1, digests[:1])
    # the deposit and withdrawal agreed on the state after the opening (withdraw is refused)
    await agreements._run_many(channel, ex.contract_of, digests[1:])  # type: ignore[arg-type]
    reused += await commit(ex, 2, digests[1:])
    records = [await store.ptx(d) for d in digests]
    return reused, records, await store.private_state("bank"), len(channel.prior_runs)


async def test_the_kept_runs_commit_what_executing_again_commits(psite: PrivateSite) -> None:
    store = await psite.open()
    try:
        payloads = [
            sealed(OTHER, ME, "open", "acct", "100"),
            sealed(OTHER, ME, "deposit", "acct", "5"),
            sealed(OTHER, ME, "withdraw", "acct", "1000"),
        ]
        await store.store_payloads(payloads)
        digests = [p.payload_hash for p in payloads]
        reused, records, state, left = await run_and_commit(store, digests, PriorRuns())
        assert (reused, left) == (2, 0)  # opening and deposit reused; a refusal is not kept
        assert state == {"acct": b"105"}
        await store.reset_private_state()  # executed again from block 0, nothing kept
        zero, records_again, state_again, _ = await run_and_commit(store, digests, None)
        assert zero == 0
        assert state_again == state
        assert [(r.status, r.state_hash, r.block_number, r.tx_index) for r in records] == [  # type: ignore[attr-defined]
            (r.status, r.state_hash, r.block_number, r.tx_index)
            for r in records_again  # type: ignore[attr-defined]
        ]
        assert [r.status for r in records] == [  # type: ignore[attr-defined]
            P.PRIVATE_TX_STATUS_EXECUTED,
            P.PRIVATE_TX_STATUS_EXECUTED,
            P.PRIVATE_TX_STATUS_CONTRACT_FAILED,
        ]
    finally:
        await store.close()
