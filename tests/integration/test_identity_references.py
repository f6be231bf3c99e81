"""Identity references (`ChannelConfig.identity_references`, core/identity.py) on real node
processes: on a channel with the flag (what `dltmw init` makes) kv and private transactions
commit VALID on every peer and the stored blocks name the endorsers, the agreement signers and
the orderer (its block signatures) by their ~40-byte reference; a reference the config does
not list is refused at the gateway with UNKNOWN_IDENTITY_REFERENCE and recorded with its own
validation code at commit; on a channel without the flag the nodes sign in full and a
reference is refused as MALFORMED; such a channel turns them on by a config update (`dltmw
channel update --identity-references`), and every peer switches at the config block.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from secrets import token_hex

import grpc
import pytest

from dltmw.client import GatewayClient
from dltmw.client.privacy import PrivacyClient
from dltmw.core.endorsement_batch import signing_bytes
from dltmw.core.identity import SigningIdentity, identity_bytes, reference_bytes
from dltmw.core.privacy.execution import EXECUTED
from dltmw.rpc.status import reason_of
from dltmw.sdk.client import Client
from dltmw.sdk.profile import Profile
from dltmw.v1 import common_pb2, transaction_pb2
from tests.integration.conftest import TWO_ORG

from .cli import dltmw
from .ledgers import blocks, height, ledger_path, tx_codes, wait_until

pytestmark = pytest.mark.integration
C = transaction_pb2
VALID = C.TX_VALIDATION_CODE_VALID
PEERS = {"peer0.org1": "Org1", "peer0.org2": "Org2"}
# "trades" takes references (dltmw init's default); "plain" (the same members) does not
TOPOLOGY = TWO_ORG + (
    """
[[channels]]
id = "plain"
members = ["Org1", "Org2"]
orderers = ["orderer0"]
endorsement_policy = "AND(Org1.peer, Org2.peer)"
identity_references = false
contracts = [{ name = "bank" }]
batch = { max_tx_count = 100, max_bytes = 1048576, timeout_ms = BATCH_MS }
"""
)


def _stored(net: Path, node: str, channel: str) -> dict[str, tuple[int, bytes]]:
    """tx_id -> (header type, payload data) of every transaction in `node`'s ledger."""
    out = {}
    for block in blocks(ledger_path(net, node, channel))[1:]:
        for raw in block.data.envelopes:
            payload = common_pb2.Payload.FromString(common_pb2.Envelope.FromString(raw).payload)
            header = common_pb2.Header.FromString(payload.header)
            out[header.tx_id] = (header.type, payload.data)
    return out


def _node_identity(net: Path, node: str) -> bytes:
    org = PEERS.get(node, "OrdererOrg")
    return identity_bytes(org, (net / "nodes" / node / "identity.pem").read_bytes())


def _block_signers(net: Path, peer: str, channel: str) -> dict[int, list[bytes]]:
    """Block number -> its orderer signatures' signers, blocks 1.. of `peer`'s ledger."""
    return {
        b.header.number: [s.signer for s in b.metadata.signatures]
        for b in blocks(ledger_path(net, peer, channel))[1:]
    }


def _proposal(client: GatewayClient, channel: str, creator: bytes) -> bytes:
    """A bank "open" proposal whose header names `creator` (the client's own key signs it)."""
    account = f"R{token_hex(4)}"
    return client.proposal_bytes(channel, "bank", "open", [account, "1"], creator=creator)[0]


async def _codes_everywhere(net: Path, channel: str, tx_ids: set[str]) -> dict[str, list[int]]:
    for peer in PEERS:
        await wait_until(
            lambda p=peer: tx_ids <= set(_stored(net, p, channel)), 30, f"{peer} commits"
        )
    return {
        peer: [tx_codes(blocks(ledger_path(net, peer, channel)))[t][0] for t in sorted(tx_ids)]
        for peer in PEERS
    }


