"""The trust root of a cross-channel light client comes from the channel's config
(`ChannelConfig.trusted_channels`, issue 19): `xfer.trust` starts a light client only from the
block 0 the config names for that channel, and `track` and proofs refuse a light client that
rests on another one (TRUST_ROOT_MISMATCH); with no channel named, an admin's `trust` stays the
root (channels made before the field)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from crosschain_parties import _channel as channel
from crosschain_parties import make_world
from test_transfer import Side, terms

from dltmw.cli.errors import UserError
from dltmw.cli.governance import _genesis_root, _validating_notary
from dltmw.core.block import block_hash
from dltmw.core.channel import ConfigError, channel_view
from dltmw.core.config_edit import with_trusted_channel
from dltmw.core.light_client import trusted_roots
from dltmw.net.netmap import NetworkMap
from dltmw.pki.network import init_network
from dltmw.v1 import config_pb2


def _sides(trust_config: bool) -> tuple[Side, Side, bytes]:
    """trading and cash sides whose configs trust each other's block 0 (if `trust_config`), a
    client (not an admin) calling; and a second `cash` block 0 (same id, another hash)."""
    world, cash, trading = make_world()
    a, b = Side(trading, world), Side(cash, world)
    for side, other in ((a, cash), (b, trading)):
        roots = ((other.channel_id, block_hash(other.genesis)),) if trust_config else ()
        side.tester.tx = replace(
            side.tester.tx, creator_roles=frozenset({"client"}), trusted_genesis=roots
        )
    impostor = channel(world, "cash", config_pb2.ORDERING_TYPE_NONE, 1).genesis
    assert block_hash(impostor) != block_hash(cash.genesis)
    return a, b, impostor.SerializeToString()


def test_anyone_starts_the_light_client_the_config_trusts_and_nothing_else() -> None:
    trading, cash, impostor = _sides(trust_config=True)
    wrong = trading.call("trust", impostor)[0]
    assert (wrong.status, wrong.message.split(":")[0]) == (400, "TRUST_ROOT_MISMATCH")
    unnamed = cash.call("trust", cash.chan.genesis.SerializeToString())[0]  # itself: not named
    assert unnamed.message.split(":")[0] == "TRUST_ROOT_MISMATCH"
    assert trading.call("trust", cash.chan.genesis.SerializeToString())[0].ok  # by a client
    assert cash.call("trust", trading.chan.genesis.SerializeToString())[0].ok


def test_without_trusted_channels_only_an_admin_sets_the_root() -> None:
    trading, _, impostor = _sides(trust_config=False)
    assert trading.call("trust", impostor)[0].status == 403


def test_a_light_client_resting_on_another_root_is_refused_by_track_and_claim() -> None:
    """An admin's `trust` from before the config named the channel, then a config naming
    another block 0: neither `track` nor a proof may use that light client any more."""
    trading, cash, impostor = _sides(trust_config=False)
    admin = frozenset({"admin"})
    trading.tester.tx = replace(trading.tester.tx, creator_roles=admin)
    assert trading.call("trust", impostor)[0].ok
    for side, acct in ((trading, "seller"), (cash, "buyer")):
        side.tester.tx = replace(side.tester.tx, creator_roles=admin)
        assert side.call("open", "seller", "1000" if acct == "seller" else "0")[0].ok
        assert side.call("open", "buyer", "1000" if acct == "buyer" else "0")[0].ok
    t = terms("root-1")
    _, lock_b = cash.call("lock", t)
    assert trading.call("lock", t)[0].ok and lock_b
    root = ((cash.chan.channel_id, block_hash(cash.chan.genesis)),)
    trading.tester.tx = replace(trading.tester.tx, trusted_genesis=root)
    claim = trading.call("claim", t, lock_b)[0]
    assert claim.message.split(":")[0] == "TRUST_ROOT_MISMATCH"
    track = trading.call("track", "cash", cash.chan.genesis.SerializeToString())[0]
    assert track.message.split(":")[0] == "TRUST_ROOT_MISMATCH"
    assert trading.status(t) == "locked"


def test_config_edit_and_validation_of_trusted_channels() -> None:
    _, cash, trading = make_world()
    digest = block_hash(cash.genesis)
    config = with_trusted_channel(trading.config, "cash", b"\x00" * 32)
    config = with_trusted_channel(config, "cash", digest)  # replaces
    assert trusted_roots(channel_view(config).config) == (("cash", digest),)
    bad = [
        with_trusted_channel(trading.config, "trading", digest),  # itself
        with_trusted_channel(trading.config, "Not An Id", digest),
        with_trusted_channel(trading.config, "cash", b"short"),
    ]
    twice = config_pb2.ChannelConfig()
    twice.CopyFrom(config)
    twice.trusted_channels.add(channel_id="cash", genesis_hash=digest)
    for config in (*bad, twice):
        with pytest.raises(ConfigError, match="trusted channel"):
            channel_view(config)


def test_the_cli_takes_channel_and_hash_from_a_block_0_file(tmp_path: Path) -> None:
    """`dltmw channel update --trust-genesis FILE`: (channel id, block hash) of the file."""
    _, cash, _ = make_world()
    path = tmp_path / "cash.block"
    path.write_bytes(cash.genesis.SerializeToString())
    assert _genesis_root(path) == ("cash", block_hash(cash.genesis))
    later = cash.cut([b"x"], cash.orderers)
    for data in (later.SerializeToString(), b"\xff not a block"):
        path.write_bytes(data)
        with pytest.raises(UserError):
            _genesis_root(path)


def test_the_cli_trusts_only_a_validating_notary(tmp_path: Path) -> None:
    """`dltmw channel update --trust-notary NODE`: the identity of a validating notary of the
    network; a non-validating notary or a node that is no notary is refused."""
    topology = (Path(__file__).parents[2] / "services/networks/capital-market.toml").read_text()
    plain, validating = tmp_path / "plain.toml", tmp_path / "validating.toml"
    plain.write_text(topology)
    validating.write_text(
        topology.replace('roles = ["notary"]', 'roles = ["notary"]\nvalidating = true', 1)
    )
    init_network(plain, tmp_path / "a")
    init_network(validating, tmp_path / "b")
    with pytest.raises(UserError, match="not a validating notary"):
        _validating_notary(tmp_path / "a", "notary.exchange")
    with pytest.raises(UserError, match="not a notary"):
        _validating_notary(tmp_path / "b", "peer.bank")
    netmap = NetworkMap.load(tmp_path / "b" / "network-map.toml")
    assert _validating_notary(tmp_path / "b", "notary.exchange") == netmap.identity_of(
        "notary.exchange"
    )
