"""Workloads of the flows beside endorse/order/validate: notaries, private payloads, UTXO DvPs.

Like `workloads.py`, each is a pure, seeded generator of `Op`s; what an `Op` means is its
driver's (`flow_drivers.py`), and the network each needs comes from the one topology builder
(`NetworkShape.flow` and `notaries`), so every flow is run, timed, checked and reported by the
same runner as `kv` and `bank`:

- `notary` / `notary-cluster`: notarisations of transactions that each spend `inputs` fresh
  states (so no request is refused for the harness's sake); `Op.args` = the transaction's nonce
  and its input transaction ids, all hex from the seed; the driver builds and signs the request
  and streams it in batches (`batch`), as the old `benchmarks/notary.py` did;
- `private`: a private `kv.put` sent to `recipients` other organisations (every organisation's
  peer is a recipient of the others' transactions), ordered as a hash, committed, executed;
- `utxo-dvp`: delivery versus payment between the vaults of the organisations, over every
  ordered (seller, buyer) pair in turn, each DvP moving one unit of a security against `price`
  of cash; the setup issues `lots` separate states of each asset to each vault.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping

from dltmw.bench.params import Op, ParamError, int_param, take
from dltmw.bench.topology import NetworkShape

ISIN = "BENCH0000001"
CURRENCY = "JPY"


class NotaryWorkload:
    """`notary` (one notary) and `notary-cluster` (`members` notaries, PBFT-lite).

    Parameters: `inputs` per transaction (default 2), `batch` = requests per stream message
    (default 500), `streams` per client and notary (default 2), `members` (cluster only,
    default 4, at least 4 = 3f+1 with f = 1).
    """

    contracts: tuple[str, ...] = ()

    def __init__(self, params: Mapping[str, str], seed: int, cluster: bool) -> None:
        take(params, {"inputs", "batch", "streams"} | ({"members"} if cluster else set()))
        self.name = "notary-cluster" if cluster else "notary"
        self.driver_kind = self.name
        self.inputs = int_param(params, "inputs", 2)
        self.batch = int_param(params, "batch", 500)
        self.streams = int_param(params, "streams", 2)
        self.members = int_param(params, "members", 4, low=4) if cluster else 1
        self.rng = random.Random(seed)

    def params(self) -> dict[str, object]:
        """See the class docstring."""
        out: dict[str, object] = {"inputs": self.inputs, "batch": self.batch}
        out["streams"] = self.streams
        return out | ({"members": self.members} if self.members > 1 else {})

    def network(self, shape: NetworkShape) -> NetworkShape:
        """Clients of every organisation and the notary (or its cluster); no ledger."""
        return dataclasses.replace(shape, flow="notary", notaries=self.members)

    def driver_options(self) -> dict[str, int]:
        """The stream batch size and streams per notary connection."""
        return {"batch": self.batch, "streams": self.streams}

    def setup_ops(self, channels: tuple[str, ...]) -> list[Op]:
        """Nothing: every transaction spends states nobody spent before."""
        return []

    def op(self, seq: int, channel: str) -> Op:
        """A transaction (nonce, input tx ids) spending `inputs` fresh states."""
        nonce = f"{self.rng.getrandbits(256):064x}"
        inputs = tuple(f"{self.rng.getrandbits(256):064x}" for _ in range(self.inputs))
        return Op(channel, "notary", "notarise", (nonce, *inputs))


def notary(params: Mapping[str, str], seed: int) -> NotaryWorkload:
    """`notary`: one notary."""
    return NotaryWorkload(params, seed, cluster=False)


def notary_cluster(params: Mapping[str, str], seed: int) -> NotaryWorkload:
    """`notary-cluster`: a PBFT-lite notary cluster."""
    return NotaryWorkload(params, seed, cluster=True)


class PrivateWorkload:
    """`private`: private `kv.put`s, each to `recipients` organisations besides the sender's.

    Parameters: `recipients` (default 2; the network gets recipients + 1 organisations),
    `value_bytes` (default 64), `agreement` (the channel's `private_agreement`: all-recipients,
    the default, or none: what the agreements cost end to end).
    """

    name = "private"
    driver_kind = "private"
    contracts: tuple[str, ...] = ("kv",)

    def __init__(self, params: Mapping[str, str], seed: int) -> None:
        take(params, {"recipients", "value_bytes", "agreement"})
        self.recipients = int_param(params, "recipients", 2)
        self.value_bytes = int_param(params, "value_bytes", 64)
        self.agreement = params.get("agreement", "all-recipients")
        if self.agreement not in ("all-recipients", "none"):
            raise ParamError(f"agreement must be all-recipients or none, got {self.agreement!r}")
        self.seed = seed

    def params(self) -> dict[str, object]:
        """See the class docstring."""
        return {
            "recipients": self.recipients,
            "value_bytes": self.value_bytes,
            "agreement": self.agreement,
        }

    def network(self, shape: NetworkShape) -> NetworkShape:
        """recipients + 1 organisations, one peer each (every other one a recipient)."""
        return dataclasses.replace(
            shape, orgs=self.recipients + 1, private_agreement=self.agreement
        )

    def driver_options(self) -> dict[str, int]:
        """None: recipients are every organisation but the sender's."""
        return {}

    def setup_ops(self, channels: tuple[str, ...]) -> list[Op]:
        """Nothing: `put` needs no prior state."""
        return []

    def op(self, seq: int, channel: str) -> Op:
        """A private put of a fresh key (no conflicts: the run measures the private path)."""
        return Op(channel, "kv", "put", (f"p{self.seed}-{seq}", str(seq).zfill(self.value_bytes)))


