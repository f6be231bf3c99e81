"""Clients' identity references (stage (b): `ChannelConfig.client_identity_references`,
core/identity_table.py): a block whose envelope carries a client certificate in full makes it
referable from the next block; a peer resolves a client's reference through that table and runs
every check on the full certificate; the table is a function of the block's bytes and the config
alone (not of the transactions' order or validation codes); the peer ledger stores it with the
block; an orderer, which keeps no table, orders a client reference unchecked.

Real keys, certificates, the real commit rule and a real sqlite ledger (ledger_parties.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import pg_server
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledger_parties import NOW, endorser_tx, header, kv_rwset, make_parties, seal, signed_block

from dltmw.core.block import block_hash
from dltmw.core.channel import ChannelView, CurrentConfig, channel_view
from dltmw.core.errors import ClientError
from dltmw.core.hashing import ZERO_HASH, compute_tx_id
from dltmw.core.identity import SigningIdentity, reference_bytes
from dltmw.core.identity_table import IdentityTable, TableEntry, new_entries
from dltmw.core.txcheck import check_envelope, check_transaction
from dltmw.ledger.postgresql import PgChannelLedger
from dltmw.ledger.sqlite import ChannelLedger
from dltmw.pki.ca import issue_cert, make_ca
from dltmw.runtime.explorer.api import Explorer
from dltmw.v1 import block_pb2, common_pb2, config_pb2, identity_pb2
from dltmw.v1 import transaction_pb2 as C

P = make_parties()
VALID = C.TX_VALIDATION_CODE_VALID
UNKNOWN = C.TX_VALIDATION_CODE_UNKNOWN_IDENTITY_REFERENCE
REVOKED = C.TX_VALIDATION_CODE_CERTIFICATE_REVOKED


def _config(
    clients: bool = True, revoked: SigningIdentity | None = None
) -> config_pb2.ChannelConfig:
    config = config_pb2.ChannelConfig()
    config.CopyFrom(P.view.config)
    config.identity_references = True
    config.client_identity_references = clients
    for node_id, s in (("peer0.org1", P.peer1), ("peer0.org2", P.peer2)):
        config.peers.add(node_id=node_id, org_id=s.org_id, identity=s.identity_bytes)
    if revoked is not None:
        serial = x509.load_der_x509_certificate(revoked.certificate_der).serial_number
        org = next(o for o in config.organizations if o.org_id == revoked.org_id)
        org.revoked_serials.append(format(serial, "x"))
    return config


def _peer_view(
    table: IdentityTable, clients: bool = True, revoked: SigningIdentity | None = None
) -> ChannelView:
    """A peer's view: the config's membership given the table (as `CurrentConfig` does)."""
    return CurrentConfig(channel_view(_config(clients, revoked)), clients=table).view


def _ref(s: SigningIdentity) -> bytes:
    ref = reference_bytes(s.identity_bytes)
    assert ref is not None
    return ref


def _tx(signer: SigningIdentity = P.user, creator: bytes | None = None, key: str = "k") -> bytes:
    """A valid kv transaction by `signer`, naming it as `creator` (default: in full)."""
    h = header(signer)
    if creator is not None:
        h.creator = creator
        h.tx_id = compute_tx_id(h.nonce, creator)
    env = endorser_tx(P, kv_rwset(writes=[(key, b"v")]), [P.peer1], h)
    if signer is P.user:
        return env
    return _resealed(env, signer)


def _resealed(env: bytes, signer: SigningIdentity) -> bytes:
    e = common_pb2.Envelope.FromString(env)
    p = common_pb2.Payload.FromString(e.payload)
    return seal(signer, p.header, p.data)


def _block(number: int, envelopes: list[bytes]) -> block_pb2.Block:
    return signed_block(P, number, ZERO_HASH if number == 0 else b"\x01" * 32, envelopes)


def _member(org: str = "Org1", name: str = "user2") -> SigningIdentity:
    """A client certificate naming `org` but issued by a CA that is not the channel's."""
    ca = make_ca(org)
    issued = issue_cert(ca, org, name, "client")
    return SigningIdentity.from_pem(org, issued.cert_pem, issued.key_pem)


# --- the table ---------------------------------------------------------------------------------


def test_a_block_registers_the_creators_it_carries_in_full_that_pass_the_checks() -> None:
    view = _peer_view(IdentityTable())
    forged = _member()  # Org1's name, another CA: not issued by the channel's Org1 root
    envelopes = [
        _tx(),
        _tx(),  # the same client twice: one entry
        _tx(P.peer1, _ref(P.peer1)),  # a reference: nothing to register
        _tx(forged),
        _tx(P.outsider),  # Org9 is no member
        b"not an envelope",
    ]
    entries = new_entries(_block(5, envelopes), view.membership, IdentityTable())
    assert entries == [
        TableEntry("Org1", _ref_hash(P.user), P.user.certificate_der, 5),
    ]
    # known already: nothing new (the first block stays the one that registered it)
    assert new_entries(_block(6, envelopes), view.membership, IdentityTable(entries)) == []


def _ref_hash(s: SigningIdentity) -> bytes:
    return hashlib.sha256(s.certificate_der).digest()


