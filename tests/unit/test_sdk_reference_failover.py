"""An SDK `Client.submit` by creator reference that fails over in ordering (review58).

Gateway A hands the envelope to the orderer and then fails (UNAVAILABLE); gateway B's peer
has not committed the block that registered the client's certificate yet, so B refuses the
reference (UNKNOWN_IDENTITY_REFERENCE). The transaction may already be ordered: the client must
offer the SAME envelope (tx id) again, never redo it in full under a new tx id — that ordered
it twice. The gateways are fakes of `GatewayClient` (the SDK's connection object, below the
I/O boundary); the real-process fail-over is tests/integration/test_sdk_failover.py.
Red without `_submit_as`'s wait (the first two tests: two tx ids ordered) or without `submit`'s
`handed` check (a MALFORMED refusal after the fail-over redone in full). A failure once the
envelope may have been handed on is `CommitUnknown` with the tx id, finished by `resume_submit`
(red with `_order` raising the plain error). Also the SDK's size check before sending (`_fits`,
the last test).
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from local_grpc import client_signer
from test_private_pending import refused

from dltmw.client.creator_reference import CreatorReferences
from dltmw.core.hashing import compute_tx_id
from dltmw.sdk import client as sdk_client
from dltmw.sdk.client import Client
from dltmw.sdk.errors import CommitUnknown, InvalidRequest, LimitExceeded, Unavailable
from dltmw.v1 import errors_pb2 as R
from dltmw.v1 import gateway_service_pb2 as G
from dltmw.v1 import transaction_pb2 as C

CH = "ch"
SIGNER = client_signer()


class Orderer:
    """What the fake gateways hand envelopes to: tx ids in order, a copy refused as a
    gateway refuses one already on its ledger (DUPLICATE_TX_ID)."""

    def __init__(self, commits: bool = True) -> None:
        self.ordered: list[str] = []
        self.commits = commits  # False: what is ordered has not committed (yet)


class Gateway:
    """A fake `GatewayClient`: `lag` reference refusals before its peer has the block that
    registered the reference; `dies` fails after handing the envelope on."""

    def __init__(
        self,
        orderer: Orderer,
        lag: int,
        dies: bool,
        reason: int = R.ERROR_REASON_UNKNOWN_IDENTITY_REFERENCE,
    ) -> None:
        self.orderer, self.lag, self.dies, self.reason = orderer, lag, dies, reason
        self.refusals = 0

    def proposal_bytes(
        self, channel_id: str, contract: str, function: str, args: Any, creator: bytes
    ) -> tuple[bytes, str]:
        return creator, compute_tx_id(b"n" * 24, creator)

    async def endorse_batched(self, channel_id: str, proposal: bytes) -> Any:
        return SimpleNamespace(prepared_payload=proposal, result=SimpleNamespace(payload=b""))

    async def order_batched(self, channel_id: str, tx_id: str, payload: bytes) -> Any:
        if payload != SIGNER.identity_bytes and self.refusals < self.lag:
            self.refusals += 1
            raise refused(self.reason, grpc.StatusCode.FAILED_PRECONDITION, {})
        if tx_id in self.orderer.ordered:
            raise refused(R.ERROR_REASON_DUPLICATE_TX_ID, grpc.StatusCode.ALREADY_EXISTS, {})
        self.orderer.ordered.append(tx_id)
        if self.dies:
            raise refused(R.ERROR_REASON_PEER_UNAVAILABLE, grpc.StatusCode.UNAVAILABLE, {})
        return G.CommitStatusResponse(result=C.TX_VALIDATION_CODE_VALID, block_number=9)

    async def commit_status(self, channel_id: str, tx_id: str) -> Any:
        if not self.orderer.commits or tx_id not in self.orderer.ordered:
            await asyncio.sleep(3600)  # (a real gateway waits for the commit; cut by the caller)
        return G.CommitStatusResponse(result=C.TX_VALIDATION_CODE_VALID, block_number=9)


def client(a: Gateway, b: Gateway, deadline_s: float) -> Client:
    c = Client.__new__(Client)
    c.deadline_s = deadline_s
    c.profile = SimpleNamespace(gateways=[a, b])
    c._seen = {}
    c._tasks, c._gateway, c._privacy = set(), None, {}
    c._closing, c._busy, c._left, c._closers = False, {}, {}, set()
    c.gateway_name = ""
    c.references = CreatorReferences(SIGNER.identity_bytes, presuming=True)
    # the client saw one of its full-creator transactions commit: it names itself by reference
    c.references.committed(CH, SIGNER.identity_bytes, C.TX_VALIDATION_CODE_VALID)
    state = {"gw": a}

    async def current() -> Gateway:
        return state["gw"]

    async def alive(gateway: Gateway) -> bool:  # (a health check's answer)
        return getattr(gateway, "alive", True)

    async def fail_over(failed: Gateway, slow: bool = False) -> None:
        state["gw"] = b

    c._current, c._fail_over = current, fail_over  # type: ignore[method-assign]
    c._alive = alive  # type: ignore[method-assign]
    return c


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sdk_client, "REFERENCE_LAG_S", 0.001)
    monkeypatch.setattr(sdk_client, "STATUS_PROBE_S", 0.05)


async def test_a_lagging_gateway_after_a_fail_over_gets_the_same_tx_id_again() -> None:
    orderer = Orderer()
    a, b = Gateway(orderer, 0, dies=True), Gateway(orderer, 3, dies=False)
    done = await client(a, b, 5.0).submit(CH, "kv", "put", "k", "v")
    assert b.refusals == 3  # B refused the reference until its peer caught up
    assert orderer.ordered == [done.tx_id]  # ordered once, under the reference's tx id
    reference = CreatorReferences(SIGNER.identity_bytes).reference
    assert reference != SIGNER.identity_bytes
    assert done.tx_id == compute_tx_id(b"n" * 24, reference)


async def test_a_gateway_that_never_catches_up_leaves_the_outcome_unknown_not_redone() -> None:
    """The deadline passes while B still refuses the reference: the caller gets `CommitUnknown`
    naming the tx id A may have ordered (not a retryable `Unavailable`, which invites a second
    `submit` under a new tx id); `resume_submit` once B caught up returns that transaction's
    commit, ordered once. Red with `_order` raising the plain error (Unavailable, no tx id)."""
    orderer = Orderer()
    a, b = Gateway(orderer, 0, dies=True), Gateway(orderer, 10**9, dies=False)
    c = client(a, b, 0.3)
    with pytest.raises(CommitUnknown) as raised:
        await c.submit(CH, "kv", "put", "k", "v")
    unknown = raised.value
    assert not unknown.retryable and not isinstance(unknown, Unavailable)
    assert orderer.ordered == [unknown.tx_id]  # the first copy only: nothing redone in full
    assert unknown.metadata["tx_id"] == unknown.tx_id and unknown.channel_id == CH
    b.lag = 0  # B's peer caught up
    done = await c.resume_submit(unknown)
    assert done.tx_id == unknown.tx_id and done.block_number == 9
    assert orderer.ordered == [unknown.tx_id]  # B refused the copy as a duplicate: waited


async def test_a_gateway_lost_after_the_order_step_is_commit_unknown() -> None:
    """One gateway, lost after it handed the envelope on: `CommitUnknown`, and a resume on the
    gateway that is back commits the same tx id once. Red as above."""
    orderer = Orderer()
    a = Gateway(orderer, 0, dies=True)
    c = client(a, a, 5.0)
    c.profile = SimpleNamespace(gateways=[a])  # no other gateway to fail over to
    with pytest.raises(CommitUnknown) as raised:
        await c.submit(CH, "kv", "put", "k", "v")
    assert orderer.ordered == [raised.value.tx_id]
    a.dies = False
    done = await c.resume_submit(raised.value)
    assert done.tx_id == raised.value.tx_id and orderer.ordered == [done.tx_id]


async def test_a_gateway_lost_before_any_order_step_is_plain_unavailable() -> None:
    """Lost at endorsement: nothing was handed on, so the caller may simply submit again."""
    orderer = Orderer()
    a = Gateway(orderer, 0, dies=False)

    async def endorse_batched(channel_id: str, proposal: bytes) -> Any:
        raise refused(R.ERROR_REASON_PEER_UNAVAILABLE, grpc.StatusCode.UNAVAILABLE, {})

    a.endorse_batched = endorse_batched  # type: ignore[method-assign]
    with pytest.raises(Unavailable) as raised:
        await client(a, a, 5.0).submit(CH, "kv", "put", "k", "v")
    assert not isinstance(raised.value, CommitUnknown) and raised.value.retryable
    assert orderer.ordered == []


async def test_a_refusal_at_the_first_order_step_is_redone_in_full() -> None:
    orderer = Orderer()
    a = Gateway(orderer, 1, dies=False)  # refuses before handing anything on
    done = await client(a, a, 5.0).submit(CH, "kv", "put", "k", "v")
    assert orderer.ordered == [done.tx_id]
    assert done.tx_id == compute_tx_id(b"n" * 24, SIGNER.identity_bytes)  # in full


async def test_a_reference_refused_as_malformed_after_a_fail_over_is_not_redone() -> None:
    """B's channel no longer takes references (MALFORMED): the first copy may be ordered all
    the same, so the refusal reaches the caller instead of a second transaction in full; the
    client names itself in full on that channel from then on (red without `_order`'s
    MALFORMED check: the next transaction would be sent by reference and refused first)."""
    orderer = Orderer(commits=False)  # A's copy ordered, not committed yet
    a = Gateway(orderer, 0, dies=True)
    b = Gateway(orderer, 10**9, dies=False, reason=R.ERROR_REASON_MALFORMED)
    c = client(a, b, 5.0)
    with pytest.raises(CommitUnknown) as raised:
        await c.submit(CH, "kv", "put", "k", "v")
    assert raised.value.reason == "MALFORMED"
    assert orderer.ordered == [raised.value.tx_id]
    assert c.references.creator(CH) == SIGNER.identity_bytes  # in full from now on


async def test_a_refusal_after_a_fail_over_of_a_committed_copy_returns_its_commit() -> None:
    """B refuses the envelope (here MALFORMED; a timestamp window or a stale read alike) while
    A's copy already committed: the client finds the commit instead of raising. Red without
    `_order`'s status probe (CommitUnknown)."""
    orderer = Orderer()
    a = Gateway(orderer, 0, dies=True)
    b = Gateway(orderer, 10**9, dies=False, reason=R.ERROR_REASON_MALFORMED)
    done = await client(a, b, 5.0).submit(CH, "kv", "put", "k", "v")
    assert orderer.ordered == [done.tx_id] and done.block_number == 9


