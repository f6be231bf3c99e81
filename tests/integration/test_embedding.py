"""The embedding API (`import dltmw`): a whole network in the test's own process and event
loop — real nodes, real gRPC with mTLS on 127.0.0.1 or the in-process transport (each test
runs over both), real sqlite files — used through typed clients and the message bus, then
reopened from its directory.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

import dltmw
from dltmw.core.verified_memo import IN_PROCESS
from dltmw.sdk.network import DEFAULT_TOPOLOGY, TransportName


@pytest.fixture(params=["grpc", "inproc"])
def transport(request: pytest.FixtureRequest) -> TransportName:
    """Every test here runs over both transports of `dltmw.open`."""
    return request.param  # type: ignore[no-any-return]


def _height(net: dltmw.Network, node: str = "peer0.org1", channel: str = "main") -> int:
    return net.nodes[node].peers[channel].ledger.height


async def _ready(net: dltmw.Network) -> None:
    """Wait (bounded) until both peers are at the same height."""
    for _ in range(200):
        if _height(net) == _height(net, "peer0.org2"):
            return
        await asyncio.sleep(0.01)


def test_open_submit_evaluate_typed_results_and_errors(
    tmp_path: Path, transport: TransportName
) -> None:
    async def scenario() -> None:
        started = time.perf_counter()
        async with dltmw.open(tmp_path / "net", transport=transport) as net:
            print(f"in-process two-org network started in {time.perf_counter() - started:.3f} s")
            async with net.client("user1.org1") as client:
                opened = await client.submit("main", "bank", "open", "A", "100")
                assert isinstance(opened, dltmw.Committed) and opened.text == "100"
                assert opened.block_number >= 1
                # The nodes share what they verified (core/verified_memo.py) while they run.
                assert IN_PROCESS.shared and len(IN_PROCESS) > 0
                assert await client.evaluate("main", "bank", "balance", "A") == b"100"
                with pytest.raises(dltmw.ContractRefused, match="already exists") as refused:
                    await client.submit("main", "bank", "open", "A", "1")
                assert refused.value.reason == "CONTRACT_FAILED"
                with pytest.raises(dltmw.NotFound):
                    await client.submit("nochannel", "bank", "open", "B", "1")
                # Concurrent deposits on one account: each either commits VALID or raises
                # CommitFailed with its code; the balance counts exactly the VALID ones.
                outcomes = await asyncio.gather(
                    *(client.submit("main", "bank", "deposit", "A", "10") for _ in range(8)),
                    return_exceptions=True,
                )
                valid = [o for o in outcomes if isinstance(o, dltmw.Committed)]
                failed = [o for o in outcomes if isinstance(o, dltmw.CommitFailed)]
                assert len(valid) + len(failed) == 8 and valid
                assert {f.validation_code for f in failed} <= {"MVCC_READ_CONFLICT"}
                balance = await client.evaluate("main", "bank", "balance", "A")
                assert int(balance) == 100 + 10 * len(valid)
        assert not IN_PROCESS.shared  # every node stopped: the memo is dropped

    asyncio.run(scenario())


def test_bus_topics_filters_bad_input_and_reopen(tmp_path: Path, transport: TransportName) -> None:
    checkpoints = dltmw.FileCheckpointer(tmp_path / "checkpoints")

    async def first_run() -> list[str]:
        async with dltmw.open(tmp_path / "net", synchronous="NORMAL", transport=transport) as net:
            publisher, subscriber = net.bus("user1.org1"), net.bus("user1.org2")
            await publisher.create_topic("trades")
            await publisher.create_topic("quotes")
            sent = []
            for i in range(6):
                topic = "trades" if i % 2 == 0 else "quotes"
                committed = await publisher.publish(topic, f"{topic}{i}".encode(), {"n": str(i)})
                sent.append((topic, committed.tx_id))
            got = []
            async with subscriber.subscribe("trades", "settler", checkpoints) as sub:
                async for message in sub:
                    got.append(message)
                    if len(got) == 2:
                        break
            assert [m.payload for m in got] == [b"trades0", b"trades2"]
            assert [m.headers for m in got] == [{"n": "0"}, {"n": "2"}]
            assert [m.tx_id for m in got] == [tx for t, tx in sent if t == "trades"][:2]
            # Bad input: refused with a specific error, nothing ordered.
            await _ready(net)
            height = _height(net)
            with pytest.raises(dltmw.NotFound) as unknown:
                await publisher.publish("nosuchtopic", b"x")
            assert (unknown.value.code, unknown.value.reason) == (
                "FAILED_PRECONDITION",
                "NOT_FOUND",
            )
            with pytest.raises(dltmw.LimitExceeded) as large:
                await publisher.publish("trades", b"x" * 300_000)
            assert (large.value.code, large.value.reason) == (
                "RESOURCE_EXHAUSTED",
                "MESSAGE_TOO_LARGE",
            )
            with pytest.raises(dltmw.InvalidRequest, match="topic"):
                await publisher.publish("bad topic!", b"x")
            with pytest.raises(dltmw.InvalidRequest):
                subscriber.subscribe("trades", "no-checkpointer")
            assert _height(net) == height
            return [tx for t, tx in sent if t == "trades"]

    async def second_run(trades: list[str]) -> None:
        async with dltmw.open(tmp_path / "net", synchronous="NORMAL", transport=transport) as net:
            assert _height(net) >= 8  # reopened, not re-initialised
            bus = net.bus("user1.org2")
            async with bus.subscribe("trades", "settler", checkpoints) as sub:
                async for message in sub:  # resumes after the last finished message
                    assert message.tx_id == trades[2]
                    break
            (tmp_path / "checkpoints" / "settler.json").write_text("{not json")
            with pytest.raises(dltmw.InvalidRequest, match="damaged"):
                async with bus.subscribe("trades", "settler", checkpoints) as sub:
                    await sub.__anext__()

    asyncio.run(second_run(asyncio.run(first_run())))


def test_profile_client_fails_over_to_the_next_gateway(
    tmp_path: Path, transport: TransportName
) -> None:
    async def scenario() -> None:
        async with dltmw.open(tmp_path / "net", synchronous="NORMAL", transport=transport) as net:
            real = net.profile("user1.org1")
            dead = {"name": "peer0.org1", "address": "127.0.0.1:1"}  # nothing listens there
            raw = real.model_dump(mode="json")
            raw["gateways"] = [dead, *raw["gateways"]]
            profile = dltmw.Profile.from_dict(raw)
            async with dltmw.Client(profile, deadline_s=30) as client:
                committed = await client.submit("main", "kv", "put", "k", "v")
                assert committed.block_number >= 1
                assert client.gateway_name == "peer0.org1"
                assert client.gateway_address != "127.0.0.1:1"  # it left the dead one
                assert client.seen_block("main") >= committed.block_number

    asyncio.run(scenario())


def test_node_side_filters_keep_ledger_positions(tmp_path: Path, transport: TransportName) -> None:
    async def scenario() -> None:
        async with dltmw.open(tmp_path / "net", synchronous="NORMAL", transport=transport) as net:
            bus = net.bus("user1.org1")
            client = bus.client
            await bus.create_topic("trades")
            await bus.create_topic("quotes")
            # Concurrent publishes share blocks: trades and quotes interleave within blocks.
            await asyncio.gather(
                *(bus.publish("trades" if i % 3 == 0 else "quotes", b"%d" % i) for i in range(30))
            )
            height = client.seen_block("main")
            expected = []
            async for block in client.blocks("main"):  # unfiltered: every transaction
                for tx in block.transactions:
                    for e, event in enumerate(tx.events):
                        if event.contract == "bus" and event.name == "trades":
                            expected.append((block.number, tx.index, e, tx.tx_id))
                if block.number >= height:
                    break
            got = []
            wanted = [dltmw.EventFilter("bus", ("trades",))]
            async for block in client.blocks("main", filters=wanted):
                for tx in block.transactions:  # only transactions with a trades message
                    assert any(ev.name == "trades" for ev in tx.events)
                if block.number >= height:
                    break
            async with bus.subscribe("trades") as sub:
                async for message in sub:
                    got.append((*message.position, message.tx_id))
                    if len(got) == len(expected):
                        break
            assert len(expected) == 10 and got == expected
            with pytest.raises(dltmw.InvalidRequest, match="contract is empty"):
                async for _ in client.blocks("main", filters=[dltmw.EventFilter("")]):
                    pass

    asyncio.run(scenario())


THREE_ORGS = (
    DEFAULT_TOPOLOGY.replace(
        '[[nodes]]\nid = "peer0.org2"',
        '[[orgs]]\nid = "Org3"\n[[nodes]]\nid = "peer0.org3"\norg = "Org3"\n'
        'roles = ["peer", "gateway"]\n[[clients]]\nid = "user1.org3"\norg = "Org3"\n'
        '[[nodes]]\nid = "peer0.org2"',
    )
    .replace('members = ["Org1", "Org2"]', 'members = ["Org1", "Org2", "Org3"]')
    .replace("AND(Org1.peer, Org2.peer)", "OR(Org1.peer, Org2.peer, Org3.peer)")
)


def test_private_topic_reaches_its_recipients_only(
    tmp_path: Path, transport: TransportName
) -> None:
    (tmp_path / "three.toml").write_text(THREE_ORGS)

    async def scenario() -> None:
        async with dltmw.open(
            tmp_path / "net", tmp_path / "three.toml", transport=transport
        ) as net:
            org1 = net.bus("user1.org1")
            await org1.create_topic("otc")  # public record: every member knows the topic
            await org1.create_private_topic("otc", ["Org1", "Org2"])
            await org1.publish("otc", b"public quote")
            secret = await org1.publish_private(
                "otc", b"block trade 5m XS1234 @ 99.1", ["Org1", "Org2"], {"desk": "rates"}
            )
            await org1.publish("otc", b"public close")

            async def read(client: str, count: int) -> list[dltmw.Message]:
                got: list[dltmw.Message] = []
                async with net.bus(client).subscribe("otc") as sub:
                    async for message in sub:
                        got.append(message)
                        if len(got) == count:
                            break
                return got

            org2 = await read("user1.org2", 3)
            assert [(m.payload, m.private) for m in org2] == [
                (b"public quote", False),
                (b"block trade 5m XS1234 @ 99.1", True),
                (b"public close", False),
            ]
            assert org2[1].headers == {"desk": "rates"} and org2[1].tx_id == secret.tx_id
            org3 = await read("user1.org3", 2)  # not a recipient: the public ones only
            assert [m.payload for m in org3] == [b"public quote", b"public close"]
            # What Org3 sees of the private message on the ledger: its hash, nothing else.
            client3 = net.client("user1.org3")
            hashes = []
            async for block in client3.blocks("main", secret.block_number):
                hashes += [
                    t.private_payload_hash for t in block.transactions if t.tx_id == secret.tx_id
                ]
                break
            assert hashes == [secret.payload] and len(secret.payload) == 32
            assert await client3.receive_private("main", secret.payload) is None

    asyncio.run(scenario())


CAPITAL_MARKET = (
    Path(__file__).resolve().parents[2] / "services" / "networks" / "capital-market.toml"
)


def test_utxo_flows_through_typed_vaults(tmp_path: Path, transport: TransportName) -> None:
    async def scenario() -> None:
        async with dltmw.open(
            tmp_path / "net", CAPITAL_MARKET, synchronous="NORMAL", transport=transport
        ) as net:
            bank = await net.vault("treasury.bank", "peer.bank")
            exchange = await net.vault("admin.exchange", "peer.exchange")
            a = await net.vault("trader.brokera", "peer.brokera")
            b = await net.vault("trader.brokerb", "peer.brokerb")
            await bank.issue("cash", "peer.brokerb", "JPY", 1_000_000)
            await exchange.issue("security", "peer.brokera", "JP0001", 1_000)
            trade = await a.dvp("peer.brokerb", "JP0001", 300, "JPY", 900_000, ["regulator"])
            assert isinstance(trade, dltmw.FlowDone) and len(trade.tx_id) == 64
            assert await a.holdings("peer.brokera") == {
                ("security", "JP0001"): 700,
                ("cash", "JPY"): 900_000,
            }
            assert await b.holdings("peer.brokerb") == {
                ("security", "JP0001"): 300,
                ("cash", "JPY"): 100_000,
            }
            with pytest.raises(dltmw.NotFound, match="not enough unconsumed JP0001"):
                await a.move("security", "peer.brokerb", "JP0001", 5_000)
            # Two moves of the same 700 at once: one wins, nothing is spent twice.
            outcomes = await asyncio.gather(
                a.move("security", "peer.brokerb", "JP0001", 700),
                a.move("security", "peer.brokerb", "JP0001", 700),
                return_exceptions=True,
            )
            assert sum(isinstance(o, dltmw.FlowDone) for o in outcomes) == 1, outcomes
            assert all(isinstance(o, dltmw.FlowDone | dltmw.Error) for o in outcomes)
            assert (await b.holdings("peer.brokerb"))[("security", "JP0001")] == 1_000
            assert ("security", "JP0001") not in await a.holdings("peer.brokera")

    asyncio.run(scenario())
