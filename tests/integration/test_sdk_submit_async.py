"""`Client.submit_async` and the outcome rules after a hand-off, on real node processes.

1. The orderer process is stopped (SIGSTOP: it holds what it was sent, as a hung or cut-off
   orderer does) when a transaction is submitted: the caller's own timeout cuts its wait on the
   handle; the handle still names the tx id, `commit_status` by that tx id says "not on the
   ledger", and once the orderer runs again the same transaction commits — once, VALID. Red
   without `asyncio.shield` in `Submitted.committed` (the caller's cancel stops the ordering
   task: the second wait raises).
2. The orderer is killed (-9) under a handle whose wait was cut: the handle's outcome is
   `CommitUnknown` naming that tx id; after a restart `resume_submit` commits it once.
3. An orderer answering OVERLOADED at the order step (its inbox bounded to one envelope,
   a burst of transactions sent while it was stopped): every such submit is `CommitUnknown`
   with its tx id, never a retryable `Overloaded` (a caller answers that with a second
   transaction); resumed, every intent is on the ledger exactly once. Red without
   `Overloaded` in `Client._order`'s lost check.
Also docs/embedding.md's `submit_async` example (its second python block) is run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import dltmw
from dltmw.ops.supervisor import Supervisor
from tests.integration.conftest import TWO_ORG
from tests.integration.ledgers import VALID, blocks, ledger_path, tx_codes, wait_until
from tests.integration.test_bus import Network
from tests.integration.test_embedding_docs import DOC, _run

pytestmark = pytest.mark.integration
CH = "trades"


@contextlib.contextmanager
def stopped(sup: Supervisor, node_id: str) -> Iterator[None]:
    """`node_id`'s process stopped (SIGSTOP) inside the block, continued (SIGCONT) after."""
    pid = sup.node_pid(node_id)
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):  # (killed meanwhile)
            os.kill(pid, signal.SIGCONT)


@contextlib.asynccontextmanager
async def cut_under_a_stopped_orderer(
    client: dltmw.Client, sup: Supervisor, cut_s: float
) -> AsyncIterator[dltmw.Submitted]:
    """k0 committed (the client names itself by reference from then on), then k1 handed on
    while the orderer is stopped, and the caller's own timeout cuts its wait on the handle;
    the orderer continues when the block ends."""
    await client.submit(CH, "kv", "put", "k0", "v0")
    with stopped(sup, "orderer0"):
        handle = await client.submit_async(CH, "kv", "put", "k1", "v1")
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(cut_s):
                await handle.committed()
        yield handle


def on_ledger(net: Path, tx_ids: list[str]) -> dict[str, list[int]]:
    """peer0.org2's validation codes of every tx id, once all of `tx_ids` are there."""
    asyncio.run(
        wait_until(
            lambda: set(tx_ids) <= set(tx_codes(blocks(ledger_path(net, "peer0.org2")))),
            30,
            "peer0.org2 commits every transaction",
        )
    )
    return tx_codes(blocks(ledger_path(net, "peer0.org2")))


def test_a_cut_wait_keeps_the_tx_id_and_the_transaction_commits_once(network: Network) -> None:
    net, sup = network(TWO_ORG, batch_ms=10)
    profile = dltmw.Profile.from_network(net, "user1.org1")

    async def scenario() -> str:
        async with dltmw.Client(profile, deadline_s=30) as client:
            async with cut_under_a_stopped_orderer(client, sup, 1.0) as handle:
                assert not handle.done()  # the ordering goes on
                assert await client.commit_status(CH, handle.tx_id, wait_s=0.2) is None
            done = await handle.committed()
            assert done.tx_id == handle.tx_id and done.text == ""
            status = await client.commit_status(CH, handle.tx_id)
            assert status is not None and status.valid
            assert status.block_number == done.block_number
            return done.tx_id

    tx_id = asyncio.run(scenario())
    codes = on_ledger(net, [tx_id])
    assert codes[tx_id] == [VALID], codes[tx_id]
    assert sum(1 for c in codes.values() if VALID in c) == 2, codes  # k0 and k1, nothing else


