"""The private store and executor on a real sqlite file and a real PostgreSQL schema (`psite`):
execute, not held, tampered, re-derive."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from private_backends import PrivateSite

from dltmw.contracts import builtin_contract
from dltmw.core.privacy.blocks import PrivateBlock, PrivateEffects, PrivateTxRef
from dltmw.core.privacy.envelope import PrivacyKey, payload_hash, recipients_of, seal
from dltmw.ledger import private_purge
from dltmw.ledger.at_rest import PLAIN, DataKeyRing, RecordCipher
from dltmw.ledger.private_store import NewPayload, PrivateStore
from dltmw.runtime.roles.privacy.executor import BlockExecutor, PrivateExecutor
from dltmw.runtime.roles.privacy.private_channel import by_size
from dltmw.v1 import config_pb2, private_payload_pb2
from dltmw.v1 import privacy_manager_service_pb2 as P

ME, OTHER = PrivacyKey(os.urandom(32)), PrivacyKey(os.urandom(32))


def sealed(sender: PrivacyKey, to: PrivacyKey, fn: str, *args: str) -> NewPayload:
    inv = private_payload_pb2.PrivateInvocation(
        contract="bank", function=fn, args=[a.encode() for a in args]
    )
    p = seal(
        inv.SerializeToString(),
        sender,
        [to.public_key],
        os.urandom(32),
        os.urandom(12),
        [os.urandom(12), os.urandom(12)],
    )
    return NewPayload(payload_hash(p), p.SerializeToString(), tuple(recipients_of(p)))


def executor(store: PrivateStore) -> PrivateExecutor:
    config = config_pb2.ChannelConfig(
        channel_id="c", contracts=[config_pb2.ContractConfig(name="bank")]
    )
    deployed = SimpleNamespace(deployed=lambda: {"bank": builtin_contract("bank")})
    peer: Any = SimpleNamespace(
        view=SimpleNamespace(config=config, channel_id="c"), lifecycle=deployed
    )
    return PrivateExecutor(ME, peer, store)


async def execute(ex: PrivateExecutor, number: int, items: list[PrivateTxRef]) -> None:
    """One step of the executor's driver, by hand: the core stepped on the store thread with
    the store's view, its effects carried out by the executor (one store transaction)."""
    core = ex.core(await ex.store.cursor())

    def step() -> PrivateEffects:
        core.step(PrivateBlock(number, tuple(items), ex.store.view()))
        return core.ready()

    effects = await asyncio.get_running_loop().run_in_executor(ex.store.executor, step)
    await BlockExecutor(ex).apply(effects.decided)


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted-at-rest"])
async def test_block_execution_statuses_and_rederive(
    tmp_path: Path, psite: PrivateSite, encrypted: bool
) -> None:
    values = RecordCipher(DataKeyRing(tmp_path / "data-keys", bytes(32))) if encrypted else PLAIN
    store = await psite.open(values=values)
    try:
        assert store.created
        opened = sealed(OTHER, ME, "open", "acct", "100")
        deposit = sealed(ME, OTHER, "deposit", "acct", "5")
        refused = sealed(ME, OTHER, "withdraw", "acct", "1000")
        altered = sealed(OTHER, ME, "deposit", "acct", "7")
        foreign = sealed(OTHER, PrivacyKey(os.urandom(32)), "deposit", "acct", "9")  # not ours
        p = private_payload_pb2.EncryptedPayload.FromString(altered.data)
        p.ciphertext = bytes([p.ciphertext[0] ^ 1]) + p.ciphertext[1:]
        altered = NewPayload(altered.payload_hash, p.SerializeToString(), altered.recipients)
        assert await store.store_payloads([opened, deposit, refused, altered, foreign]) == 5
        absent = bytes(32)
        items = [
            (0, "t0", opened.payload_hash),
            (1, "t1", deposit.payload_hash),
            (2, "t2", refused.payload_hash),
            (3, "t3", altered.payload_hash),
            (4, "t4", foreign.payload_hash),
            (5, "t5", absent),
        ]
        ex = executor(store)
        await execute(ex, 3, items)
        statuses = [(await store.ptx(d)).status for _, _, d in items]  # type: ignore[union-attr]
        assert statuses == [
            P.PRIVATE_TX_STATUS_EXECUTED,
            P.PRIVATE_TX_STATUS_EXECUTED,
            P.PRIVATE_TX_STATUS_CONTRACT_FAILED,
            P.PRIVATE_TX_STATUS_TAMPERED,
            P.PRIVATE_TX_STATUS_NOT_HELD,
            P.PRIVATE_TX_STATUS_NOT_HELD,
        ]
        assert await store.private_state("bank") == {"acct": b"105"}
        assert await store.cursor() == 4
        first = await store.ptx(deposit.payload_hash)
        await store.reset_private_state()
        assert await store.private_state("bank") == {} and await store.cursor() == 0
        await execute(ex, 3, items)
        assert await store.ptx(deposit.payload_hash) == first  # re-derivation is deterministic
        assert [len(c) for c in [await store.payloads_for(OTHER.public_key, b"", 2)]] == [2]
    finally:
        await store.close()


