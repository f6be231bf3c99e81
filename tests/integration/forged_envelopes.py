"""A forged envelope sent to an orderer from a member peer's TLS identity and from a client's:
shared by the bad-input tests and the PBFT-lite dissemination tests, which check the same rule
(a member peer's forwarded creator signature is judged at commit, not again at Broadcast) on a
solo and on a disseminating channel."""

from __future__ import annotations

import grpc

from dltmw.client import GatewayClient
from dltmw.v1 import (
    common_pb2,
    errors_pb2,
    orderer_service_pb2,
    orderer_service_pb2_grpc,
    transaction_pb2,
)


def tls_channel(net, home, address_of: str = "orderer0") -> grpc.aio.Channel:
    """A channel to node `address_of` with the TLS identity kept under `home`."""
    from dltmw.net.addressbook import AddressBook
    from dltmw.rpc.tls import TlsMaterial, secure_channel

    tls = TlsMaterial.load(home / "tls.pem", home / "tls.key", net / "tls-roots.pem")
    address = AddressBook(net / "run" / "endpoints").lookup(address_of)
    assert address is not None
    return secure_channel(address, address_of, tls, 4 * 1024 * 1024)


async def broadcast_one(channel: grpc.aio.Channel, envelope: bytes) -> tuple[bool, str]:
    """One envelope on a Broadcast stream: (accepted, ErrorReason name)."""
    call = orderer_service_pb2_grpc.OrdererServiceStub(channel).Broadcast()
    await call.write(orderer_service_pb2.BroadcastRequest(envelopes=[envelope]))
    result = (await call.read()).results[0]
    await call.done_writing()
    return result.accepted, errors_pb2.ErrorReason.Name(result.reason)


async def forged_envelope_from_a_member_peer(
    net, orderer: str = "orderer0", timeout_s: float = 20
) -> tuple[GatewayClient, str]:
    """From a peer node's TLS identity an envelope whose creator signature does not verify is
    ordered by `orderer` and every peer records it BAD_CREATOR_SIGNATURE; from a client's TLS
    identity it is refused; the real envelope with the same tx_id then commits VALID on every
    peer. Returns the (open) client and the tx_id."""
    from .ledgers import VALID, blocks, ledger_path, tx_codes, wait_until

    c = await GatewayClient.connect(net, "user1.org1")
    as_peer = tls_channel(net, net / "nodes" / "peer0.org1", orderer)
    as_client = tls_channel(net, net / "clients" / "user1.org1", orderer)
    try:
        signed, tx_id = c.proposal("trades", "kv", "put", ["fk", "v"])
        envelope = c.envelope((await c.endorse(signed)).prepared_payload)
        sig = envelope.signature
        forged = common_pb2.Envelope(
            payload=envelope.payload, signature=sig[:-1] + bytes([sig[-1] ^ 1])
        ).SerializeToString()
        assert await broadcast_one(as_client, forged) == (False, "ERROR_REASON_BAD_SIGNATURE")
        assert await broadcast_one(as_peer, forged) == (True, "ERROR_REASON_UNSPECIFIED")
        bad = transaction_pb2.TX_VALIDATION_CODE_BAD_CREATOR_SIGNATURE
        for peer in ("peer0.org1", "peer0.org2"):
            path = ledger_path(net, peer)
            await wait_until(lambda p=path: tx_id in tx_codes(blocks(p)), timeout_s, peer)
            assert tx_codes(blocks(path))[tx_id] == [bad]
        await c.submit(envelope)
        assert (await c.commit_status("trades", tx_id)).result == VALID
        for peer in ("peer0.org1", "peer0.org2"):
            path = ledger_path(net, peer)
            await wait_until(lambda p=path: len(tx_codes(blocks(p))[tx_id]) == 2, timeout_s, peer)
            assert tx_codes(blocks(path))[tx_id] == [bad, VALID]
    except BaseException:
        await c.close()
        raise
    finally:
        await as_peer.close()
        await as_client.close()
    return c, tx_id