def test_an_orderer_killed_under_a_cut_wait_is_commit_unknown_on_the_handle(
    network: Network,
) -> None:
    net, sup = network(TWO_ORG, batch_ms=10)
    profile = dltmw.Profile.from_network(net, "user1.org1")

    async def scenario() -> str:
        async with dltmw.Client(profile, deadline_s=6) as client:
            async with cut_under_a_stopped_orderer(client, sup, 0.5) as handle:
                await asyncio.to_thread(sup.kill, "orderer0")  # (-9 of a stopped process)
            with pytest.raises(dltmw.CommitUnknown) as raised:
                await handle.committed()
            assert raised.value.tx_id == handle.tx_id and not raised.value.retryable
            await asyncio.to_thread(sup.start, "orderer0")
            await asyncio.to_thread(sup.wait_ready, "orderer0")
            for _ in range(10):  # (each try bounded by the client's deadline)
                with contextlib.suppress(dltmw.CommitUnknown):
                    done = await client.resume_submit(raised.value)
                    break
            else:
                raise AssertionError("not committed after 10 resumes")
            assert done.tx_id == handle.tx_id
            return done.tx_id

    tx_id = asyncio.run(scenario())
    codes = on_ledger(net, [tx_id])
    assert codes[tx_id].count(VALID) == 1, codes[tx_id]
    assert sum(1 for c in codes.values() if VALID in c) == 2, codes


BURST = 24


def _bounded_inbox(net: Path, node_id: str, queue_max: int) -> None:
    """Set `[limits] queue_max` of `node_id`'s node.toml (its driver's inbox among others)."""
    path = net / "nodes" / node_id / "node.toml"
    text = path.read_text()
    if re.search(r"^\[limits\]", text, re.M):
        text = re.sub(r"^\[limits\]\n", f"[limits]\nqueue_max = {queue_max}\n", text, flags=re.M)
    else:
        text += f"\n[limits]\nqueue_max = {queue_max}\n"
    path.write_text(text)


def test_an_orderer_overloaded_at_the_order_step_is_commit_unknown_resumed_once(
    network: Network,
) -> None:
    net, sup = network(TWO_ORG, batch_ms=10)
    sup.stop("orderer0")
    _bounded_inbox(net, "orderer0", 1)
    sup.start("orderer0")
    sup.wait_ready("orderer0")
    profile = dltmw.Profile.from_network(net, "user1.org1")

    async def scenario() -> tuple[list[str], list[dltmw.CommitUnknown]]:
        async with dltmw.Client(profile, deadline_s=20) as client:
            await client.submit(CH, "kv", "put", "k0", "v0")
            with stopped(sup, "orderer0"):  # the burst reaches it at once when it continues
                handles = [
                    await client.submit_async(CH, "kv", "put", f"k{i}", "v")
                    for i in range(1, BURST + 1)
                ]
                await asyncio.sleep(0.5)  # (every envelope sent to the stopped orderer)
            outcomes = await asyncio.gather(
                *(h.committed() for h in handles), return_exceptions=True
            )
            plain = [o for o in outcomes if isinstance(o, dltmw.Error | BaseException)]
            unknown = [o for o in plain if isinstance(o, dltmw.CommitUnknown)]
            assert len(unknown) == len(plain), [repr(o) for o in plain if o not in unknown]
            assert any(u.reason == "OVERLOADED" for u in unknown), "no OVERLOADED: not exercised"
            for u in unknown:
                for _ in range(10):  # (the orderer's inbox holds one: resumes may meet it full)
                    with contextlib.suppress(dltmw.CommitUnknown):
                        await client.resume_submit(u)
                        break
                else:
                    raise AssertionError(f"{u.tx_id} not committed after 10 resumes")
            return [h.tx_id for h in handles], unknown

    tx_ids, unknown = asyncio.run(scenario())
    assert {u.tx_id for u in unknown} <= set(tx_ids)
    codes = on_ledger(net, tx_ids)
    for tx_id in tx_ids:
        assert codes[tx_id].count(VALID) == 1, f"{tx_id}: {codes[tx_id]}"
    assert sum(1 for c in codes.values() if VALID in c) == BURST + 1, codes


def test_the_docs_submit_async_example_runs(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    example = next(b for b in blocks if "submit_async" in b)
    script = tmp_path / "submit_async.py"
    script.write_text(example)
    out = _run(script)
    assert "submitted True" in out and re.search(r"committed in block \d+ VALID", out), out
