"""A private transaction's Send and agreement collection in ONE SendBatch call
(`SendItem.collect_for_tx_id`, `PrivacyClient.send_and_collect`): the client makes no separate
CollectAgreements(Batch) call when the node answers the agreements with the hashes; an item the
node refused, or a node of an older release that answers none, is collected as before.

A real grpc.aio server on 127.0.0.1 plays the privacy manager (its answers are stand-ins); the
client is the real PrivacyClient over a real GatewayClient with a real signer. The servicer's
side (`PrivacyManagerServicer.SendBatch`) is checked against a stand-in manager.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import grpc
from local_grpc import client_signer, serve_local

from dltmw.client.gateway import GatewayClient
from dltmw.client.privacy import PrivacyClient
from dltmw.rpc.privacy import PrivacyManagerServicer
from dltmw.v1 import errors_pb2, privacy_manager_service_pb2_grpc
from dltmw.v1 import privacy_manager_service_pb2 as P
from dltmw.v1 import private_agreement_pb2 as A

TIMEOUT = A.CollectAgreementsResult(
    reason=errors_pb2.ERROR_REASON_PRIVATE_AGREEMENT_TIMEOUT, message="no answer"
)


def _agreed(tx_id: str) -> A.CollectAgreementsResponse:
    return A.CollectAgreementsResponse(
        agreed=True, agreements=[A.PrivateAgreement(body=tx_id.encode(), signature=b"s")]
    )


class Node(privacy_manager_service_pb2_grpc.PrivacyManagerServiceServicer):
    """`answers`: collects the agreements asked in SendBatch (else: an older release that
    ignores `collect_for_tx_id`); `refuse`: tx_ids whose collection it refuses there."""

    def __init__(self, answers: bool, refuse: Sequence[str] = ()) -> None:
        self.answers, self.refuse = answers, set(refuse)
        self.calls: list[str] = []

    async def SendBatch(self, request: P.SendBatchRequest, context: Any) -> P.SendBatchResponse:
        self.calls.append("SendBatch")
        body = P.SendBatchBody.FromString(request.body)
        reply = P.SendBatchResponse(payload_hashes=[i.payload.ljust(32, b".") for i in body.items])
        if self.answers:
            for item in body.items:
                tx = item.collect_for_tx_id
                ok = A.CollectAgreementsResult(response=_agreed(tx))
                reply.agreements.append(TIMEOUT if tx in self.refuse else ok)
        return reply

    async def CollectAgreements(
        self, request: A.CollectAgreementsRequest, context: Any
    ) -> A.CollectAgreementsResponse:
        query = A.CollectAgreementsQuery.FromString(request.query)
        self.calls.append(f"CollectAgreements {query.tx_id}")
        return _agreed(query.tx_id)


async def _run(node: Node, txs: Sequence[str]) -> list[tuple[bytes, A.CollectAgreementsResponse]]:
    server, address = await serve_local(
        lambda s: privacy_manager_service_pb2_grpc.add_PrivacyManagerServiceServicer_to_server(
            node, s
        )
    )
    client = PrivacyClient(GatewayClient(client_signer(), grpc.aio.insecure_channel(address)))
    try:
        return list(
            await asyncio.gather(
                *(client.send_and_collect("ch", tx.encode(), ["Org2"], tx) for tx in txs)
            )
        )
    finally:
        await client.close()
        await server.stop(None)


async def test_the_agreements_come_with_the_hashes_in_one_call() -> None:
    node = Node(answers=True)
    out = await _run(node, ["t1", "t2", "t3"])
    assert node.calls == ["SendBatch"]  # concurrent sends coalesced; no collection call
    assert [d for d, _ in out] == [t.ljust(32, b".") for t in (b"t1", b"t2", b"t3")]
    assert [r.agreements[0].body for _, r in out] == [b"t1", b"t2", b"t3"]


async def test_a_refused_item_and_an_older_node_are_collected_as_before() -> None:
    node = Node(answers=True, refuse=["t2"])
    out = await _run(node, ["t1", "t2"])
    assert node.calls == ["SendBatch", "CollectAgreements t2"]  # asked again alone
    assert [r.agreements[0].body for _, r in out] == [b"t1", b"t2"]
    older = Node(answers=False)
    out = await _run(older, ["t1"])
    assert older.calls == ["SendBatch", "CollectAgreements t1"]
    assert out[0][1].agreements[0].body == b"t1"


class Manager:
    """The stand-in privacy manager: records what it was asked to send and collect."""

    def __init__(self) -> None:
        self.asked: list[tuple[bytes, str]] = []

    async def send_and_collect(
        self, channel_id: str, items: Sequence[tuple[bytes, Sequence[str], str]]
    ) -> tuple[list[tuple[bytes, int, tuple[str, ...]]], list[A.CollectAgreementsResult]]:
        sent = [(p.upper() * 32, 2, ()) for p, _, _ in items]
        asked = [(p.upper() * 32, tx) for p, _, tx in items if tx]
        self.asked.extend(asked)
        return sent, [A.CollectAgreementsResult(response=_agreed(tx)) for _, tx in asked]


class Admitted(PrivacyManagerServicer):
    def _client(self, *_: Any) -> Any:  # admission is not what this test is about
        return None


async def test_the_node_collects_only_for_the_items_that_ask_in_their_places() -> None:
    manager = Manager()
    servicer = Admitted(manager, "Org1", 900.0, 1000)  # type: ignore[arg-type]

    async def send_batch(body: P.SendBatchBody) -> P.SendBatchResponse:
        request = P.SendBatchRequest(body=body.SerializeToString(), signature=b"s")
        return await servicer.SendBatch(request, None)  # type: ignore[arg-type]

    body = P.SendBatchBody(
        channel_id="ch",
        items=[
            P.SendItem(payload=b"a"),
            P.SendItem(payload=b"b", collect_for_tx_id="tb"),
            P.SendItem(payload=b"c"),
        ],
    )
    reply = await send_batch(body)
    assert manager.asked == [(b"B" * 32, "tb")]
    assert list(reply.payload_hashes) == [b"A" * 32, b"B" * 32, b"C" * 32]
    assert [r.HasField("response") for r in reply.agreements] == [False, True, False]
    assert reply.agreements[1].response.agreements[0].body == b"tb"
    none_asked = P.SendBatchBody(channel_id="ch", items=[P.SendItem(payload=b"a")])
    assert list((await send_batch(none_asked)).agreements) == []
