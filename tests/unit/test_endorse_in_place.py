"""Endorsement simulated in place: a small batch of bounded built-in functions (the bus's lone
message) is simulated on the loop's thread, with no hop to the ledger's reader thread, and gives
the same answers as on the reader thread; anything else (a user contract, an unlisted function,
a large batch or proposal, a built-in name running another package) still hops
(`runtime/roles/peer/in_place.py`)."""

from __future__ import annotations

import dataclasses
import threading
import types
from pathlib import Path
from typing import Any, cast

import pytest
from ledger_parties import Parties, make_parties
from test_lifecycle_peer import Named, holder

from dltmw.contracts import builtin_contract
from dltmw.core import lifecycle as lc
from dltmw.core.block import make_block
from dltmw.core.builtin_packages import BUILTIN_PACKAGE_IDS
from dltmw.core.contract import Contract, simulate
from dltmw.core.rwset import StateWrite, Version
from dltmw.core.txcheck import CheckedProposal
from dltmw.ledger.sqlite import ChannelLedger
from dltmw.runtime.roles.peer.channel import PeerChannel
from dltmw.runtime.roles.peer.in_place import (
    BUILTIN_POINT_READS,
    PROPOSAL_BYTES_MAX,
    PROPOSALS_MAX,
    in_place_reads,
)
from dltmw.v1 import bus_pb2, common_pb2, proposal_pb2

PARTIES: Parties = make_parties()
BUS_PID = BUILTIN_PACKAGE_IDS["bus"]
BUS = lc.Definition("bus", "1.0", 1, BUS_PID, lc.canonical_policy("Org1.peer"))
MESSAGE = bus_pb2.BusMessage(payload=b"hello").SerializeToString()


def _proposal(
    tx_id: str,
    contract: str = "bus",
    function: str = "publish",
    args: tuple[bytes, ...] = (b"orders", MESSAGE),
    size: int = 200,
) -> CheckedProposal:
    invocation = proposal_pb2.ContractInvocation(contract=contract, function=function, args=args)
    return CheckedProposal(
        common_pb2.Header(tx_id=tx_id), b"", b"p" * size, b"", invocation, cast(Any, None)
    )


def _builtin(name: str) -> str | None:
    return name if name == "bus" else None


def _builtin_kv(name: str) -> str | None:
    return name if name in ("bus", "kv") else None


def _kv(tx_id: str, function: str = "put", args: tuple[bytes, ...] = (b"k1", b"v")) -> Any:
    return _proposal(tx_id, contract="kv", function=function, args=args)


# --- the rule -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("batch", "builtin_of", "lookups"),
    [
        ([_proposal("t1")], _builtin, 2),
        ([_proposal(f"t{i}") for i in range(PROPOSALS_MAX)], _builtin, 1 + PROPOSALS_MAX),
        ([_proposal("t1", function="create_topic", args=(b"orders",))], _builtin, 2),
        ([_proposal("t1")], lambda name: None, None),
        ([_proposal("t1", contract="kv", function="put")], _builtin, None),
        ([_proposal("t1", function="topic")], _builtin, None),
        ([_proposal(f"t{i}") for i in range(PROPOSALS_MAX + 1)], _builtin, None),
        ([_proposal("t1", size=PROPOSAL_BYTES_MAX + 1)], _builtin, None),
        ([_proposal("t1"), _proposal("t2", contract="kv")], _builtin, None),
        ([], _builtin, None),
        ([_kv("t1")], _builtin_kv, 1),
        ([_kv("t1"), _kv("t2", "incr", (b"k2",)), _kv("t3", "delete", (b"k3",))], _builtin_kv, 3),
        ([_kv("t1"), _proposal("t2")], _builtin_kv, 2),
        ([_kv("t1", "get", (b"k1",))], _builtin_kv, None),
        ([_kv("t1", "range", (b"a", b"z"))], _builtin_kv, None),
        ([_kv(f"t{i}") for i in range(PROPOSALS_MAX + 1)], _builtin_kv, None),
    ],
    ids=[
        "lone-publish-in-place",
        "small-batch-in-place",
        "create-topic-in-place",
        "user-package-named-bus-hops",
        "other-contract-hops",
        "unlisted-function-hops",
        "large-batch-hops",
        "large-proposal-hops",
        "one-user-proposal-makes-the-batch-hop",
        "empty-batch",
        "lone-kv-put-reads-nothing-in-place",
        "kv-incr-and-delete-read-one-key-each",
        "kv-and-bus-together-in-place",
        "kv-get-query-hops",
        "kv-range-query-hops",
        "large-kv-batch-hops",
    ],
)
def test_only_small_batches_of_bounded_builtin_functions_run_in_place(
    batch: list[CheckedProposal], builtin_of: Any, lookups: int | None
) -> None:
    assert in_place_reads(batch, builtin_of) == lookups