async def test_a_resume_waits_out_a_lagging_gateways_reference_refusals() -> None:
    """The resumed transaction names the client by reference; B's peer still lags: the resume
    offers the same tx id again until B caught up (a refused reference in a resume is not
    "nothing changed"). Red with `resume_submit` starting its steps as a first try."""
    orderer = Orderer(commits=False)
    a, b = Gateway(orderer, 0, dies=True), Gateway(orderer, 10**9, dies=False)
    c = client(a, b, 0.3)
    with pytest.raises(CommitUnknown) as raised:
        await c.submit(CH, "kv", "put", "k", "v")
    orderer.commits, b.lag, b.refusals = True, 3, 0
    c.deadline_s = 5.0
    done = await c.resume_submit(raised.value)
    assert b.refusals == 3 and done.tx_id == raised.value.tx_id
    assert orderer.ordered == [done.tx_id]


async def test_a_resume_of_another_clients_transaction_is_refused() -> None:
    orderer = Orderer()
    a = Gateway(orderer, 0, dies=True)
    c = client(a, a, 5.0)
    c.profile = SimpleNamespace(gateways=[a])
    with pytest.raises(CommitUnknown) as raised:
        await c.submit(CH, "kv", "put", "k", "v")
    raised.value.creator = b"someone else"
    with pytest.raises(InvalidRequest):
        await c.resume_submit(raised.value)
    assert orderer.ordered == [raised.value.tx_id]


