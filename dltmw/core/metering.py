"""Deterministic metering of contract code: a step budget counted in the code itself.

Endorsers must reach byte-identical results, so the budget that stops a runaway contract cannot be
a CPU or wall-clock budget (a slower machine would refuse what a faster one endorses, and the
gateway would see ENDORSEMENT_MISMATCH, or worse, a policy satisfied by the fast orgs only). It
is a count of *steps* instead: when a package is loaded, its AST is instrumented so that every
function call, every loop iteration (`for`, `while`) and every item a comprehension draws costs
one step. The count depends only on the code and its inputs, so every endorser refuses the same
invocation at the same step with the same message.

Rules a reader must keep:
- `StepBudgetExceeded` derives from BaseException, so a contract's `except Exception` does not
  swallow it, and the meter is *sticky*: once exhausted, every further step raises again (a
  step sits at the head of every function body and loop body, outside any `try` of that body),
  and `run` raises it again if the contract caught it with a bare `except` and returned: an
  exhausted invocation never succeeds.
- The wall-clock backstop (a generous per-invocation limit, machine dependent by nature) is an
  injected `expired()` callable checked every `CLOCK_EVERY` steps: the core reads no clock. Its
  outcome is not deterministic, so it is never an endorsed result (see `core/contract.py`).
- Time spent inside one C call (`sum(range(10**12))`, a catastrophic regex) is not metered; the
  backstop then fires at the next step. Memory is not metered either (MemoryError is a 500).
- The meter state is per thread (`threading.local`): endorsement runs contracts on the ledger's
  reader thread, the private executor on its own, and each needs its own count.
"""

from __future__ import annotations

import ast
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

STEP_NAME = "__dltmw_step__"
ITER_NAME = "__dltmw_iter__"
# Part of the deterministic contract of the SDK (SDK_VERSION): changing it changes which
# invocations succeed, so it is a protocol constant, not a node setting.
STEP_BUDGET = 1_000_000
LOAD_STEP_BUDGET = 100_000  # for a module's top-level code at load time
CLOCK_EVERY = 1024  # steps between two checks of the wall-clock backstop
T = TypeVar("T")


class StepBudgetExceeded(BaseException):
    """The invocation used more than its deterministic step budget."""

    def __init__(self, budget: int) -> None:
        super().__init__(f"contract exceeded its budget of {budget} steps")
        self.budget = budget


class WallClockExceeded(BaseException):
    """The invocation ran past the node's wall-clock backstop (not deterministic)."""


def _never() -> bool:
    return False


class Meter:
    """Counts the steps of the invocation running on the current thread."""

    def __init__(self) -> None:
        self._local = threading.local()

    def run(
        self,
        budget: int,
        expired: Callable[[], bool],
        fn: Callable[..., T],
        *args: object,
    ) -> T:
        """`fn(*args)` with `budget` steps; StepBudgetExceeded / WallClockExceeded past them."""
        state = self._local
        state.left, state.budget, state.expired, state.spent = budget, budget, expired, None
        try:
            result = fn(*args)
            if state.spent is not None:  # the contract caught the limit and returned anyway
                raise state.spent
            return result
        finally:
            state.left = None  # steps outside an invocation are not counted

    def step(self) -> None:
        """One step (instrumented code calls this at each function entry and loop iteration)."""
        state = self._local
        left = getattr(state, "left", None)
        if left is None:
            return  # code run outside `run` (never by the loader or the SDK): unmetered
        if state.spent is not None:
            raise state.spent
        if left <= 0:
            state.spent = StepBudgetExceeded(state.budget)
            raise state.spent
        state.left = left - 1
        if left % CLOCK_EVERY == 0 and state.expired():
            state.spent = WallClockExceeded()
            raise state.spent

    def iterate(self, items: Iterable[T]) -> Iterator[T]:
        """`items`, one step per item (comprehensions draw through this)."""
        for item in items:
            self.step()
            yield item

    def steps_used(self) -> int:
        """Steps used so far by the current thread's invocation (0 outside one)."""
        state = self._local
        left = getattr(state, "left", None)
        return 0 if left is None else state.budget - left


def _step_call(node: ast.AST) -> ast.Expr:
    call = ast.Call(func=ast.Name(id=STEP_NAME, ctx=ast.Load()), args=[], keywords=[])
    return ast.copy_location(ast.Expr(value=call), node)


class _Instrument(ast.NodeTransformer):
    """Adds a step at the head of every function and loop body; meters comprehensions."""

    def _prepend(self, node: ast.AST, body: list[ast.stmt], docstring: bool) -> list[ast.stmt]:
        first = body[0] if body else None
        keep = (
            1
            if docstring
            and isinstance(first, ast.Expr)
            and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)
            else 0
        )
        return [*body[:keep], _step_call(node), *body[keep:]]

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        self.generic_visit(node)
        node.body = self._prepend(node, node.body, docstring=True)
        return node

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.AST:
        self.generic_visit(node)
        node.body = self._prepend(node, node.body, docstring=True)
        return node

    def visit_For(self, node: ast.For) -> ast.AST:
        self.generic_visit(node)
        node.body = self._prepend(node, node.body, docstring=False)
        return node

    def visit_While(self, node: ast.While) -> ast.AST:
        self.generic_visit(node)
        node.body = self._prepend(node, node.body, docstring=False)
        return node

    def visit_Lambda(self, node: ast.Lambda) -> ast.AST:
        self.generic_visit(node)
        step = ast.Call(func=ast.Name(id=STEP_NAME, ctx=ast.Load()), args=[], keywords=[])
        # (step(), body)[1]: a lambda body is one expression
        pair = ast.Tuple(elts=[step, node.body], ctx=ast.Load())
        node.body = ast.Subscript(value=pair, slice=ast.Constant(value=1), ctx=ast.Load())
        return node

    def visit_comprehension(self, node: ast.comprehension) -> ast.AST:
        self.generic_visit(node)
        wrap = ast.Name(id=ITER_NAME, ctx=ast.Load())
        node.iter = ast.Call(func=wrap, args=[node.iter], keywords=[])
        return node


def instrument(source: str, filename: str) -> ast.Module:
    """The module's AST with metering added (compile it with `compile(tree, filename, "exec")`)."""
    tree = ast.parse(source, filename)
    _Instrument().visit(tree)  # transforms in place: every visitor returns its own node
    return ast.fix_missing_locations(tree)