class UtxoDvpWorkload:
    """`utxo-dvp`: DvPs between the vaults of `--orgs` organisations (default 2), over every
    ordered (seller, buyer) pair in turn.

    `Op.channel` is the seller's vault (its client runs the flow), `args[0]` the buyer's vault.
    A buyer keeps ONE open cash offer per seller (`VaultRole.on_offer`: a new offer replaces
    the old one), so DvPs of one pair cannot overlap; the driver queues them per pair and the
    flow's parallelism is the number of pairs, orgs * (orgs - 1). Parameters: `lots` =
    separate states of each asset issued to each vault in the setup (default 16), `price` =
    cash per unit (default 100).
    """

    name = "utxo-dvp"
    driver_kind = "vault"
    contracts: tuple[str, ...] = ()

    def __init__(self, params: Mapping[str, str], seed: int) -> None:
        take(params, {"lots", "price"})
        self.lots = int_param(params, "lots", 16)
        self.price = int_param(params, "price", 100)
        self.seed = seed
        self.vaults: tuple[str, ...] = NetworkShape(flow="utxo").vault_ids()

    def params(self) -> dict[str, object]:
        """See the class docstring."""
        return {"lots": self.lots, "price": self.price, "vaults": len(self.vaults)}

    def network(self, shape: NetworkShape) -> NetworkShape:
        """A vault per organisation and a single notary (unless asked otherwise)."""
        if shape.orgs < 2:
            raise ParamError("utxo-dvp trades between at least two organisations (--orgs)")
        out = dataclasses.replace(shape, flow="utxo", notaries=max(shape.notaries, 1))
        self.vaults = out.vault_ids()
        return out

    def driver_options(self) -> dict[str, int]:
        """None."""
        return {}

    def pair(self, seq: int) -> tuple[str, str]:
        """(seller, buyer) of DvP `seq`: every ordered pair of vaults in turn."""
        n = len(self.vaults)
        k = seq % (n * (n - 1))
        seller, offset = divmod(k, n - 1)
        return self.vaults[seller], self.vaults[(seller + 1 + offset) % n]

    def setup_ops(self, channels: tuple[str, ...]) -> list[Op]:
        """Each vault issues itself `lots` lots of the security and of cash (each DvP consumes
        one state of each side and gives change back, so lots only spread the selection)."""
        out = []
        for vault in self.vaults:
            for _ in range(self.lots):
                out.append(Op(vault, "security", "issue", (vault, ISIN, "1000")))
                out.append(Op(vault, "cash", "issue", (vault, CURRENCY, str(1000 * self.price))))
        return out

    def op(self, seq: int, channel: str) -> Op:
        """DvP number `seq`: one unit against `price`."""
        seller, buyer = self.pair(seq)
        return Op(seller, "dvp", "dvp", (buyer, ISIN, "1", CURRENCY, str(self.price)))