async def test_an_item_too_large_for_a_gateway_request_is_refused_before_sending() -> None:
    """grpc reports an over-size write as INTERNAL "Internal error from Core", which the SDK
    takes for a lost stream and fails over on (review58): the SDK refuses such an item first,
    MESSAGE_TOO_LARGE, with nothing sent, naming the tx id. Red without `_fits` (or with it
    outside `_endorse_as`'s `_naming`: no tx id)."""
    orderer = Orderer()
    large = Gateway(orderer, 0, dies=False)
    asked: list[bytes] = []

    def proposal_bytes(*args: Any) -> tuple[bytes, str]:
        return b"x" * sdk_client.MAX_MESSAGE_BYTES, "t" * 64

    async def endorse_batched(channel_id: str, proposal: bytes) -> Any:
        asked.append(proposal)
        raise AssertionError("sent")

    large.proposal_bytes = proposal_bytes  # type: ignore[method-assign]
    large.endorse_batched = endorse_batched  # type: ignore[method-assign]
    with pytest.raises(LimitExceeded) as refused_here:
        await client(large, large, 5.0).submit(CH, "kv", "put", "k", "v")
    assert refused_here.value.reason == "MESSAGE_TOO_LARGE"
    assert refused_here.value.metadata["tx_id"] == "t" * 64  # (named, as every step's error)
    assert asked == [] and orderer.ordered == []


async def test_a_failure_without_a_reason_after_the_order_step_is_commit_unknown() -> None:
    """The Transact stream breaks as UNKNOWN (no ErrorInfo: no node refused anything) after
    the envelope was handed on: `CommitUnknown`, not a plain `Error`. Red without the
    reason check in `_order`."""
    orderer = Orderer(commits=False)
    a = Gateway(orderer, 0, dies=False)

    async def order_batched(channel_id: str, tx_id: str, payload: bytes) -> Any:
        orderer.ordered.append(tx_id)
        raise grpc.aio.AioRpcError(
            grpc.StatusCode.UNKNOWN, grpc.aio.Metadata(), grpc.aio.Metadata(), "broken", None
        )

    a.order_batched = order_batched  # type: ignore[method-assign]
    c = client(a, a, 5.0)
    c.profile = SimpleNamespace(gateways=[a])
    with pytest.raises(CommitUnknown) as raised:
        await c.submit(CH, "kv", "put", "k", "v")
    assert raised.value.code == "UNKNOWN" and orderer.ordered == [raised.value.tx_id]