@pytest.mark.parametrize(
    ("definition", "expected"),
    [
        (BUS, "bus"),
        (dataclasses.replace(BUS, package_id="e" * 64), None),
        (dataclasses.replace(BUS, init_required=True), None),
    ],
    ids=["the-builtin-package", "a-user-package-named-bus", "init-required"],
)
def test_a_contract_counts_as_builtin_only_when_it_runs_the_builtin_package_as_is(
    definition: lc.Definition, expected: str | None
) -> None:
    installed = {BUS_PID: cast(Contract, builtin_contract("bus")), "e" * 64: Named("bus")}
    held = holder(installed, definition)
    assert held.builtin_of("bus") is None  # not resolved yet: nothing known to run
    held.resolve("bus")
    assert held.builtin_of("bus") == expected
    assert held.builtin_of(lc.NAMESPACE) is None


# --- the endorser, on a real ledger -----------------------------------------------------------


async def _ledger_with_topic(path: Path) -> ChannelLedger:
    ledger = await ChannelLedger.open(path)
    block = make_block("ch1", 0, ledger.last_hash, [b"env0"])
    block.metadata.validation_codes.append(1)
    write = StateWrite("bus", "topic/orders", b"1", Version(0, 0))
    await ledger.commit_block(block, ["tx0"], [write])
    return ledger


def _endorser(ledger: ChannelLedger, builtin_of: Any) -> Any:
    """PeerChannel.endorse_many's collaborators: the real ledger and the real bus contract;
    `_simulate` records the thread each simulation ran on (`_sign`, a no-op here, is
    tests/unit/test_endorsement_batch.py's)."""
    threads: list[int] = []
    bus = cast(Contract, builtin_contract("bus"))

    def simulate_only(
        reader: Any, checked: CheckedProposal, trust: Any, number: int, clock: Any
    ) -> tuple[int, bytes]:
        threads.append(threading.get_ident())
        return number, simulate(bus, checked.invocation, reader).SerializeToString()

    stub = types.SimpleNamespace(
        view=types.SimpleNamespace(config=PARTIES.view.config, channel_id="ch1"),
        genesis_hash=b"\x09" * 32,
        ledger=ledger,
        lifecycle=types.SimpleNamespace(builtin_of=builtin_of),
        ctx=types.SimpleNamespace(tracer=types.SimpleNamespace(enabled=False)),
        _simulate=simulate_only,
        _sign=lambda responses, batches: None,
        threads=threads,
    )
    stub._trust = lambda: PeerChannel._trust(stub)
    stub._endorse_once = lambda batch, check_duplicates: PeerChannel._endorse_once(
        stub, batch, check_duplicates
    )
    return stub


