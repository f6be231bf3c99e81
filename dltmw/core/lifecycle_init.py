"""`init_required`: a contract whose committed definition asks for it runs its `init` function
once per definition sequence before anything else (Fabric's InitRequired), pure.

The marker. Initialising sequence k writes the key `RESERVED + "init/<k>"` in the contract's own
namespace (`init_key`). Contracts cannot write keys that start with `RESERVED` (the context
refuses them, `core/contract.Context`), so only this rule does. Endorsers run a definition with
init_required through `InitRequired`, which reads the marker first (recording its version, or
its absence, like any read):

- `init` on an absent marker runs and writes the marker; on a present one it is refused (409);
- any other function on an absent marker is refused (412: invoke `init` first); on a present
  one it runs, its read of the marker recorded.

Why validation can trust it (`init_code`, at commit, from the read/write set alone). A
transaction of such a contract must carry a read of the marker of the committed sequence: read
as absent, it must write the marker (it is the init), and MVCC lets only the first such init of
the sequence commit (a second one's absent-read is stale); read as present, it must not write
it, and MVCC proves the marker exists. Any other write to a reserved key is invalid — for every
contract, whatever its definition — so a dishonest endorser cannot forge a marker. An upgrade to
sequence k+1 with init_required needs a new `init`: the marker names the sequence.
"""

from __future__ import annotations

from collections.abc import Sequence

from dltmw.core.contract import RESERVED_PREFIX, Context, Contract, ContractError, ContractFunction
from dltmw.v1 import rwset_pb2, transaction_pb2

INIT_FUNCTION = "init"
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
NOT_INITIALISED = transaction_pb2.TX_VALIDATION_CODE_CONTRACT_NOT_INITIALISED


def init_key(sequence: int) -> str:
    """The marker a definition sequence's `init` writes."""
    return f"{RESERVED_PREFIX}init/{sequence}"


class InitRequired(Contract):
    """`inner` run under the init rule of definition sequence `sequence` (module docstring)."""

    def __init__(self, inner: Contract, sequence: int) -> None:
        self.name = inner.name
        self.inner = inner
        self.key = init_key(sequence)
        self.sequence = sequence

    def function(self, name: str) -> ContractFunction | None:
        fn = self.inner.function(name)
        if fn is None:
            return None

        def guarded(ctx: Context, args: Sequence[bytes]) -> bytes:
            initialised = ctx.get(self.key) is not None  # the read is recorded either way
            if name == INIT_FUNCTION:
                if initialised:
                    raise ContractError(
                        f"contract {self.name!r} sequence {self.sequence} is initialised already",
                        409,
                    )
                result = fn(ctx, args)
                ctx.writes[self.key] = str(self.sequence).encode()
                return result
            if not initialised:
                raise ContractError(
                    f"contract {self.name!r} sequence {self.sequence} requires {INIT_FUNCTION!r}"
                    " first (its definition has init_required)",
                    412,
                )
            return fn(ctx, args)

        return guarded


def init_code(rwset: rwset_pb2.ReadWriteSet, init_sequence: int | None) -> int:
    """The init rule's verdict on a transaction of a contract at its height: `init_sequence` is
    the committed definition's sequence when it has init_required, else None."""
    reserved = [w.key for w in rwset.writes if w.key.startswith(RESERVED_PREFIX)]
    reserved += [d.key for d in rwset.deltas if d.key.startswith(RESERVED_PREFIX)]
    if init_sequence is None:
        return NOT_INITIALISED if reserved else VALID
    key = init_key(init_sequence)
    read = next((r for r in rwset.reads if r.key == key), None)
    if read is None:
        return NOT_INITIALISED
    if read.HasField("version"):  # after the init: it must not touch reserved keys
        return NOT_INITIALISED if reserved else VALID
    writes = [w for w in rwset.writes if w.key == key and not w.is_delete]
    return VALID if reserved == [key] and len(writes) == 1 else NOT_INITIALISED