async def test_references_on_the_flagged_channel_and_full_identities_elsewhere(network) -> None:
    net, _ = network(TOPOLOGY)
    refs = {node: reference_bytes(_node_identity(net, node)) for node in PEERS}
    full = {node: _node_identity(net, node) for node in PEERS}
    async with PrivacyClient(await GatewayClient.connect(net, "user1.org1")) as pc:
        client = pc.client
        kv = [
            await client.submit_transaction(channel, "bank", "open", f"A{i}", "100")
            for channel in ("trades", "plain")
            for i in range(3)
        ]
        assert all(d.status.result == VALID for d in kv), [d.status for d in kv]
        private = await pc.submit_private("trades", ["Org2"], "kv", "put", "deal", "v1")
        assert private.status.result == VALID
        by_channel = {"trades": {d.tx_id for d in kv[:3]}, "plain": {d.tx_id for d in kv[3:]}}
        by_channel["trades"].add(private.tx_id)
        for channel, tx_ids in by_channel.items():
            codes = await _codes_everywhere(net, channel, tx_ids)
            assert all(c == [VALID] * len(tx_ids) for c in codes.values()), codes
        for peer in PEERS:
            for channel, named in (("trades", refs), ("plain", full)):
                stored = _stored(net, peer, channel)
                for tx_id in by_channel[channel] - {private.tx_id}:
                    tx = C.Transaction.FromString(stored[tx_id][1])
                    assert sorted(e.endorser for e in tx.endorsements) == sorted(named.values())
            ptx = C.PrivateTransaction.FromString(_stored(net, peer, "trades")[private.tx_id][1])
            signers = [a.signer for a in ptx.agreements]
            assert signers and all(s in refs.values() for s in signers), signers
        assert all(len(r) < 50 for r in refs.values())  # the ~40-byte form, not ~450
        assert all(len(f) > 400 for f in full.values())
        # the orderer signs the blocks of "trades" by reference, those of "plain" in full
        orderer = _node_identity(net, "orderer0")
        for peer in PEERS:
            for channel, signer in (("trades", reference_bytes(orderer)), ("plain", orderer)):
                signers = _block_signers(net, peer, channel)
                assert signers and all(s == [signer] for s in signers.values()), channel


