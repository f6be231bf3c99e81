"""Which creator a client names on each channel: its identity in full, or its ~40-byte reference
(identity references stage (b), `ChannelConfig.client_identity_references`; docs/wire.md
"Identity references").

One object per client identity, shared by every connection of it (the SDK `Client`'s gateway
connections, a `PrivacyClient` and its `GatewayClient`), so what one transaction learnt holds
for the next whichever connection carries it — as `client/creator_signing.CreatorSigner` does
for batch proofs. The rule, the same for endorser and private transactions:

* In full until a transaction of this client sent in full has committed on the channel (any
  validation code: peers register a creator from the block's content, not its codes,
  `core/identity_table.py`); from then on by reference. The commit status names block N, so
  every peer resolves the reference from N+1, and any later transaction is ordered after N.
* A transaction's creator is chosen ONCE, when its tx id is made (tx id = SHA-256(nonce ‖
  creator as sent)): a retry, a fail-over or a resume keeps it.
* A reference refused — UNKNOWN_IDENTITY_REFERENCE or MALFORMED at endorsement/admission, or
  the commit codes UNKNOWN_IDENTITY_REFERENCE / BAD_CREATOR_SIGNATURE — changed nothing; the
  client goes back to full on that channel (`refused`), and the caller does the transaction
  again in full under a new tx id. MALFORMED / BAD_CREATOR_SIGNATURE mean the channel takes no
  references (its flag turned off): in full for good there. So does a channel that refused the
  reference after `REFUSALS_MAX` registrations without one committed VALID by reference in
  between (the refusals of transactions in flight together count once): a client that does
  not know the channels' flags (`presuming`, the SDK's) thus stops after two rounds of refused
  attempts on a channel whose config takes nodes' references but not clients'.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from dltmw.aio.entropy import token_bytes
from dltmw.core.hashing import compute_tx_id
from dltmw.core.identity import reference_bytes
from dltmw.v1 import transaction_pb2

UNKNOWN_REFERENCE = "UNKNOWN_IDENTITY_REFERENCE"  # ErrorReason, without its prefix
UNKNOWN_REFERENCE_CODE = transaction_pb2.TX_VALIDATION_CODE_UNKNOWN_IDENTITY_REFERENCE
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
# A creator reference refused because the channel no longer takes references (its flags turned
# off by a config update): a malformed identity at endorsement/admission, a bad creator at
# commit. Nothing was applied either way, so the client goes back to sending in full, for good
# on that channel (review57: it failed every later transaction instead).
REFERENCE_REFUSED = frozenset({UNKNOWN_REFERENCE, "MALFORMED"})
REFERENCE_INVALID_CODES = frozenset(
    {UNKNOWN_REFERENCE_CODE, transaction_pb2.TX_VALIDATION_CODE_BAD_CREATOR_SIGNATURE}
)
REFUSALS_MAX = 2  # refused references in a row (no VALID one between) before full for good


@dataclass(frozen=True)
class TxName:
    """What fixes a transaction's tx id: its nonce and its creator as sent (`compute_tx_id`).
    Chosen once per transaction and carried to every step that names it (a private
    transaction's agreements, its envelope, a resume)."""

    nonce: bytes
    creator: bytes

    @property
    def tx_id(self) -> str:
        return compute_tx_id(self.nonce, self.creator)


class CreatorReferences:
    """One client identity's creator per channel (module docstring)."""

    def __init__(
        self, identity_bytes: bytes, channels: Iterable[str] = (), presuming: bool = False
    ) -> None:
        """`channels`: those whose config takes clients' references (from the network's
        channel files); `presuming`: every channel does until it refuses (module docstring)."""
        self.full = identity_bytes
        self.reference = reference_bytes(identity_bytes) or identity_bytes
        self._referable = set(channels)
        self._presuming = presuming
        self._off: set[str] = set()  # refused for good
        self._registered: set[str] = set()  # channels where a full-creator tx committed
        self._refusals: dict[str, int] = {}  # refused in a row, per channel

    def referable(self, channel_id: str) -> bool:
        """Whether this client may name itself by reference on `channel_id` at all."""
        if channel_id in self._off:
            return False
        return self._presuming or channel_id in self._referable

    def creator(self, channel_id: str) -> bytes:
        """The creator a new transaction on `channel_id` names: the reference once one of
        this client's full-creator transactions committed there, else in full."""
        if channel_id in self._registered and self.referable(channel_id):
            return self.reference
        return self.full

    def new_tx(self, channel_id: str) -> TxName:
        """A fresh nonce with the creator a new transaction on `channel_id` names now."""
        return TxName(token_bytes(24), self.creator(channel_id))

    def committed(self, channel_id: str, creator: bytes, code: int) -> None:
        """A transaction naming `creator` committed on `channel_id` with `code` (not one
        `refused_code` took back)."""
        if creator == self.full:
            if self.referable(channel_id):
                self._registered.add(channel_id)  # its block carried the certificate in full
        elif code == VALID:
            self._refusals.pop(channel_id, None)

    def refused_reason(self, channel_id: str, creator: bytes, reason: str | None) -> bool:
        """Whether a refusal with ErrorInfo `reason` is the reference's (then nothing was
        endorsed or ordered: do it again in full under a new tx id)."""
        if creator == self.full or reason not in REFERENCE_REFUSED:
            return False
        self._fall_back(channel_id, off=reason != UNKNOWN_REFERENCE)
        return True

    def refused_code(self, channel_id: str, creator: bytes, code: int) -> bool:
        """Whether commit code `code` is the reference's refusal (nothing applied: do it again
        in full under a new tx id)."""
        if creator == self.full or code not in REFERENCE_INVALID_CODES:
            return False
        self._fall_back(channel_id, off=code != UNKNOWN_REFERENCE_CODE)
        return True

    def _fall_back(self, channel_id: str, off: bool) -> None:
        if channel_id in self._registered:  # once per registration: concurrent ones are one
            self._registered.discard(channel_id)  # in full until one commits again
        elif not off:
            return
        refusals = self._refusals.get(channel_id, 0) + 1
        self._refusals[channel_id] = refusals
        if off or refusals >= REFUSALS_MAX:
            self._off.add(channel_id)
            self._referable.discard(channel_id)