def test_by_size_chunks_under_the_budget_and_keeps_order() -> None:
    sizes = [3, 3, 3, 9, 1, 1]
    chunks = by_size(sizes, lambda n: n, 6)
    assert chunks == [[3, 3], [3], [9], [1, 1]]
    assert [x for c in chunks for x in c] == sizes
    assert by_size([], lambda n: n, 6) == []


async def test_store_counts_new_payloads_and_replaces_only_when_asked(psite: PrivateSite) -> None:
    store = await psite.open()
    try:
        p = sealed(ME, OTHER, "open", "x", "1")
        assert await store.store_payloads([p, p]) == 1
        assert await store.store_payloads([p]) == 0
        other = NewPayload(p.payload_hash, b"other bytes", p.recipients)
        assert await store.store_payloads([other]) == 0
        assert await store.payload(p.payload_hash) == p.data
        replacing = NewPayload(p.payload_hash, b"more boxes", p.recipients, replace=True)
        assert await store.store_payloads([replacing]) == 1
        assert await store.payload(p.payload_hash) == b"more boxes"
        assert await store.held([p.payload_hash, bytes(32)]) == {p.payload_hash: b"more boxes"}
    finally:
        await store.close()


async def test_a_store_replacing_a_lost_one_stays_incomplete_until_recovered(
    psite: PrivateSite,
) -> None:
    """Created in place of a lost store, it is marked incomplete in the step that creates it, and
    stays so across reopenings (a crash during recovery) until recovery marks it complete."""
    fresh = await psite.sibling("new").open(lost_if_created=False)
    assert fresh.created and not await fresh.incomplete()
    await fresh.close()
    lost = await psite.open(lost_if_created=True)
    assert lost.created and await lost.incomplete()
    await lost.close()
    reopened = await psite.open(lost_if_created=True)  # not created now
    assert not reopened.created and await reopened.incomplete()
    await reopened.mark_complete()
    await reopened.close()
    again = await psite.open(lost_if_created=True)
    assert not await again.incomplete()
    await again.close()


async def test_a_deferred_payload_becomes_held_when_its_transaction_is_executed(
    psite: PrivateSite,
) -> None:
    """Recovery sets aside payloads of transactions not on the ledger yet: invisible to Receive
    and Resend, taken into the store by the executor's lookup once the transaction commits."""
    store = await psite.open()
    item = sealed(OTHER, ME, "open", "acct", "5")
    await store.defer_payloads([item])
    assert await store.payload(item.payload_hash) is None
    assert await store.payloads_for(ME.public_key, b"", 10) == []
    looked_up = await store.transaction(lambda txn: txn.payload(item.payload_hash))
    assert looked_up == item.data
    assert await store.payload(item.payload_hash) == item.data
    assert await store.payloads_for(ME.public_key, b"", 10) == [item.data]
    await store.close()


async def test_held_answers_for_many_hashes_in_chunks(psite: PrivateSite) -> None:
    """Held payloads are looked up `IN_CHUNK` hashes per statement: more than one chunk, with
    duplicates and hashes not held, gives exactly the held ones."""
    store = await psite.open()
    try:
        stored = [NewPayload(os.urandom(32), os.urandom(8), (ME.public_key,)) for _ in range(300)]
        assert await store.store_payloads(stored) == 300
        asked = [p.payload_hash for p in stored] * 2 + [os.urandom(32) for _ in range(300)]
        assert len(set(asked)) > 2 * private_purge.IN_CHUNK
        assert await store.held(asked) == {p.payload_hash: p.data for p in stored}
        assert await store.held([]) == {}
    finally:
        await store.close()
