"""The one logging setup: JSON lines for nodes, readable lines for the `dltmw` command.

Why the standard library and not structlog: every library under us (grpc, tenacity, sqlite3,
asyncio) already logs through `logging`, and so does every dltmw module
(`logger = logging.getLogger(__name__)`); a formatter is all that JSON output needs, and a second
logging API would split the code base in two styles.

Node lines (`NodeJsonFormatter`) are one JSON object each:

    {"time": "2026-11-30T03:44:59.123Z", "level": "INFO", "logger": "dltmw.runtime",
     "node": "peer0.org1", "message": "...", "channel": "trades", "tx_id": "..."}

`channel` and `tx_id` (and the other `CONTEXT_KEYS`) appear when the code passes them as
`extra={"channel": cid, "tx_id": tx_id}`; an exception adds `exc` (its traceback as text).
Nothing else of a record is copied: in particular no argument object is serialised, so what
reaches a log is only what a message's format string puts there (the privacy rule of
docs/privacy.md: never a private payload's bytes).

The rules of issue 10 hold here: the node's file is rotated by size (`[logging]`), repeated
warnings are rate-limited where they are raised (`aio/throttle.py`), fatal start-up errors also
go to stderr (`runtime/__main__.py`). The level comes from `[logging] level` and can be changed
while the node runs with `set_level` (the operations endpoint's `/loglevel` calls it).
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from dltmw.runtime.config_file import LogSettings

CONTEXT_KEYS = ("channel", "tx_id", "block_number", "peer", "task")
CONSOLE_FORMAT = "%(levelname)s %(name)s: %(message)s"


class NodeJsonFormatter(logging.Formatter):
    """One JSON object per line, stamped with the node id."""

    def __init__(self, node_id: str) -> None:
        super().__init__()
        self.node_id = node_id

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC)
        line: dict[str, Any] = {
            "time": when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "node": self.node_id,
            "message": record.getMessage(),
        }
        for key in CONTEXT_KEYS:
            value = record.__dict__.get(key)
            if value is not None:
                line[key] = value if isinstance(value, int | str) else str(value)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        return json.dumps(line, ensure_ascii=False)


def configure_node_logging(node_id: str, log_file: Path | None, settings: LogSettings) -> None:
    """Root logging of a node process: JSON lines to its rotating file, else to stderr."""
    handler: logging.Handler
    if log_file is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            log_file,
            maxBytes=settings.file_bytes_max,
            backupCount=settings.file_count - 1,
            encoding="utf-8",
        )
    handler.setFormatter(NodeJsonFormatter(node_id))
    _install(handler, settings.level)


def configure_console_logging(debug: bool = False, stream: TextIO | None = None) -> None:
    """Logging of the `dltmw` command: readable lines on stderr, warnings and worse unless
    `--debug` asks for everything."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter(CONSOLE_FORMAT))
    _install(handler, "DEBUG" if debug else "WARNING")


def set_level(level: str) -> str:
    """Change the process's log level while it runs; returns the previous level's name."""
    root = logging.getLogger()
    previous = logging.getLevelName(root.level)
    root.setLevel(level.upper())
    return str(previous)


def _install(handler: logging.Handler, level: str) -> None:
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)