async def test_an_unknown_or_refused_reference_has_its_specific_reason_and_code(network) -> None:
    net, _ = network(TOPOLOGY)
    async with await GatewayClient.connect(net, "user1.org1") as client:
        me = reference_bytes(client.signer.identity_bytes)
        assert me is not None
        # A client names itself by reference: it is no config node ("trades"), and "plain"
        # takes no references at all. Refused before anything is endorsed.
        for channel, code, reason in (
            ("trades", grpc.StatusCode.FAILED_PRECONDITION, "UNKNOWN_IDENTITY_REFERENCE"),
            ("plain", grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await client.endorse(client.signing.proposal(_proposal(client, channel, me)))
            assert (refused.value.code(), reason_of(refused.value)) == (code, reason), channel

        # An endorsement whose endorser is a reference the config does not list: ordered (the
        # gateway does not judge endorsements at Submit), then recorded with its own code on
        # every peer; the transaction beside it commits.
        proposal = _proposal(client, "trades", client.signer.identity_bytes)
        endorsed = await client.endorse(client.signing.proposal(proposal))
        payload = common_pb2.Payload.FromString(endorsed.prepared_payload)
        tx = C.Transaction.FromString(payload.data)
        tx.endorsements[0].endorser = me  # the client's reference: no config node's
        payload.data = tx.SerializeToString()
        bad = await client.submit(client.envelope(payload.SerializeToString()))
        good = await client.submit_transaction("trades", "bank", "open", "G", "1")
        assert good.status.result == VALID
        codes = await _codes_everywhere(net, "trades", {bad})
        assert codes == {p: [C.TX_VALIDATION_CODE_UNKNOWN_IDENTITY_REFERENCE] for p in PEERS}


def _node_signer(net: Path, node: str) -> SigningIdentity:
    home = net / "nodes" / node
    return SigningIdentity.from_pem(
        PEERS[node], (home / "identity.pem").read_bytes(), (home / "identity.key").read_bytes()
    )


async def _endorsed_by_reference(client: GatewayClient, channel: str, peer: SigningIdentity) -> str:
    """A bank transaction whose `peer` endorsement names `peer` by its reference, signed alone
    with `peer`'s own key (as a peer that signs by reference does); its tx id once
    the orderer took it (the gateway does not judge endorsements at Submit)."""
    proposal = _proposal(client, channel, client.signer.identity_bytes)
    endorsed = await client.endorse(client.signing.proposal(proposal))
    payload = common_pb2.Payload.FromString(endorsed.prepared_payload)
    tx = C.Transaction.FromString(payload.data)
    ref = reference_bytes(peer.identity_bytes)
    assert ref is not None
    ours = [e for e in tx.endorsements if e.endorser in (peer.identity_bytes, ref)]
    assert len(ours) == 1, tx.endorsements
    ours[0].Clear()
    ours[0].endorser = ref
    ours[0].signature = peer.sign(signing_bytes(tx.response_payload, ref))
    payload.data = tx.SerializeToString()
    return await client.submit(client.envelope(payload.SerializeToString()))


async def _turn_on_references(
    net: Path, tmp: Path, channel: str, flag: str = "--identity-references"
) -> int:
    """`dltmw channel update <flag>` by both members' admins; its block."""
    upd, net_s = str(tmp / "identity-references.update"), str(net)
    await asyncio.to_thread(
        dltmw,
        "channel",
        "update",
        net_s,
        channel,
        flag,
        "-o",
        upd,
        "-c",
        "admin.org1",
    )
    for admin in ("admin.org1", "admin.org2"):
        await asyncio.to_thread(
            dltmw, "channel", "update", net_s, channel, "--sign", upd, "-c", admin
        )
    said = await asyncio.to_thread(
        dltmw, "channel", "update", net_s, channel, "--submit", upd, "-c", "admin.org1"
    )
    assert " VALID in block " in said, said
    return int(said.split(" VALID in block ")[1].split()[0])


async def _turn_off_references(net: Path, tmp: Path, channel: str) -> None:
    """`dltmw channel update --no-identity-references`, applied by every peer."""
    at = await _turn_on_references(net, tmp, channel, "--no-identity-references")
    for peer in PEERS:
        await wait_until(
            lambda p=peer: height(ledger_path(net, p, channel)) > at, 30, f"{peer} applies"
        )


def _endorsers(net: Path, peer: str, channel: str, tx_id: str) -> list[bytes]:
    tx = C.Transaction.FromString(_stored(net, peer, channel)[tx_id][1])
    return sorted(e.endorser for e in tx.endorsements)


async def test_a_channel_without_references_turns_them_on_by_a_config_update(
    network, tmp_path: Path
) -> None:
    """ "plain" is made without the flag: its peers sign in full and a peer's reference, even
    correctly signed with its key, is a malformed identity, at admission and at commit. The
    admins turn the flag on; from the block after the config block every peer signs by
    reference and takes references (the same construction now VALID), and a reference that
    names no config node is UNKNOWN_IDENTITY_REFERENCE instead of MALFORMED."""
    net, _ = network(TOPOLOGY)
    full = {node: _node_identity(net, node) for node in PEERS}
    refs = {node: reference_bytes(i) for node, i in full.items()}
    org2 = _node_signer(net, "peer0.org2")
    async with await GatewayClient.connect(net, "user1.org1") as client:
        me = reference_bytes(client.signer.identity_bytes)
        assert me is not None
        before = await client.submit_transaction("plain", "bank", "open", "B0", "1")
        assert before.status.result == VALID
        early = await _endorsed_by_reference(client, "plain", org2)  # before the update
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.endorse(client.signing.proposal(_proposal(client, "plain", me)))
        assert (refused.value.code(), reason_of(refused.value)) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "MALFORMED",
        )
        codes = await _codes_everywhere(net, "plain", {early})
        # the reference is no identity there: only peer0.org1's endorsement counts
        assert codes == {p: [C.TX_VALIDATION_CODE_ENDORSEMENT_POLICY_FAILURE] for p in PEERS}

        at = await _turn_on_references(net, tmp_path, "plain")
        # at once: peer0.org2 may not have applied the config block yet and sign in full,
        # which the gateway (already switched) still takes
        first = await client.submit_transaction("plain", "bank", "open", "F0", "1")
        assert first.status.result == VALID
        for peer in PEERS:
            await wait_until(
                lambda p=peer: height(ledger_path(net, p, "plain")) > at, 30, f"{peer} applies"
            )
        after = [
            await client.submit_transaction("plain", "bank", "open", f"A{i}", "1") for i in range(3)
        ]
        assert all(d.status.result == VALID for d in after), [d.status for d in after]
        late = await _endorsed_by_reference(client, "plain", org2)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.endorse(client.signing.proposal(_proposal(client, "plain", me)))
        assert (refused.value.code(), reason_of(refused.value)) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "UNKNOWN_IDENTITY_REFERENCE",
        )
        ids = {before.tx_id, first.tx_id, late} | {d.tx_id for d in after}
        codes = await _codes_everywhere(net, "plain", ids)
        assert all(c == [VALID] * len(ids) for c in codes.values()), codes
        for peer in PEERS:
            assert _endorsers(net, peer, "plain", before.tx_id) == sorted(full.values())
            for d in after:
                assert _endorsers(net, peer, "plain", d.tx_id) == sorted(refs.values())  # type: ignore[type-var]
            assert refs["peer0.org2"] in _endorsers(net, peer, "plain", late)
            # blocks up to the config block signed in full, the ones after it by reference
            orderer = _node_identity(net, "orderer0")
            signers = _block_signers(net, peer, "plain")
            assert max(signers) > at
            for number, signed in signers.items():
                assert signed == [orderer if number <= at else reference_bytes(orderer)], number


