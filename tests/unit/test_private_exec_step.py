"""The private executor commits every block of a driver step in ONE store transaction (one
commit and fsync per step, not per block), all or nothing, on a real store (`psite`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from private_backends import PrivateSite
from test_privacy_store import ME, OTHER, executor, sealed

from dltmw.core.privacy.blocks import PrivateBlock, PrivateEffects, PrivateTxRef
from dltmw.ledger.private_store import PrivateStore
from dltmw.runtime.roles.privacy import executor as executor_module
from dltmw.runtime.roles.privacy.executor import BlockExecutor, PrivateExecutor
from dltmw.v1 import privacy_manager_service_pb2 as P


async def step_blocks(ex: PrivateExecutor, blocks: dict[int, list[PrivateTxRef]]) -> None:
    """One driver step by hand that takes several committed blocks at once (as the driver does
    when blocks queued up while the previous step ran): core stepped per block, then apply."""
    core = ex.core(await ex.store.cursor())

    def step() -> PrivateEffects:
        for number, items in blocks.items():
            core.step(PrivateBlock(number, tuple(items), ex.store.view()))
        return core.ready()

    effects = await asyncio.get_running_loop().run_in_executor(ex.store.executor, step)
    assert len(effects.decided) == len(blocks)
    await BlockExecutor(ex).apply(effects.decided)


def counting(store: PrivateStore) -> list[str]:
    """Count the store's write transactions (the real ones still run)."""
    calls: list[str] = []
    real = store.transaction

    async def spy(fn: Callable[[Any], Any], name: str = "privacy.execute") -> Any:
        calls.append(name)
        return await real(fn, name)

    store.transaction = spy  # type: ignore[method-assign]
    return calls


async def test_a_step_of_several_blocks_is_one_store_transaction(psite: PrivateSite) -> None:
    store = await psite.open()
    try:
        opened = sealed(OTHER, ME, "open", "acct", "100")
        deposits = [sealed(OTHER, ME, "deposit", "acct", str(n)) for n in (1, 2, 3)]
        await store.store_payloads([opened, *deposits])
        ex = executor(store)
        calls = counting(store)
        await step_blocks(
            ex,
            {
                1: [(0, "t0", opened.payload_hash), (1, "t1", deposits[0].payload_hash)],
                2: [(0, "t2", deposits[1].payload_hash)],
                3: [(0, "t3", deposits[2].payload_hash)],
            },
        )
        assert calls == ["privacy.execute"]  # one commit for the three blocks
        assert await store.private_state("bank") == {"acct": b"106"}
        assert await store.cursor() == 4
        records = [await store.ptx(p.payload_hash) for p in [opened, *deposits]]
        assert [(r.block_number, r.status) for r in records if r is not None] == [
            (1, P.PRIVATE_TX_STATUS_EXECUTED),
            (1, P.PRIVATE_TX_STATUS_EXECUTED),
            (2, P.PRIVATE_TX_STATUS_EXECUTED),
            (3, P.PRIVATE_TX_STATUS_EXECUTED),
        ]
    finally:
        await store.close()


async def test_a_step_that_fails_leaves_none_of_its_blocks(
    psite: PrivateSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All or nothing: a failure while recording the step's last block rolls back the earlier
    blocks of the step too, so the cursor never points past effects that were not written."""
    store = await psite.open()
    try:
        opened = sealed(OTHER, ME, "open", "acct", "100")
        deposit = sealed(OTHER, ME, "deposit", "acct", "5")
        await store.store_payloads([opened, deposit])
        ex = executor(store)
        real = executor_module.record

        def record(txn: Any, executed: Any) -> None:
            real(txn, executed)
            if executed.number == 2:
                raise RuntimeError("disk gone while recording block 2")

        monkeypatch.setattr(executor_module, "record", record)
        with pytest.raises(RuntimeError, match="block 2"):
            await step_blocks(
                ex, {1: [(0, "t0", opened.payload_hash)], 2: [(0, "t1", deposit.payload_hash)]}
            )
        assert await store.cursor() == 0
        assert await store.private_state("bank") == {}
        assert await store.ptx(opened.payload_hash) is None
    finally:
        await store.close()
