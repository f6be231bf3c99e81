"""A recipient of an older release has no AgreeBatch: the sender's node asks it proposal by
proposal with the single Agree call instead of failing every item (a rolling upgrade).

A real grpc.aio server on 127.0.0.1 serves only `Agree` (the base servicer answers AgreeBatch
UNIMPLEMENTED, as an older node does); `Agreements._ask_batch` runs against it with a real
signer. Only the node context is a stand-in: its channel to the recipient and its identity.
"""

from __future__ import annotations

from types import SimpleNamespace

import grpc

from dltmw.core.identity import SigningIdentity
from dltmw.pki.ca import issue_cert, make_ca
from dltmw.runtime.roles.privacy.agreement import Agreements
from dltmw.v1 import privacy_manager_service_pb2_grpc as svc
from dltmw.v1 import private_agreement_pb2 as A


class OlderRecipient(svc.PrivacyManagerServiceServicer):
    """Answers Agree (AGREE with the proposed hashes); knows nothing of AgreeBatch."""

    def __init__(self) -> None:
        self.asked: list[A.AgreeQuery] = []

    async def Agree(self, request: A.AgreeRequest, context: object) -> A.AgreeResponse:
        query = A.AgreeQuery.FromString(request.query)
        self.asked.append(query)
        body = A.PrivateAgreementBody(tx_id=query.tx_id, payload_hash=query.payload_hash)
        agreement = A.PrivateAgreement(body=body.SerializeToString(), signature=b"s")
        return A.AgreeResponse(agreement=agreement)


async def test_a_recipient_without_agree_batch_is_asked_proposal_by_proposal() -> None:
    ca = make_ca("Org1")
    issued = issue_cert(ca, "Org1", "peer0.org1", "peer")
    signer = SigningIdentity.from_pem("Org1", issued.cert_pem, issued.key_pem)
    recipient = OlderRecipient()
    server = grpc.aio.server()
    svc.add_PrivacyManagerServiceServicer_to_server(recipient, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:

        async def channel_to(_node_id: str) -> grpc.aio.Channel:
            return channel

        agreements = Agreements(SimpleNamespace(signer=signer, channel_to=channel_to), None)  # type: ignore[arg-type]
        queries = [
            A.AgreeQuery(payload_hash=bytes([i]) * 32, tx_id=f"tx{i}", delta_hash=b"d")
            for i in range(3)
        ]
        out = await agreements._ask_batch("trades", "peer0.org2", queries)
    finally:
        await channel.close()
        await server.stop(None)
    bodies = [A.PrivateAgreementBody.FromString(a.body) for a in out]  # type: ignore[union-attr]
    assert [b.payload_hash for b in bodies] == [q.payload_hash for q in queries]
    assert [q.tx_id for q in recipient.asked] == ["tx0", "tx1", "tx2"]
    assert all(q.channel_id == "trades" and q.requester for q in recipient.asked)