def test_a_revoked_client_is_not_registered() -> None:
    view = _peer_view(IdentityTable(), revoked=P.user)
    assert new_entries(_block(3, [_tx()]), view.membership, IdentityTable()) == []


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    order=st.permutations(range(5)),
    codes=st.lists(st.sampled_from(list(C.TxValidationCode.values())), min_size=5, max_size=5),
    bad_signature=st.booleans(),
)
def test_a_block_s_entries_depend_on_its_creators_alone_not_order_or_codes(
    order: list[int], codes: list[int], bad_signature: bool
) -> None:
    """Order independence within a block, and the same entries whatever the validation codes
    (and whether the transaction's signature verifies: the signature is not a registration
    check, a certificate is public)."""
    view = _peer_view(IdentityTable())
    second = P.peer2  # a certificate of Org2 acting as a client (any member certificate)
    envelopes = [_tx(key="a"), _tx(key="b"), _tx(second, key="c"), _tx(P.outsider), b"junk"]
    if bad_signature:
        envelopes[0] = _resealed(envelopes[0], P.peer1)  # signed by another key
    base = new_entries(_block(9, envelopes), view.membership, IdentityTable())
    block = _block(9, [envelopes[i] for i in order])
    block.metadata.validation_codes.extend(codes)
    assert new_entries(block, _peer_view(IdentityTable()).membership, IdentityTable()) == base
    assert [e.key for e in base] == sorted(
        [("Org1", _ref_hash(P.user)), ("Org2", _ref_hash(second))]
    )


# --- resolution --------------------------------------------------------------------------------


def test_a_registered_client_s_reference_commits_valid_and_an_unknown_one_does_not() -> None:
    table = IdentityTable()
    view = _peer_view(table)
    by_ref = _tx(P.user, _ref(P.user))
    assert check_transaction(by_ref, view).code == UNKNOWN  # not registered yet
    table.add(new_entries(_block(1, [_tx()]), view.membership, table))
    assert check_transaction(_tx(P.user, _ref(P.user)), view).code == VALID
    assert view.membership.resolved(_ref(P.user)) == P.user.identity_bytes  # the explorer's
    checked = check_transaction(_tx(P.user, _ref(P.user)), view)
    assert checked.tx_id  # authenticated: the creator's signature verified through the table
    # a reference nobody registered (the certificate under another organisation): its own code
    other = identity_pb2.Identity.FromString(_ref(P.user))
    other.org_id = "Org2"
    assert check_transaction(_tx(P.user, other.SerializeToString()), view).code == UNKNOWN


def test_a_revoked_client_s_reference_is_refused_like_its_certificate() -> None:
    table = IdentityTable()
    table.add(new_entries(_block(1, [_tx()]), _peer_view(table).membership, table))
    revoked = _peer_view(table, revoked=P.user)  # a config update revoked it afterwards
    assert check_transaction(_tx(), revoked).code == REVOKED
    assert check_transaction(_tx(P.user, _ref(P.user)), revoked).code == REVOKED


def test_without_the_client_flag_a_client_reference_is_unknown_as_before() -> None:
    table = IdentityTable()
    table.add(new_entries(_block(1, [_tx()]), _peer_view(table).membership, table))
    off = _peer_view(table, clients=False)  # the table is not used on such a channel
    assert check_transaction(_tx(P.user, _ref(P.user)), off).code == UNKNOWN


def test_a_client_reference_at_endorsement_or_gateway_admission_is_refused_with_its_reason() -> (
    None
):
    view = _peer_view(IdentityTable())
    with pytest.raises(ClientError) as refused:
        check_envelope(_tx(P.user, _ref(P.user)), {view.channel_id: view}, NOW, 900)
    assert refused.value.reason_name == "UNKNOWN_IDENTITY_REFERENCE"


def test_an_orderer_orders_a_client_reference_unchecked_only_where_clients_may_send_one() -> None:
    """An orderer keeps no table: on a flag-on channel it orders a client's reference (peers
    check it at commit); elsewhere the reference is refused as before."""
    on = channel_view(_config())  # an orderer's view: no table attached
    checked = check_envelope(_tx(P.user, _ref(P.user)), {on.channel_id: on}, NOW, 900)
    assert checked.creator is None and checked.creator_org == "Org1"
    off = channel_view(_config(clients=False))
    with pytest.raises(ClientError):
        check_envelope(_tx(P.user, _ref(P.user)), {off.channel_id: off}, NOW, 900)
    # a reference to a non-member organisation is refused even where clients may send one
    outsider = _tx(P.outsider, _ref(P.outsider))
    with pytest.raises(ClientError):
        check_envelope(outsider, {on.channel_id: on}, NOW, 900)
    # so is one that can name no certificate (not a SHA-256), and a config node's reference is
    # checked as that node (here signed by another key): `txcheck._unresolvable` through
    # `Membership.client_reference` and `REFERENCE_SIZE`, red without either check there
    short = identity_pb2.Identity.FromString(_ref(P.user))
    short.certificate_ref = short.certificate_ref[:31]
    for creator, reason in (
        (short.SerializeToString(), "UNKNOWN_IDENTITY_REFERENCE"),
        (_ref(P.peer1), "BAD_SIGNATURE"),
    ):
        with pytest.raises(ClientError) as refused:
            check_envelope(_tx(P.user, creator), {on.channel_id: on}, NOW, 900)
        assert refused.value.reason_name == reason


