"""The config a block leaves in force, replayed from the block alone (pure).

What every node computes at commit: a block that is one config update alone applies the update
if it is VALID against the config in force before it (`txcheck.check_transaction`, which runs
`config_update.check_update`), else changes nothing. A client replaying a channel's blocks from
an orderer (`client/governance.current_config`), the simulator's checks (`sim/config_checks`)
and the explorer's config at a block (`runtime/explorer/epochs.py`) replay it the same way, so
none of them trusts a node's word for the result.
"""

from __future__ import annotations

from dltmw.core.channel import ChannelView
from dltmw.core.config_update import is_config_update
from dltmw.core.txcheck import check_transaction
from dltmw.v1 import block_pb2, transaction_pb2


def next_view(view: ChannelView, block: block_pb2.Block) -> ChannelView:
    """The config after `block`: a valid config update alone in it applies (as at commit); any
    other block returns `view` itself."""
    envelopes = block.data.envelopes
    if len(envelopes) != 1 or not is_config_update(envelopes[0]):
        return view
    checked = check_transaction(envelopes[0], view)
    if checked.code == transaction_pb2.TX_VALIDATION_CODE_VALID and checked.config is not None:
        return checked.config
    return view
