"""The contract SDK: typed arguments and results, queries, the context, deterministic metering.

Contracts here are loaded from package bytes (`load_package`) whenever metering matters, since
only packaged code is instrumented; conversion is checked on plain SDK classes too.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated

import pytest

from dltmw.contract_sdk import Context, Contract, Label, Text, query, transaction
from dltmw.contract_sdk.loader import load_package
from dltmw.contract_sdk.testing import ContractTester
from dltmw.core.contract import RESULT_BYTES_MAX, WALL_CLOCK_STATUS, WRITES_MAX
from dltmw.core.contract_package import Manifest, write_package
from dltmw.core.metering import STEP_BUDGET


@dataclass(frozen=True)
class Order:
    item: str
    quantity: int
    price: Decimal


class Typed(Contract):
    name = "typed"

    @transaction
    def echo_int(self, ctx: Context, n: int) -> int:
        return n + 1

    @transaction
    def echo_bool(self, ctx: Context, flag: bool) -> bool:
        return not flag

    @transaction
    def echo_decimal(self, ctx: Context, amount: Decimal) -> Decimal:
        return amount * 2

    @transaction
    def echo_order(self, ctx: Context, order: Order) -> Order:
        return Order(order.item, order.quantity * 2, order.price)

    @transaction
    def echo_list(self, ctx: Context, items: list[int]) -> dict[str, int]:
        return {"sum": sum(items), "count": len(items)}

    @transaction
    def labelled(
        self, ctx: Context, who: Annotated[str, Text(1, 3), Label("from")], raw: bytes = b"-"
    ) -> str:
        return who + raw.decode()

    @query
    def sneaky_write(self, ctx: Context) -> None:
        ctx.put("k", b"v")

    @query
    def creator(self, ctx: Context) -> str:
        assert ctx.tx is not None
        return f"{ctx.tx.creator_org}/{ctx.tx.creator_name}@{ctx.tx.timestamp_s}"

    def undecorated(self, ctx: Context) -> str:
        return "never callable"


@pytest.mark.parametrize(
    ("function", "args", "payload"),
    [
        ("echo_int", ["41"], b"42"),
        ("echo_int", ["-5"], b"-4"),
        ("echo_bool", ["true"], b"false"),
        ("echo_decimal", ["1.25"], b"2.50"),
        (
            "echo_order",
            ['{"item":"x","quantity":2,"price":"9.5"}'],
            b'{"item":"x","price":"9.5","quantity":4}',
        ),
        ("echo_list", ["[1,2,3]"], b'{"count":3,"sum":6}'),
        ("labelled", ["abc"], b"abc-"),
        ("labelled", ["ab", b"!"], b"ab!"),
        ("creator", [], b"Org1/user1@1700000000"),
    ],
    ids=[
        "int-is-ascii-decimal",
        "negative-int",
        "bool-is-true-or-false",
        "decimal-keeps-its-exponent",
        "dataclass-is-canonical-json-sorted-keys",
        "list-in-dict-out",
        "optional-argument-takes-its-default",
        "bytes-argument-as-is",
        "context-carries-header-facts",
    ],
)
def test_typed_arguments_and_results(
    function: str, args: list[str | bytes], payload: bytes
) -> None:
    outcome = ContractTester(Typed()).evaluate(function, *args)
    assert (outcome.status, outcome.message) == (200, "")
    assert outcome.payload == payload


@pytest.mark.parametrize(
    ("function", "args", "message"),
    [
        ("echo_int", ["ten"], "argument 1 (n) is not an integer: 'ten'"),
        ("echo_int", ["+1"], "argument 1 (n) is not an integer: '+1'"),
        ("echo_int", [], "missing argument 1: n"),
        ("echo_int", ["1", "2"], "echo_int takes at most 1 arguments, got 2"),
        ("echo_bool", ["yes"], "argument 1 (flag) is not true or false: 'yes'"),
        ("echo_decimal", ["NaN"], "argument 1 (amount) is not a finite decimal number: 'NaN'"),
        ("echo_order", ['{"item":"x"}'], "argument 1 (order) lacks field 'quantity'"),
        (
            "echo_order",
            ['{"item":"x","quantity":true,"price":"1"}'],
            "argument 1 (order) field 'quantity' expects a JSON integer",
        ),
        ("echo_order", ["{"], "argument 1 (order) is not JSON"),
        ("echo_list", ['["a"]'], "argument 1 (items) expects a JSON integer"),
        ("labelled", ["abcd"], "argument 1 (from) must be 1..3 characters"),
        ("labelled", [b"\xff"], "argument 1 (from) is not UTF-8"),
        ("undecorated", [], "has no function 'undecorated'"),
    ],
    ids=[
        "not-an-int",
        "plus-sign-refused",
        "missing-argument",
        "too-many-arguments",
        "not-a-bool",
        "nan-decimal",
        "dataclass-missing-field",
        "dataclass-bool-is-not-an-int",
        "malformed-json",
        "list-element-type",
        "text-length-with-label",
        "not-utf8",
        "undecorated-method-is-not-invocable",
    ],
)
def test_mismatch_is_a_400_naming_the_argument(
    function: str, args: list[str | bytes], message: str
) -> None:
    outcome = ContractTester(Typed()).evaluate(function, *args)
    assert outcome.status == 400
    assert message in outcome.message
    assert not outcome.result.rwset.writes


def test_a_query_cannot_write() -> None:
    outcome = ContractTester(Typed()).evaluate("sneaky_write")
    assert outcome.status == 500
    assert "a query must not write (put)" in outcome.message
    assert not outcome.result.rwset.writes


# --- packaged contracts: metering and limits ----------------------------------------------------

RUNAWAY = (
    textwrap.dedent(
        """
    from dltmw.contract_sdk import Context, Contract, transaction


    def spin(n):
        return spin(n + 1) if n < 10 else n


    class Runaway(Contract):
        name = "runaway"

        @transaction
        def forever(self, ctx: Context) -> int:
            n = 0
            while True:
                n += 1

        @transaction
        def swallowing(self, ctx: Context) -> int:
            while True:
                try:
                    while True:
                        pass
                except Exception:
                    pass

        @transaction
        def swallow_all(self, ctx: Context) -> int:
            while True:
                try:
                    spin(0)
                    while True:
                        pass
                except:  # noqa: E722 - the meter is sticky: the next step raises again
                    pass

        @transaction
        def caught_and_returned(self, ctx: Context) -> int:
            try:
                while True:
                    pass
            except:  # noqa: E722 - returning after the limit is still the limit
                return 1

        @transaction
        def comprehension(self, ctx: Context) -> int:
            return len([x for x in range(10**9)])

        @transaction
        def bounded(self, ctx: Context, n: int) -> int:
            total = 0
            for i in range(n):
                total += i
            return total

        @transaction
        def big_result(self, ctx: Context) -> bytes:
            return b"x" * (RESULT_BYTES_MAX + 1)

        @transaction
        def many_writes(self, ctx: Context) -> int:
            for i in range(WRITES_MAX + 1):
                ctx.put(f"k{i}", b"")
            return 0
    """
    )
    .replace("RESULT_BYTES_MAX", str(RESULT_BYTES_MAX))
    .replace("WRITES_MAX", str(WRITES_MAX))
)


def runaway() -> ContractTester:
    data = write_package(Manifest("runaway", "1", "runaway:Runaway"), {"runaway.py": RUNAWAY})
    return ContractTester(load_package(data).contract)


@pytest.mark.parametrize(
    "function",
    ["forever", "swallowing", "swallow_all", "caught_and_returned", "comprehension"],
    ids=[
        "while-true",
        "while-true-catching-exception",
        "while-true-with-bare-except",
        "bare-except-then-return",
        "huge-comprehension",
    ],
)
def test_runaway_loop_is_refused_by_the_step_budget_the_same_way_twice(function: str) -> None:
    first, second = runaway().evaluate(function), runaway().evaluate(function)
    assert first.status == 500
    assert f"exceeded its budget of {STEP_BUDGET} steps" in first.message
    assert first.result.SerializeToString(deterministic=True) == second.result.SerializeToString(
        deterministic=True
    )


def test_bounded_loop_within_budget_runs_and_the_budget_is_per_invocation() -> None:
    bench = runaway()
    assert bench.evaluate("forever").status == 500
    for _ in range(3):  # the exhausted meter of the last call does not leak into the next
        assert bench.evaluate("bounded", "1000").payload == str(sum(range(1000))).encode()
    assert bench.evaluate("bounded", str(STEP_BUDGET)).status == 500


def test_wall_clock_backstop_gives_its_own_status() -> None:
    bench = runaway()
    contract = bench.contract
    from dltmw.core.contract import simulate
    from dltmw.v1 import proposal_pb2

    invocation = proposal_pb2.ContractInvocation(contract="runaway", function="forever")
    result = simulate(contract, invocation, bench.state, None, lambda: True)
    assert result.response.status == WALL_CLOCK_STATUS
    assert "wall-clock" in result.response.message


@pytest.mark.parametrize(
    ("function", "message"),
    [("big_result", "result of"), ("many_writes", "writes exceed the limit")],
    ids=["result-size-limit", "write-set-limit"],
)
def test_output_limits_are_refusals(function: str, message: str) -> None:
    outcome = runaway().evaluate(function)
    assert outcome.status == 500
    assert message in outcome.message
    assert not outcome.result.rwset.writes


@pytest.mark.parametrize(
    ("status", "reason", "metadata"),
    [
        (WALL_CLOCK_STATUS, "LIMIT_EXCEEDED", {"limit": "contract_wall_s"}),
        (400, "CONTRACT_FAILED", {}),
        (500, "CONTRACT_FAILED", {}),
        (404, "NOT_FOUND", {}),
        (413, "MESSAGE_TOO_LARGE", {}),
    ],
    ids=[
        "wall-clock-is-resource-exhausted",
        "caller-fault-is-contract-failed",
        "contract-bug",
        "absent-item-is-not-found",
        "too-large-is-message-too-large",
    ],
)
def test_what_a_gateway_says_for_a_refusal(
    status: int, reason: str, metadata: dict[str, str]
) -> None:
    from dltmw.core.contract import refusal_error
    from dltmw.rpc.status import to_status
    from dltmw.v1 import proposal_pb2

    error = refusal_error(proposal_pb2.ContractResponse(status=status, message="m"))
    assert (error.reason_name, error.metadata) == (reason, metadata)
    # RESOURCE_EXHAUSTED, ABORTED, FAILED_PRECONDITION
    code = {"LIMIT_EXCEEDED": 8, "MESSAGE_TOO_LARGE": 8, "CONTRACT_FAILED": 10, "NOT_FOUND": 9}[
        reason
    ]
    assert to_status(error).code == code
