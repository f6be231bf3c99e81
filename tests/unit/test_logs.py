"""The one logging setup (dltmw/runtime/logs.py): what a node's JSON line holds and what not."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest

from dltmw.runtime.logs import NodeJsonFormatter, configure_console_logging, set_level


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def _line(record: logging.LogRecord) -> dict[str, object]:
    parsed = json.loads(NodeJsonFormatter("peer0.org1").format(record))
    assert isinstance(parsed, dict)
    return parsed


def _record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("dltmw.x", logging.WARNING, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    return record


def test_a_node_line_is_one_json_object_with_node_level_logger_and_message() -> None:
    line = _line(_record("block %d committed", 7))
    assert line["node"] == "peer0.org1"
    assert line["level"] == "WARNING"
    assert line["logger"] == "dltmw.x"
    assert line["message"] == "block 7 committed"
    assert str(line["time"]).endswith("Z")


def test_channel_and_tx_id_passed_as_extra_are_fields() -> None:
    line = _line(_record("refused", channel="trades", tx_id="ab" * 32))
    assert (line["channel"], line["tx_id"]) == ("trades", "ab" * 32)


def test_nothing_but_the_message_and_known_context_reaches_the_line() -> None:
    """A payload handed over as `extra` under another name is never copied into the log."""
    line = _line(_record("sent", payload=b"PRIVATE-TICKET", channel="trades"))
    assert "PRIVATE-TICKET" not in json.dumps(line)
    assert set(line) == {"time", "level", "logger", "node", "message", "channel"}


def test_an_exception_keeps_its_traceback_in_one_line() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.LogRecord("dltmw.x", logging.ERROR, __file__, 1, "failed", (), None)
        record.exc_info = sys.exc_info()
    text = NodeJsonFormatter("n").format(record)
    assert "\n" not in text
    assert "Traceback" in json.loads(text)["exc"] and "boom" in json.loads(text)["exc"]


def test_the_console_is_readable_and_the_level_changes_at_run_time(restore_root: None) -> None:
    out = io.StringIO()
    configure_console_logging(debug=False, stream=out)
    logging.getLogger("dltmw.cli").info("hidden")
    logging.getLogger("dltmw.cli").warning("shown %s", "here")
    assert set_level("DEBUG") == "WARNING"
    logging.getLogger("dltmw.cli").debug("now visible")
    assert out.getvalue().splitlines() == [
        "WARNING dltmw.cli: shown here",
        "DEBUG dltmw.cli: now visible",
    ]