@pytest.mark.parametrize(
    ("batch", "builtin_of", "here"),
    [
        ([_proposal("t1")], _builtin, True),
        ([_proposal(f"t{i}") for i in range(PROPOSALS_MAX)], _builtin, True),
        ([_proposal("t1")], lambda name: None, False),
        ([_proposal(f"t{i}") for i in range(PROPOSALS_MAX + 1)], _builtin, False),
    ],
    ids=["lone-builtin", "small-builtin-batch", "user-contract", "large-batch"],
)
async def test_the_endorser_simulates_in_place_only_what_the_rule_allows_with_the_same_answers(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    batch: list[CheckedProposal],
    builtin_of: Any,
    here: bool,
) -> None:
    ledger = await _ledger_with_topic(tmp_path / "l.sqlite")
    try:
        stub = _endorser(ledger, builtin_of)
        out = await PeerChannel.endorse_many(stub, batch)
        on_loop = [t == threading.get_ident() for t in stub.threads]
        assert on_loop == [here] * len(batch)
        # the same answers on the reader thread (the rule forced off)
        monkeypatch.setattr("dltmw.runtime.roles.peer.channel.in_place_reads", lambda *_: None)
        reference = _endorser(ledger, builtin_of)
        assert await PeerChannel.endorse_many(reference, batch) == out
        assert all(t != threading.get_ident() for t in reference.threads)
        published = proposal_pb2.ProposalResponsePayload.FromString(out[0][1])
        assert out[0][0] == 0 and published.response.status == 200
        assert [e.name for e in published.events] == ["orders"]
    finally:
        await ledger.close()


async def test_a_small_kv_batch_is_simulated_in_place_with_the_reader_threads_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The distinct-keys workload's lone `put` (and `incr`, `delete`) of the built-in kv contract:
    simulated on the loop's thread, with exactly the read-write sets the reader thread gives."""
    ledger = await _ledger_with_topic(tmp_path / "l.sqlite")
    kv = cast(Contract, builtin_contract("kv"))
    batch = [_kv("t1"), _kv("t2", "incr", (b"k2",)), _kv("t3", "delete", (b"topic/orders",))]
    try:

        def endorser() -> Any:
            stub = _endorser(ledger, _builtin_kv)

            def simulate_kv(reader: Any, checked: CheckedProposal, *_: Any) -> bytes:
                stub.threads.append(threading.get_ident())
                return simulate(kv, checked.invocation, reader).SerializeToString()

            stub._simulate = simulate_kv
            return stub

        here = endorser()
        out = await PeerChannel.endorse_many(here, batch)
        assert here.threads == [threading.get_ident()] * len(batch)
        monkeypatch.setattr("dltmw.runtime.roles.peer.channel.in_place_reads", lambda *_: None)
        hopped = endorser()
        assert await PeerChannel.endorse_many(hopped, batch) == out
        assert all(t != threading.get_ident() for t in hopped.threads)
        statuses = [proposal_pb2.ProposalResponsePayload.FromString(o).response.status for o in out]
        assert statuses == [200, 200, 404]  # kv's delete of a key it does not hold (ns "kv")
    finally:
        await ledger.close()


class _CountingReader:
    """A StateReader that counts point reads and refuses range reads (none is allowed in place)."""

    def __init__(self) -> None:
        self.gets = 0

    def get(self, namespace: str, key: str) -> tuple[bytes, Version] | None:
        self.gets += 1
        return (b"7", Version(0, 0))

    def range(self, namespace: str, start: str, end: str, limit: int) -> list[Any]:
        raise AssertionError("a function simulated in place read a range")


ARGS = {"put": (b"k", b"v"), "delete": (b"k",), "incr": (b"k",)}


@pytest.mark.parametrize(
    ("contract", "function", "reads"),
    [
        (contract, function, reads)
        for contract, functions in BUILTIN_POINT_READS.items()
        if contract == "kv"
        for function, reads in functions.items()
    ],
)
def test_the_listed_kv_functions_read_no_more_keys_than_the_rule_counts(
    contract: str, function: str, reads: int
) -> None:
    """`BUILTIN_POINT_READS` must stay in step with the contract's source: the built-in kv
    functions, run against a state where every key exists, read at most their listed count."""
    reader = _CountingReader()
    invocation = proposal_pb2.ContractInvocation(
        contract=contract, function=function, args=ARGS[function]
    )
    payload = simulate(cast(Contract, builtin_contract(contract)), invocation, reader)
    assert payload.response.status == 200
    assert reader.gets <= reads
