"""Workloads: what the benchmark submits, as a deterministic stream of operations.

A workload is a pure generator of `Op`s (no I/O): `setup_ops()` are run once before measuring
(for example opening the bank accounts) and `op(seq, channel)` gives the `seq`-th measured
operation. Keeping them pure makes them testable without a network and makes a run reproducible
from its seed. How an `Op` is executed is the driver's business (`driver_kind` names it), so a
workload that needs another path than endorse/order/validate — the notaries, private payloads
and UTXO DvPs of `flows.py` — has its own driver (`flow_drivers.py`, named in
`flow_drivers.make_driver`), asks for its network with `network()`, and registers in `WORKLOADS`.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from dltmw.bench import flows
from dltmw.bench.params import (
    Op,
    ParamError,
    float_param,
    int_param,
    parse_params,
    take,
)
from dltmw.bench.topology import NetworkShape

__all__ = ["WORKLOADS", "Op", "ParamError", "Workload", "make_workload", "parse_params"]


class Workload(Protocol):
    """The interface every workload implements."""

    name: str
    driver_kind: str
    contracts: tuple[str, ...]

    def params(self) -> dict[str, object]:
        """The parameters that define the workload (reported with every result)."""
        ...

    def setup_ops(self, channels: tuple[str, ...]) -> list[Op]:
        """Operations to commit before measuring; each must end VALID."""
        ...

    def op(self, seq: int, channel: str) -> Op:
        """The `seq`-th measured operation, on `channel`."""
        ...

    def network(self, shape: NetworkShape) -> NetworkShape:
        """The network this workload needs, from the one asked for (a notary workload asks
        for notaries instead of peers; the others take `shape` as it is)."""
        ...

    def driver_options(self) -> dict[str, int]:
        """Settings of the driver (a stream's batch size...), from the parameters."""
        ...


class LedgerFlow:
    """Defaults of the endorse/order/validate workloads: the network as asked, no options."""

    def network(self, shape: NetworkShape) -> NetworkShape:
        """`shape` unchanged."""
        return shape

    def driver_options(self) -> dict[str, int]:
        """None."""
        return {}


@dataclass
class KeyPicker:
    """Chooses an index in [0, n) with a skew: `uniform`, `zipf:S` (S > 0) or `hot` (always 0).

    Zipf uses precomputed cumulative weights 1/(i+1)^S and a binary search, so a pick is
    O(log n) and the same seed gives the same sequence.
    """

    n: int
    skew: str
    rng: random.Random
    _cum: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.skew in {"uniform", "hot"}:
            return
        kind, _, raw = self.skew.partition(":")
        try:
            s = float(raw)
        except ValueError:
            s = -1.0
        if kind != "zipf" or s <= 0:
            raise ParamError(f"skew must be uniform, zipf:S (S > 0) or hot, got {self.skew!r}")
        self._cum = list(itertools.accumulate(1.0 / (i + 1) ** s for i in range(self.n)))

    def pick(self) -> int:
        """One index."""
        if self.skew == "hot":
            return 0
        if self.skew == "uniform":
            return self.rng.randrange(self.n)
        x = self.rng.random() * self._cum[-1]
        return min(bisect.bisect_right(self._cum, x), self.n - 1)

    def pick_other(self, first: int) -> int:
        """An index different from `first`, chosen uniformly (the payee of a hot payer)."""
        other = self.rng.randrange(self.n - 1)
        return other if other < first else other + 1


class KvWorkload(LedgerFlow):
    """`kv`: blind writes (`put`) and read-modify-writes (`incr`).

    Parameters: `rmw` = fraction of read-modify-writes (0 = all blind puts, default 0),
    `keys` = 0 for a fresh key per transaction (no contention, the default) or the size of the
    key pool to draw from (contention grows as it shrinks), `skew` over the pool, `value_bytes`.
    """

    name = "kv"
    driver_kind = "gateway"
    contracts: tuple[str, ...] = ("kv",)

    def __init__(self, params: Mapping[str, str], seed: int) -> None:
        take(params, {"rmw", "keys", "skew", "value_bytes"})
        self.rmw = float_param(params, "rmw", 0.0, 0.0, 1.0)
        self.keys = int_param(params, "keys", 0, low=0)
        self.skew = params.get("skew", "uniform")
        self.value_bytes = int_param(params, "value_bytes", 32)
        self.rng = random.Random(seed)
        self.picker = KeyPicker(max(self.keys, 1), self.skew, self.rng) if self.keys else None

    def params(self) -> dict[str, object]:
        """See the class docstring."""
        return {"rmw": self.rmw, "keys": self.keys or "distinct", "skew": self.skew}

    def setup_ops(self, channels: tuple[str, ...]) -> list[Op]:
        """Nothing to prepare: `incr` starts a missing counter at 0."""
        return []

    def op(self, seq: int, channel: str) -> Op:
        """A put or an incr, on a fresh key or on one from the pool."""
        key = f"k{seq}" if self.picker is None else f"pool{self.picker.pick()}"
        if self.rng.random() < self.rmw:
            return Op(channel, "kv", "incr", (key,))
        # A decimal value, so a later `incr` of the same pool key can read it as a counter.
        return Op(channel, "kv", "put", (key, str(seq).zfill(self.value_bytes)))


class BankWorkload(LedgerFlow):
    """`bank`: the paper's deposit / withdraw / payment mix (Figure 8) over `accounts` accounts.

    Parameters: `accounts` (default 100), `skew` of the account choice — `uniform`, `zipf:S` or
    `hot` (every transaction touches account 0: the hot-key case of the paper's III.2(2)) —,
    and `mix` = three weights for deposit,withdraw,payment (default 1,1,1, Figure 8's one of
    each). Balances start high and amounts are small, so refusals (overdrafts) do not occur and
    every invalid transaction is a genuine conflict.
    """

    name = "bank"
    driver_kind = "gateway"
    contracts: tuple[str, ...] = ("bank",)
    INITIAL = 10**12

    def __init__(self, params: Mapping[str, str], seed: int) -> None:
        take(params, {"accounts", "skew", "mix"})
        self.accounts = int_param(params, "accounts", 100, low=2)
        self.skew = params.get("skew", "uniform")
        self.rng = random.Random(seed)
        self.picker = KeyPicker(self.accounts, self.skew, self.rng)
        try:
            weights = [float(w) for w in params.get("mix", "1,1,1").split(",")]
        except ValueError as exc:
            raise ParamError("mix must be three numbers: deposit,withdraw,payment") from exc
        if len(weights) != 3 or min(weights) < 0 or sum(weights) <= 0:
            raise ParamError("mix must be three non-negative weights with a positive sum")
        self.mix = weights
        self._run = seed  # account names are unique per seed, so setups never collide

    def params(self) -> dict[str, object]:
        """See the class docstring."""
        return {"accounts": self.accounts, "skew": self.skew, "mix": self.mix}

    def account(self, i: int) -> str:
        """The name of account `i`."""
        return f"acct{self._run}-{i}"

    def setup_ops(self, channels: tuple[str, ...]) -> list[Op]:
        """Open every account on every channel."""
        return [
            Op(ch, "bank", "open", (self.account(i), str(self.INITIAL)))
            for ch in channels
            for i in range(self.accounts)
        ]

    def op(self, seq: int, channel: str) -> Op:
        """Deposit, withdraw or payment, with accounts drawn with the configured skew."""
        kind = self.rng.choices(("deposit", "withdraw", "payment"), weights=self.mix)[0]
        a = self.picker.pick()
        amount = str(self.rng.randint(1, 100))
        if kind != "payment":
            return Op(channel, "bank", kind, (self.account(a), amount))
        b = self.picker.pick_other(a)
        if self.rng.random() < 0.5:  # the hot account pays as often as it is paid
            a, b = b, a
        return Op(channel, "bank", "payment", (self.account(a), self.account(b), amount))


class HotAccountWorkload(LedgerFlow):
    """`hot`: deposits and withdrawals on ONE account per channel (issue 13: the omnibus or fee
    account that collapses under read-modify-write).

    Parameters: `contract` — `bank` (deposits and withdrawals are bounded deltas) or `bank_rmw`
    (the paper's read-modify-write, the before); `withdraw` — the share of withdrawals (default
    0.5); `initial` — the opening balance (default 1000, small on purpose: withdrawals then
    sometimes meet the bound 0, so the run exercises DELTA_BOUND_VIOLATED); amounts are 1..100.
    After the run `bench/hotkey.py` checks every peer: the balance never went below 0 and the
    final balance equals the opening one plus the valid deltas.
    """

    name = "hot"
    driver_kind = "gateway"
    AMOUNT_MAX = 100

    def __init__(self, params: Mapping[str, str], seed: int) -> None:
        take(params, {"contract", "withdraw", "initial"})
        self.contract = params.get("contract", "bank")
        if self.contract not in ("bank", "bank_rmw"):
            raise ParamError(f"contract must be bank or bank_rmw, got {self.contract!r}")
        self.contracts: tuple[str, ...] = (self.contract,)
        try:
            self.withdraw = float(params.get("withdraw", "0.5"))
        except ValueError as exc:
            raise ParamError("withdraw must be a number in [0, 1]") from exc
        if not 0 <= self.withdraw <= 1:
            raise ParamError("withdraw must be a number in [0, 1]")
        self.initial = int_param(params, "initial", 1000, low=0)
        self.rng = random.Random(seed)
        self.account = f"hot{seed}"

    def params(self) -> dict[str, object]:
        """See the class docstring."""
        return {"contract": self.contract, "withdraw": self.withdraw, "initial": self.initial}

    def setup_ops(self, channels: tuple[str, ...]) -> list[Op]:
        """Open the account on every channel."""
        return [Op(ch, self.contract, "open", (self.account, str(self.initial))) for ch in channels]

    def op(self, seq: int, channel: str) -> Op:
        """A deposit or a withdrawal of 1..100 on the account."""
        kind = "withdraw" if self.rng.random() < self.withdraw else "deposit"
        amount = str(self.rng.randint(1, self.AMOUNT_MAX))
        return Op(channel, self.contract, kind, (self.account, amount))


WorkloadFactory = Callable[[Mapping[str, str], int], Workload]

#: Name -> factory(params, seed); the other flows' workloads are in `flows.py`.
WORKLOADS: dict[str, WorkloadFactory] = {
    "kv": KvWorkload,
    "bank": BankWorkload,
    "hot": HotAccountWorkload,
    "notary": flows.notary,
    "notary-cluster": flows.notary_cluster,
    "private": flows.PrivateWorkload,
    "utxo-dvp": flows.UtxoDvpWorkload,
}


IN_FLIGHT_DEFAULT = 256  # fills 100-tx blocks (`runner.BenchConfig.in_flight`'s default too)
# A workload whose capacity needs more in flight than the blocks' 256: a notary cluster's cost is
# mostly per PBFT slot and its slots fill only with ~1,000 notarisations waiting; at 256 the
# closed loop, not the cluster, bounded the rate (benchmarks/RESULTS.md, 2026-12-04, ncl6).
IN_FLIGHT_DEFAULTS: dict[str, int] = {"notary-cluster": 1024}


def default_in_flight(name: str) -> int:
    """The closed loop's window for workload `name` when `--in-flight` is not given."""
    return IN_FLIGHT_DEFAULTS.get(name, IN_FLIGHT_DEFAULT)


def make_workload(name: str, params: Mapping[str, str], seed: int) -> Workload:
    """Build a registered workload; raises ParamError for an unknown name or parameter."""
    factory = WORKLOADS.get(name)
    if factory is None:
        raise ParamError(f"unknown workload {name!r}; known: {sorted(WORKLOADS)}")
    return factory(params, seed)
