"""Loop turns a lone bus message does not spend (issue 14, branch bus9): the SDK client's
gateway in use is returned without its connect lock, and the gateway's endorsement gathering
does not gather asks that already ended. Each is a wait on the one event loop of the
embedded network's path; the tests pin the mechanism, not a time."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from dltmw.core.policy import PolicyResult
from dltmw.runtime.roles.gateway import endorsing
from dltmw.runtime.roles.gateway.endorsing import BatchEndorser
from dltmw.sdk.client import Client


def test_the_gateway_in_use_is_returned_while_another_caller_connects() -> None:
    async def scenario() -> None:
        gateway = object()
        client: Any = SimpleNamespace(_gateway=gateway, _lock=asyncio.Lock())
        async with client._lock:  # a caller holds the connect lock (a fail-over)
            current = asyncio.ensure_future(Client._current(client))
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            assert current.done(), "waited for the connect lock with a gateway in use"
            assert current.result() is gateway

    asyncio.run(scenario())


def _view(peers: list[Any]) -> Any:
    """A channel view naming `peers`, whose nodes sign as their identities (no references)."""
    return SimpleNamespace(
        config=SimpleNamespace(peers=peers),
        membership=SimpleNamespace(reference_of=lambda identity: identity),
    )


class _Job:
    """One proposal whose policy is satisfied by the first answer of each endorser asked."""

    def __init__(self, endorsers: list[str]) -> None:
        self.decision = SimpleNamespace(result=PolicyResult.PENDING)
        self.collector = SimpleNamespace(to_ask=lambda: endorsers)
        self.checked = object()
        self.min_block = 0
        self.answered: set[str] = set()
        self._endorsers = endorsers

    def step(self, node_id: str, answer: Any, identity: Any, local_block: int) -> list[Any]:
        self.answered.add(node_id)
        if self.answered == set(self._endorsers):
            self.decision = SimpleNamespace(result=PolicyResult.SATISFIED)
        return []


def test_every_ask_answered_ends_without_a_gather(monkeypatch: pytest.MonkeyPatch) -> None:
    gathered: list[int] = []
    real_gather = asyncio.gather

    def gather(*aws: Any, **kwargs: Any) -> Any:
        gathered.append(len(aws))
        return real_gather(*aws, **kwargs)

    async def ask(
        node_id: str, checked: list[Any], min_blocks: list[int], first: bool
    ) -> list[Any]:
        await asyncio.sleep(0)
        return [f"answer of {node_id}"] * len(checked)

    peers = [SimpleNamespace(node_id=n, identity=n) for n in ("peer0.org1", "peer0.org2")]
    endorser: Any = SimpleNamespace(
        _peer=SimpleNamespace(view=_view(peers)),
        _ask=ask,
        _local_block=lambda: 0,
        _ctx=SimpleNamespace(node_id="peer0.org1"),
    )
    jobs = [_Job(["peer0.org1", "peer0.org2"]), _Job(["peer0.org1", "peer0.org2"])]

    async def scenario() -> None:
        monkeypatch.setattr(endorsing.asyncio, "gather", gather)
        try:
            await BatchEndorser._gather(endorser, jobs)  # type: ignore[arg-type]
        finally:
            monkeypatch.undo()

    asyncio.run(scenario())
    assert all(j.decision.result is PolicyResult.SATISFIED for j in jobs)
    assert gathered == [], "gathered asks that had all ended"


def test_an_ask_still_running_is_cancelled_and_gathered() -> None:
    """The other side of the cut: a policy satisfied before an endorser answered leaves that
    ask running, and it is cancelled and awaited before `_gather` returns."""
    stuck: list[asyncio.Task[Any]] = []

    async def ask(
        node_id: str, checked: list[Any], min_blocks: list[int], first: bool
    ) -> list[Any]:
        if node_id == "slow":
            stuck.append(asyncio.current_task())  # type: ignore[arg-type]
            await asyncio.Event().wait()
        return ["answer"] * len(checked)

    peers = [SimpleNamespace(node_id=n, identity=n) for n in ("fast", "slow")]
    endorser: Any = SimpleNamespace(
        _peer=SimpleNamespace(view=_view(peers)),
        _ask=ask,
        _local_block=lambda: 0,
        _ctx=SimpleNamespace(node_id="elsewhere"),  # neither is the gateway's own peer
    )
    job = _Job(["fast"])
    job.collector = SimpleNamespace(to_ask=lambda: ["fast", "slow"])

    async def scenario() -> None:
        await BatchEndorser._gather(endorser, [job])  # type: ignore[arg-type]
        assert len(stuck) == 1 and stuck[0].cancelled(), "left an ask running"

    asyncio.run(scenario())
    assert job.decision.result is PolicyResult.SATISFIED