def creators_of(net: Path, node: str, channel: str) -> dict[str, bytes]:
    """tx_id -> the stored envelope's Header.creator, blocks 1.. of `node`'s ledger."""
    out = {}
    for block in blocks(ledger_path(net, node, channel))[1:]:
        for raw in block.data.envelopes:
            payload = common_pb2.Payload.FromString(common_pb2.Envelope.FromString(raw).payload)
            header = common_pb2.Header.FromString(payload.header)
            out[header.tx_id] = header.creator
    return out


async def test_a_client_names_itself_by_reference_after_its_first_commit(network) -> None:
    """Clients by reference (`client_identity_references`, core/identity_table.py): the
    client's first transaction on "trades" carries its certificate in full, every later one
    the ~40-byte reference, all VALID on both peers; a peer killed and restarted resolves the
    reference from its reloaded table (it endorses and commits the next one: AND policy);
    "plain" (no references) gets every creator in full."""
    net, sup = network(TOPOLOGY)
    async with await GatewayClient.connect(net, "user1.org1") as client:
        full = client.signer.identity_bytes
        ref = reference_bytes(full)
        assert ref is not None and len(ref) < 50 and len(full) > 400
        done = [
            await client.submit_transaction("trades", "bank", "open", f"C{i}", "1")
            for i in range(3)
        ]
        plain = [
            await client.submit_transaction("plain", "bank", "open", f"P{i}", "1") for i in range(2)
        ]
        assert all(d.status.result == VALID for d in done + plain), [d.status for d in done + plain]
        sup.kill("peer0.org2")  # a crash: its table must come back with its ledger
        sup.start("peer0.org2")
        sup.wait_ready("peer0.org2", 60)
        late = await client.submit_transaction("trades", "bank", "open", "C9", "1")
        assert late.status.result == VALID
        trades = [*done, late]
        codes = await _codes_everywhere(net, "trades", {d.tx_id for d in trades})
        assert all(c == [VALID] * len(trades) for c in codes.values()), codes
        await _codes_everywhere(net, "plain", {d.tx_id for d in plain})
        for peer in PEERS:
            creators = creators_of(net, peer, "trades")
            assert [creators[d.tx_id] for d in trades] == [full, ref, ref, ref], peer
            assert {creators_of(net, peer, "plain")[d.tx_id] for d in plain} == {full}


async def test_an_endorser_that_cannot_resolve_the_client_makes_it_send_in_full(
    network,
) -> None:
    """A peer whose table lacks the client (its rows deleted while it was down: a stand-in for
    any node that cannot resolve it) refuses the client's reference at endorsement with
    UNKNOWN_IDENTITY_REFERENCE, which the gateway reports as final; the client sends the
    transaction again in full (VALID), and the reference works again after that commit (the
    peer registered the certificate again from it)."""
    net, sup = network(TOPOLOGY)
    async with await GatewayClient.connect(net, "user1.org1") as client:
        full = client.signer.identity_bytes
        ref = reference_bytes(full)
        first = await client.submit_transaction("trades", "bank", "open", "D0", "1")
        assert first.status.result == VALID
        assert sup.stop("peer0.org2") == 0
        with sqlite3.connect(ledger_path(net, "peer0.org2", "trades")) as db:
            assert db.execute("DELETE FROM identities").rowcount == 1
        sup.start("peer0.org2")
        sup.wait_ready("peer0.org2", 60)
        again = await client.submit_transaction("trades", "bank", "open", "D1", "1")
        after = await client.submit_transaction("trades", "bank", "open", "D2", "1")
        assert again.status.result == VALID and after.status.result == VALID
        await _codes_everywhere(net, "trades", {first.tx_id, again.tx_id, after.tx_id})
        for peer in PEERS:
            creators = creators_of(net, peer, "trades")
            assert [creators[d.tx_id] for d in (first, again, after)] == [full, full, ref], peer


