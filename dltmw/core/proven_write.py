"""What a VALID transaction on another channel wrote: the one question cross-channel and
cross-flow code asks of a commit proof.

"Which value did a VALID transaction of contract `namespace` write to `key` on that channel?"
A proof answers it only if it verifies against a light client of the channel
(`commit_proof.verify_proof`), proves a VALID transaction, and the channel's config at that
height deploys `namespace` as the built-in contract of that name — its package, or (legacy) no
package at all — so its writes follow the same code as the asker's. Used by the `xfer`
contract through the contract SDK (`contract_sdk/crosschain.proven_write`) and by the UTXO
escrow contract (`core/utxo/escrow.py`), which read the same `xfer` record. Pure; `at` is an
input.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from dltmw.core.builtin_packages import BUILTIN_PACKAGE_IDS
from dltmw.core.channel import ChannelView
from dltmw.core.commit_proof import ProofError, parse_proof, verify_proof
from dltmw.core.early_abort import endorsed_rwset
from dltmw.core.light_client import LightClient
from dltmw.v1 import errors_pb2, transaction_pb2

MISMATCH = errors_pb2.ERROR_REASON_PROOF_MISMATCH


@dataclass(frozen=True)
class ProvenWrite:
    """A value a VALID transaction wrote on another channel."""

    channel_id: str
    block_number: int
    value: bytes


def proven_write(
    client: LightClient, proof: bytes, at: datetime, namespace: str, key: str
) -> ProvenWrite:
    """The value the transaction proven VALID by `proof` wrote to (`namespace`, `key`) on
    `client`'s channel; ProofError (or MALFORMED) saying why not (module docstring)."""
    proven = verify_proof(parse_proof(proof), client, at)
    if proven.code != transaction_pb2.TX_VALIDATION_CODE_VALID:
        raise ProofError(MISMATCH, "the proven transaction is not VALID")
    check_builtin(client.view_at(proven.block_number), namespace, proven.channel_id)
    value = written(proven.envelope, namespace, key)
    if value is None:
        raise ProofError(MISMATCH, f"the proven transaction writes no {key!r}")
    return ProvenWrite(proven.channel_id, proven.block_number, value)


def check_builtin(view: ChannelView, namespace: str, channel_id: str) -> None:
    """PROOF_MISMATCH unless `view` deploys `namespace` as the built-in contract of that name
    (its package, or legacy no package): only then do its writes follow the asker's code."""
    builtin = ("", BUILTIN_PACKAGE_IDS.get(namespace, ""))
    if not any(c.name == namespace and c.package_id in builtin for c in view.config.contracts):
        raise ProofError(MISMATCH, f"{namespace!r} is not the built-in contract on {channel_id}")


def written(envelope: bytes, namespace: str, key: str) -> bytes | None:
    """The value an endorser transaction's envelope writes to (`namespace`, `key`), or None."""
    rwset = endorsed_rwset(envelope)
    if rwset is None or rwset.namespace != namespace:
        return None
    for w in rwset.writes:
        if w.key == key and not w.is_delete:
            return w.value
    return None
