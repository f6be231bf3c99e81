"""The UTXO transaction model: states, references, component hashes and the tx_id.

A state is an immutable output referenced by (tx_id, index). A transaction carries its components
as protobuf fields; its id is computed over explicit byte encodings of those components, grouped
(see `protos/dltmw/v1/utxo.proto`), never over re-serialised protobuf. The grouping is what lets a
non-validating notary check a tx_id while seeing only the inputs, references, notary and time
window: the requester sends the hashes of the other groups (outputs, commands, nonce) instead of
their contents, so the notary learns nothing about who pays whom.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from google.protobuf import timestamp_pb2

from dltmw.core.errors import ClientError
from dltmw.core.hashing import NONCE_MIN_BYTES
from dltmw.core.timestamps import checked_datetime
from dltmw.core.txcheck import parse
from dltmw.core.utxo.packages import BUILTIN_HASHES
from dltmw.v1 import errors_pb2, notarisation_pb2, utxo_pb2

R = errors_pb2
TX_DOMAIN = b"dltmw.utxo.v1"
MAX_REFS = 1000
MAX_OUTPUTS = 1000
MAX_COMMANDS = 100
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_TX_ID = re.compile("[0-9a-f]{64}")


class Ref(NamedTuple):
    """A state reference (tx_id, index); `key` is its canonical 36-byte encoding.

    A NamedTuple rather than a frozen dataclass because a notary builds, hashes and compares
    several per request on its hot path: building one costs ~0.5 µs instead of ~3 µs and its
    hash runs in C instead of a generated Python `__hash__` (benchmarks/RESULTS.md,
    2026-12-01 19:00 UTC). Immutable and ordered by (tx_id, index) like the dataclass was."""

    tx_id: str
    index: int  # type: ignore[assignment]  # shadows tuple.index, which no caller uses

    @property
    def key(self) -> bytes:
        """32 raw bytes of the tx_id || u32 big-endian index."""
        return bytes.fromhex(self.tx_id) + self.index.to_bytes(4, "big")

    @staticmethod
    def from_key(key: bytes) -> Ref:
        """Inverse of `key`."""
        return Ref(key[:32].hex(), int.from_bytes(key[32:36], "big"))

    def __str__(self) -> str:
        return f"{self.tx_id}:{self.index}"


@dataclass(frozen=True)
class Window:
    """A time window in Unix nanoseconds; None = unbounded on that side. `until` is exclusive."""

    from_ns: int | None = None
    until_ns: int | None = None

    def holds(self, now_ns: int) -> bool:
        """True iff `now_ns` lies within the window."""
        if self.from_ns is not None and now_ns < self.from_ns:
            return False
        return self.until_ns is None or now_ns < self.until_ns

    def encode(self) -> bytes:
        """Canonical bytes: per end 0x00, or 0x01 || i64 big-endian nanoseconds."""
        out = b""
        for end in (self.from_ns, self.until_ns):
            out += b"\x00" if end is None else b"\x01" + end.to_bytes(8, "big", signed=True)
        return out


UNBOUNDED = Window()  # the window of a transaction without one (shared: immutable)


def to_ns(moment: datetime) -> int:
    """Unix nanoseconds of a timezone-aware datetime (microsecond precision)."""
    return ((moment - _EPOCH) // _MICROSECOND) * 1000


def timestamp_ns(ts: timestamp_pb2.Timestamp) -> int:
    """Unix nanoseconds of a protobuf Timestamp."""
    return ts.seconds * 1_000_000_000 + ts.nanos


def window_of(msg: notarisation_pb2.TimeWindow | None) -> Window:
    """Window of an optional TimeWindow message; ClientError(INVALID_FIELD) unless both ends are
    valid times within the signed 64-bit nanoseconds the tx_id encodes (years 1678..2261)."""
    if msg is None:
        return UNBOUNDED
    from_ns = _window_end(msg.from_time, "from_time") if msg.HasField("from_time") else None
    until_ns = _window_end(msg.until_time, "until_time") if msg.HasField("until_time") else None
    return Window(from_ns, until_ns)


def _window_end(ts: timestamp_pb2.Timestamp, what: str) -> int:
    checked_datetime(ts, f"time_window.{what}")
    ns = timestamp_ns(ts)
    if not -(2**63) <= ns < 2**63:
        raise ClientError(
            R.ERROR_REASON_INVALID_FIELD,
            f"time_window.{what} is outside signed 64-bit Unix nanoseconds (years 1678..2261)",
        )
    return ns


def window_message(window: Window) -> notarisation_pb2.TimeWindow:
    """TimeWindow message for a Window."""
    msg = notarisation_pb2.TimeWindow()
    if window.from_ns is not None:
        msg.from_time.seconds, msg.from_time.nanos = divmod(window.from_ns, 1_000_000_000)
    if window.until_ns is not None:
        msg.until_time.seconds, msg.until_time.nanos = divmod(window.until_ns, 1_000_000_000)
    return msg


def group_hash(tag: str, parts: Iterable[bytes]) -> bytes:
    """H(tag, parts) = SHA-256(tag || u32 count || SHA-256(part) for each part)."""
    digests = [hashlib.sha256(p).digest() for p in parts]
    head = tag.encode() + len(digests).to_bytes(4, "big")
    return hashlib.sha256(head + b"".join(digests)).digest()  # one call: cheaper than updates


@dataclass(frozen=True)
class Components:
    """The component hashes a tx_id is computed from."""

    inputs: bytes
    references: bytes
    outputs: bytes
    commands: bytes
    notary: bytes
    time_window: bytes
    nonce: bytes

    def tx_id(self) -> str:
        """hex SHA-256 of the domain tag and the seven group hashes, in order."""
        return tx_id_of(
            (
                self.inputs,
                self.references,
                self.outputs,
                self.commands,
                self.notary,
                self.time_window,
                self.nonce,
            )
        )


def visible_components(
    inputs: Sequence[Ref], references: Sequence[Ref], notary: str, window: Window
) -> tuple[bytes, bytes, bytes, bytes]:
    """Hashes of the groups a notary sees: inputs, references, notary, time window. The groups
    that repeat from one request to the next (no references, this notary, the same window) come
    from `_single_group`'s cache: a notary admits thousands of requests a second and recomputed
    them for each (benchmarks/RESULTS.md, 2026-12-01 19:00 UTC)."""
    return (
        _refs_group("inputs", inputs),
        _refs_group("references", references),
        *notary_window_groups(notary, window),
    )


def notary_window_groups(notary: str, window: Window) -> tuple[bytes, bytes]:
    """The notary and time-window group hashes (`visible_components`' last two)."""
    return (
        _single_group("notary", notary.encode()),
        _UNBOUNDED_GROUP if window is UNBOUNDED else _single_group("time_window", window.encode()),
    )


def _refs_group(tag: str, refs: Sequence[Ref]) -> bytes:
    """group_hash of the refs' keys; the empty group from a constant."""
    if not refs:
        return _EMPTY_GROUPS[tag]
    return group_hash(tag, [bytes.fromhex(r.tx_id) + r.index.to_bytes(4, "big") for r in refs])


_EMPTY_GROUPS = {tag: group_hash(tag, ()) for tag in ("inputs", "references")}
_UNBOUNDED_GROUP = group_hash("time_window", (UNBOUNDED.encode(),))


@functools.lru_cache(maxsize=1024)
def _single_group(tag: str, part: bytes) -> bytes:
    """group_hash of one part, remembered (a pure function of its arguments; bounded)."""
    return group_hash(tag, (part,))


def tx_id_of(parts: Iterable[bytes]) -> str:
    """hex SHA-256 of the domain tag and the seven group hashes `parts`, in `Components`' order
    (what `Components.tx_id` computes, without building a Components on the notary's hot
    path)."""
    return hashlib.sha256(TX_DOMAIN + b"".join(parts)).hexdigest()


def is_tx_id(value: str) -> bool:
    """True for 64 lower-case hex digits."""
    return len(value) == 64 and _TX_ID.fullmatch(value) is not None


_new_ref = tuple.__new__  # Ref(...) without the NamedTuple's Python-level `__new__`


def refs_and_group(
    msgs: Sequence[notarisation_pb2.StateRef], tag: str
) -> tuple[tuple[Ref, ...], bytes]:
    """Validated Refs of StateRef messages (`tag`: "inputs" or "references") and their group
    hash, `_refs_group(tag, refs)`; INVALID_FIELD on a bad id or a duplicate, the first bad id
    in order named, as a check of all ids before the duplicates.

    One pass over the messages, each key decoded once for its validity and its hash: a notary
    admits every request once per member that sees it (a cluster member up to twice), and
    iterating a repeated protobuf field, building the Refs and decoding each tx_id again for
    the group hash were ~half of an admission (RESULTS.md 2026-12-04, branch ncl8). An empty
    field (most requests name no references) is not iterated at all."""
    if not msgs:
        return (), _EMPTY_GROUPS[tag]
    if len(msgs) > MAX_REFS:
        raise ClientError(R.ERROR_REASON_INVALID_FIELD, f"more than {MAX_REFS} {tag}")
    refs: list[Ref] = []
    keys: list[bytes] = []
    for m in msgs:
        tx_id, index = m.tx_id, m.index
        if not is_tx_id(tx_id):
            raise ClientError(R.ERROR_REASON_INVALID_FIELD, f"{tag}: bad tx_id {tx_id!r}")
        refs.append(_new_ref(Ref, (tx_id, index)))
        keys.append(bytes.fromhex(tx_id) + index.to_bytes(4, "big"))
    if len(refs) > 1 and len(set(refs)) != len(refs):
        raise ClientError(R.ERROR_REASON_INVALID_FIELD, f"{tag} name a state twice")
    return tuple(refs), group_hash(tag, keys)


BUILT_IN = "built-in"  # a builder's default `contract_hash` (never on the wire: not hex)


def _default_hash(contract: str, contract_hash: str) -> str:
    """`contract_hash` as given, or for BUILT_IN the package id of the built-in `contract`."""
    return BUILTIN_HASHES.get(contract, "") if contract_hash == BUILT_IN else contract_hash


@dataclass(frozen=True)
class Output:
    """One output state: its contract, contract data, participants and the package hash of
    the contract's code (`core/utxo/constraints.py`; built without one: the built-in's)."""

    contract: str
    data: bytes
    participants: tuple[bytes, ...]
    contract_hash: str = BUILT_IN

    def __post_init__(self) -> None:
        object.__setattr__(self, "contract_hash", _default_hash(self.contract, self.contract_hash))


@dataclass(frozen=True)
class Command:
    """One command: contract, name, required signers, parameters and the package hash of the
    contract's code (as `Output.contract_hash`)."""

    contract: str
    name: str
    signers: tuple[bytes, ...]
    data: bytes = b""
    contract_hash: str = BUILT_IN

    def __post_init__(self) -> None:
        object.__setattr__(self, "contract_hash", _default_hash(self.contract, self.contract_hash))


@dataclass(frozen=True)
class WireTx:
    """A parsed UTXO transaction with its computed id."""

    tx_id: str
    inputs: tuple[Ref, ...]
    references: tuple[Ref, ...]
    outputs: tuple[Output, ...]
    commands: tuple[Command, ...]
    notary: str
    window: Window
    components: Components

    def out_ref(self, index: int) -> Ref:
        """Reference of output `index`."""
        return Ref(self.tx_id, index)

    def required_signers(self) -> frozenset[bytes]:
        """Every identity named as a signer by a command."""
        return frozenset(s for c in self.commands for s in c.signers)


def output_of(msg: utxo_pb2.UtxoOutput) -> Output:
    """The Output of a UtxoOutput message (its contract hash as the wire has it, "" if none)."""
    return Output(msg.contract, msg.data, tuple(msg.participants), msg.contract_hash)


def output_message(output: Output) -> utxo_pb2.UtxoOutput:
    """The UtxoOutput message of an Output."""
    return utxo_pb2.UtxoOutput(
        contract=output.contract,
        data=output.data,
        participants=list(output.participants),
        contract_hash=output.contract_hash,
    )


def command_message(command: Command) -> utxo_pb2.UtxoCommand:
    """The UtxoCommand message of a Command."""
    return utxo_pb2.UtxoCommand(
        contract=command.contract,
        name=command.name,
        signers=list(command.signers),
        data=command.data,
        contract_hash=command.contract_hash,
    )


def _output(raw: bytes) -> Output:
    msg = parse(utxo_pb2.UtxoOutput, raw, "output")
    if not msg.contract:
        raise ClientError(R.ERROR_REASON_MISSING_FIELD, "output.contract is missing")
    _check_hash(msg.contract_hash)
    return output_of(msg)


def _command(raw: bytes) -> Command:
    msg = parse(utxo_pb2.UtxoCommand, raw, "command")
    if not msg.contract or not msg.name:
        raise ClientError(R.ERROR_REASON_MISSING_FIELD, "command.contract/name is missing")
    _check_hash(msg.contract_hash)
    return Command(msg.contract, msg.name, tuple(msg.signers), msg.data, msg.contract_hash)


def _check_hash(contract_hash: str) -> None:
    """INVALID_FIELD unless a contract hash is empty or 64 lower-case hex digits (whether it is
    one this node runs is `constraints.ContractCode`'s question)."""
    if contract_hash and not is_tx_id(contract_hash):
        raise ClientError(R.ERROR_REASON_INVALID_FIELD, "contract_hash is not a SHA-256 in hex")


def read_transaction(raw: bytes) -> WireTx:
    """Parse and check a serialised UtxoTransaction; compute its tx_id."""
    msg = parse(utxo_pb2.UtxoTransaction, raw, "transaction")
    if len(msg.nonce) < NONCE_MIN_BYTES:
        raise ClientError(R.ERROR_REASON_INVALID_FIELD, f"nonce shorter than {NONCE_MIN_BYTES}")
    if not msg.notary:
        raise ClientError(R.ERROR_REASON_MISSING_FIELD, "transaction.notary is missing")
    if len(msg.outputs) > MAX_OUTPUTS or len(msg.commands) > MAX_COMMANDS:
        raise ClientError(R.ERROR_REASON_INVALID_FIELD, "too many outputs or commands")
    inputs, ins = refs_and_group(msg.inputs, "inputs")
    references, refs = refs_and_group(msg.references, "references")
    if references and set(inputs) & set(references):
        raise ClientError(R.ERROR_REASON_INVALID_FIELD, "a state is both input and reference")
    window = window_of(msg.time_window if msg.HasField("time_window") else None)
    notary, tw = notary_window_groups(msg.notary, window)
    components = Components(
        inputs=ins,
        references=refs,
        outputs=group_hash("outputs", msg.outputs),
        commands=group_hash("commands", msg.commands),
        notary=notary,
        time_window=tw,
        nonce=group_hash("nonce", [msg.nonce]),
    )
    return WireTx(
        tx_id=components.tx_id(),
        inputs=inputs,
        references=references,
        outputs=tuple(_output(o) for o in msg.outputs),
        commands=tuple(_command(c) for c in msg.commands),
        notary=msg.notary,
        window=window,
        components=components,
    )