def test_the_current_config_gives_the_table_to_each_flag_on_view() -> None:
    table = IdentityTable()
    table.add(new_entries(_block(1, [_tx()]), channel_view(_config()).membership, table))
    first = channel_view(_config(clients=False))
    holder = CurrentConfig(first, clients=table)
    assert not holder.view.membership.takes_client_references
    nxt = _config()
    nxt.sequence = first.sequence + 1
    shared = channel_view(nxt)  # e.g. block 0's view, which a node's orderer holds too
    holder.replace(shared)
    assert holder.view.membership.takes_client_references
    assert check_transaction(_tx(P.user, _ref(P.user)), holder.view).code == VALID
    # the view handed in keeps a membership without the table (an orderer's must not use it)
    assert not shared.membership.takes_client_references
    assert CurrentConfig(shared, clients=table).view is not shared


# --- the ledger --------------------------------------------------------------------------------


def test_the_peer_ledger_stores_the_entries_with_their_block_and_reloads_them(
    tmp_path: Path,
) -> None:
    async def run() -> None:
        path = tmp_path / "ledger.sqlite"
        ledger = await ChannelLedger.open(path)
        genesis = _block(0, [])
        await ledger.commit_block(genesis, [])
        block = signed_block(P, 1, block_hash(genesis), [_tx()])
        entries = new_entries(block, channel_view(_config()).membership, ledger.identities)
        await ledger.commit_block(block, [], identities=entries)
        assert dict(ledger.identities) == {e.key: e for e in entries} and entries
        # the explorer's API gives the certificate a reference names, with its block
        explorer = Explorer(
            "peer0.org1", "Org1", {"trades": SimpleNamespace(ledger=ledger)}, {}, {}
        )
        ref = _ref_hash(P.user).hex()
        status, body, _ = await explorer.answer(
            "GET", f"/api/channels/trades/identities/Org1/{ref}", {}
        )
        shown = json.loads(body)
        assert status == 200 and shown["registered_in_block"] == 1 and shown["org"] == "Org1"
        pem = shown["certificate_pem"].encode()
        assert (
            x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER) == P.user.certificate_der
        )
        for org, wrong, code in (("Org2", ref, 404), ("Org1", "zz", 400)):
            url = f"/api/channels/trades/identities/{org}/{wrong}"
            assert (await explorer.answer("GET", url, {}))[0] == code
        await ledger.close()
        again = await ChannelLedger.open(path)
        try:
            assert dict(again.identities) == {e.key: e for e in entries}
        finally:
            await again.close()

    asyncio.run(run())


def test_a_postgresql_peer_ledger_stores_and_reloads_the_entries_too() -> None:
    """The same on the PostgreSQL backend (its `identities` table, the block's transaction)."""

    async def run(dsn: str) -> None:
        ledger = await PgChannelLedger.open(dsn, "idrefb/trades/peer")
        genesis = _block(0, [])
        await ledger.commit_block(genesis, [])
        block = signed_block(P, 1, block_hash(genesis), [_tx()])
        entries = new_entries(block, channel_view(_config()).membership, ledger.identities)
        await ledger.commit_block(block, [], identities=entries)
        await ledger.close()
        again = await PgChannelLedger.open(dsn, "idrefb/trades/peer")
        try:
            assert entries and dict(again.identities) == {e.key: e for e in entries}
        finally:
            await again.close()

    with pg_server.running() as server:
        asyncio.run(run(server.dsn))


def test_a_config_update_by_a_client_s_reference_is_refused_at_admission_and_commit() -> None:
    """Orderers keep no client table, so a config update naming its creator by a client's
    reference would be judged by the peers' tables alone (review57): it is refused
    UNKNOWN_IDENTITY_REFERENCE at admission and gets that code at commit, even with the client
    registered; in full the same update reaches the config rule (another code). Red without
    `Membership.is_client_reference` in txcheck (the registered reference verifies)."""
    table = IdentityTable()
    view = _peer_view(table)
    table.add(new_entries(_block(1, [_tx()]), view.membership, table))
    h = header(P.user, common_pb2.HEADER_TYPE_CONFIG_UPDATE)
    full = seal(P.user, h.SerializeToString(), b"\x0a\x00")
    h.creator = _ref(P.user)
    h.tx_id = compute_tx_id(h.nonce, h.creator)
    by_ref = seal(P.user, h.SerializeToString(), b"\x0a\x00")
    assert check_transaction(by_ref, view).code == UNKNOWN
    assert check_transaction(full, view).code not in (UNKNOWN, VALID)
    for v in (view, channel_view(_config())):  # a peer's gateway, an orderer
        with pytest.raises(ClientError) as refused:
            check_envelope(by_ref, {v.channel_id: v}, NOW, 900)
        assert refused.value.reason_name == "UNKNOWN_IDENTITY_REFERENCE"
