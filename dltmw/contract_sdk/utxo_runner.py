"""An installed UTXO contract's `verify`, run under its package's meter.

The loader (`loader.py`) hands the entry function of a `"kind": "utxo"` package to
`MeteredVerify`, which the node's registry of UTXO contract code (`runtime/utxo_code.py`)
offers to `core/utxo/constraints.ContractCode` beside the built-ins. Every call runs under the
deterministic step budget (`core/metering.STEP_BUDGET`: every verifier stops a runaway verify
at the same step) and the node's wall-clock backstop, and turns whatever the user's code does
into one of three outcomes, so a broken contract can never crash or hang a verifier:

- it returns: the contract accepts (its return value is ignored);
- `ContractRejected(reason)`, or any other exception (a bug in the contract is its refusal):
  the transaction is refused, CONTRACT_FAILED with the contract's reason;
- the step budget, the wall-clock backstop, the interpreter's recursion limit or memory ran
  out: ClientError UTXO_CONTRACT_BUDGET_EXCEEDED naming the limit. Only the step budget is
  deterministic; the others are backstops (a verify that needs them is broken anyway).
"""

from __future__ import annotations

from collections.abc import Callable

from dltmw.core.errors import ClientError
from dltmw.core.metering import STEP_BUDGET, Meter, StepBudgetExceeded, WallClockExceeded
from dltmw.core.utxo.contracts import ContractRejected, LedgerTx
from dltmw.v1 import errors_pb2

R = errors_pb2


def _never() -> bool:
    return False


class MeteredVerify:
    """The `verify` of one loaded UTXO package (module docstring)."""

    def __init__(
        self, fn: Callable[[LedgerTx], object], meter: Meter, name: str, package_id: str
    ) -> None:
        self._fn = fn
        self._meter = meter
        self.name = name
        self.package_id = package_id

    def __call__(self, tx: LedgerTx, expired: Callable[[], bool] = _never) -> None:
        """Run the contract's verify on `tx` (module docstring for the outcomes)."""
        try:
            self._meter.run(STEP_BUDGET, expired, self._fn, tx)
        except ContractRejected:
            raise
        except StepBudgetExceeded as exc:
            raise self._exhausted(
                "steps", f"{exc} (a step is a call or a loop iteration)"
            ) from None
        except WallClockExceeded:
            raise self._exhausted("wall_clock", "ran past this node's wall-clock limit") from None
        except RecursionError:  # before the step budget: Python's own stack limit
            raise self._exhausted("recursion", "recursed past the interpreter's limit") from None
        except MemoryError:
            raise self._exhausted("memory", "ran out of memory") from None
        except Exception as exc:  # the contract's bug is its refusal, never the node's crash
            raise ContractRejected(
                f"{self.name}: contract raised {type(exc).__name__}: {exc}"
            ) from None

    def _exhausted(self, limit: str, what: str) -> ClientError:
        return ClientError(
            R.ERROR_REASON_UTXO_CONTRACT_BUDGET_EXCEEDED,
            f"contract {self.name!r} package {self.package_id}: verify {what}",
            {"contract": self.name, "contract_hash": self.package_id, "limit": limit},
        )