async def test_a_client_goes_back_to_full_when_references_are_turned_off(
    network, tmp_path: Path
) -> None:
    """The admins turn identity references off on "trades" after the client switched to its
    reference: the reference is a malformed identity there now (MALFORMED at endorsement), so
    the client sends the transaction again in full (VALID) and keeps sending in full on that
    channel (review57: it failed every later transaction, since only
    UNKNOWN_IDENTITY_REFERENCE made it fall back). Red without MALFORMED in the client's
    fallback (`client/creator_reference.py` REFERENCE_REFUSED)."""
    net, _ = network(TOPOLOGY)
    async with await GatewayClient.connect(net, "user1.org1") as client:
        full = client.signer.identity_bytes
        ref = reference_bytes(full)
        before = [
            await client.submit_transaction("trades", "bank", "open", f"E{i}", "1")
            for i in range(2)
        ]
        await _turn_off_references(net, tmp_path, "trades")
        after = [
            await client.submit_transaction("trades", "bank", "open", f"G{i}", "1")
            for i in range(2)
        ]
        done = before + after
        assert all(d.status.result == VALID for d in done), [d.status for d in done]
        codes = await _codes_everywhere(net, "trades", {d.tx_id for d in done})
        assert all(c == [VALID] * len(done) for c in codes.values()), codes
        for peer in PEERS:
            creators = creators_of(net, peer, "trades")
            assert [creators[d.tx_id] for d in done] == [full, ref, full, full], peer


async def test_private_transactions_name_their_creator_by_reference_and_fall_back_in_full(
    network, tmp_path: Path
) -> None:
    """Private transactions (`client/privacy.py`, issue 13 item 5 stage (c)) share the client's
    creator choice: on "trades" the first in full, the next ones by the ~40-byte reference,
    all VALID on both peers and EXECUTED by both parties, the recipient reading the payload.
    Then the admins turn references off: the next private transaction, agreed for its
    reference's tx id, is refused at the gateway (MALFORMED), and the client orders the same
    payload again in full under a new tx id with its agreements collected again (VALID), and
    stays in full. Red without `references.committed` in `PrivacyClient._submit_collected`
    (all in full), or without the fallback there (the refusal raised)."""
    net, _ = network(TOPOLOGY)
    async with (
        PrivacyClient(await GatewayClient.connect(net, "user1.org1")) as pc,
        PrivacyClient(await GatewayClient.connect(net, "user1.org2")) as org2,
    ):
        full = pc.client.signer.identity_bytes
        ref = reference_bytes(full)
        before = [
            await pc.submit_private("trades", ["Org2"], "kv", "put", f"p{i}", f"v{i}")
            for i in range(3)
        ]
        await _turn_off_references(net, tmp_path, "trades")
        after = [
            await pc.submit_private("trades", ["Org2"], "kv", "put", f"q{i}", f"w{i}")
            for i in range(2)
        ]
        done = before + after
        assert all(d.status.result == VALID for d in done), [d.status for d in done]
        codes = await _codes_everywhere(net, "trades", {d.tx_id for d in done})
        assert all(c == [VALID] * len(done) for c in codes.values()), codes
        for client in (pc, org2):
            for d in done:
                view = await client.validate("trades", d.payload_hash)
                assert view.status == EXECUTED and all(not p.error for p in view.parties)
        assert await org2.receive("trades", done[1].payload_hash)  # the recipient's copy
        for peer in PEERS:
            creators = creators_of(net, peer, "trades")
            assert [creators[d.tx_id] for d in done] == [full, ref, ref, full, full], peer
        assert ref is not None and len(ref) < 50 and len(full) > 400


async def test_the_sdk_client_switches_to_its_reference_and_falls_back_where_refused(
    network,
) -> None:
    """The SDK `Client` (which knows no channel's flags: it presumes references) names itself
    by reference on "trades" after its first commit there — its private transactions too, as
    every gateway connection shares one `CreatorReferences` — and on "plain" (no references)
    its reference is refused MALFORMED once, the transaction is done again in full, and every
    later one goes in full. Red without `references.committed` in `Client.submit` (all in
    full), or without the fallback (InvalidRequest MALFORMED on "plain")."""
    net, _ = network(TOPOLOGY)
    profile = Profile.from_network(net, "user1.org1")
    async with Client(profile, deadline_s=60) as client:
        trades = [await client.submit("trades", "bank", "open", f"S{i}", "1") for i in range(3)]
        plain = [await client.submit("plain", "bank", "open", f"S{i}", "1") for i in range(3)]
        private = await client.submit_private("trades", ["Org2"], "kv", "put", "sdk", "v")
    full = profile.signer().identity_bytes
    ref = reference_bytes(full)
    await _codes_everywhere(net, "trades", {d.tx_id for d in trades} | {private.tx_id})
    await _codes_everywhere(net, "plain", {d.tx_id for d in plain})
    for peer in PEERS:
        creators = creators_of(net, peer, "trades")
        assert [creators[d.tx_id] for d in (*trades, private)] == [full, ref, ref, ref], peer
        assert {creators_of(net, peer, "plain")[d.tx_id] for d in plain} == {full}, peer
        assert len(creators_of(net, peer, "plain")) == 3  # the refused attempt never ordered
