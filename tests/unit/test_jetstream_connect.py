"""An orderer whose JetStream cluster does not let it in says so instead of hanging
(`runtime/roles/orderer/jetstream_log.StreamLog.open`): the first connection is bounded, and
the refusal names the servers and the last error. Here no server listens at all (the same path
as a TLS subject the members do not know: nats-py retries either for ever)."""

from __future__ import annotations

import asyncio
import time

import pytest

from dltmw.core.errors import DltmwError
from dltmw.net.ports import plan_port
from dltmw.runtime.config_file import JetStreamTable
from dltmw.runtime.roles.orderer import jetstream_log
from dltmw.v1 import errors_pb2


def test_a_cluster_that_never_answers_is_a_clear_unavailable_not_a_hang(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(jetstream_log, "READY_S", 1.0)
    url = f"nats://127.0.0.1:{plan_port()}"
    log = jetstream_log.StreamLog("trades", JetStreamTable(servers=[url]), "orderer9")

    async def main() -> DltmwError:
        with pytest.raises(DltmwError) as refused:
            await asyncio.wait_for(log.open(), 15)  # red: TimeoutError from here
        return refused.value

    start = time.monotonic()
    error = asyncio.run(main())
    assert error.reason == errors_pb2.ERROR_REASON_ORDERING_UNAVAILABLE
    assert url in error.message and "let this orderer in" in error.message
    assert time.monotonic() - start < 10
