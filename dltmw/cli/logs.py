"""`dltmw logs NET NODE`: the end of a node's log, readable (or raw JSON lines), and `--follow`.

A node writes JSON lines to `run/logs/<node>.log` (`runtime/logs.py`), rotated by size; its
stderr (`.err`: fatal start-up errors, the keeper's restarts) and stdout (`.out`: READY lines)
sit beside it and are plain text. Following survives a rotation: when the file shrinks or is
replaced, reading starts again at the top of the new file.
"""

from __future__ import annotations

import json
import time
from collections import deque
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.markup import escape

from dltmw.cli.errors import UserError

console = Console(highlight=False)
POLL_S = 0.2
SUFFIXES = ("log", "err", "out")
LEVEL_STYLE = {"WARNING": "yellow", "ERROR": "red", "CRITICAL": "bold red"}


def readable(line: str) -> str:
    """A JSON log line as `time LEVEL logger: message [key=value ...]` (other lines as they are)."""
    try:
        rec = json.loads(line)
    except ValueError:
        return escape(line)
    if not isinstance(rec, dict) or "message" not in rec:
        return escape(line)
    level = str(rec.get("level", ""))
    context = " ".join(
        f"{k}={rec[k]}"
        for k in rec
        if k not in {"time", "level", "logger", "node", "message", "exc"}
    )
    text = f"{rec.get('time', '')} {level} {rec.get('logger', '')}: {rec['message']}"
    text = escape(text + (f" [{context}]" if context else ""))
    if "exc" in rec:
        text += "\n" + escape(str(rec["exc"]))
    style = LEVEL_STYLE.get(level)
    return f"[{style}]{text}[/]" if style else text


def _show(line: str, raw: bool) -> None:
    console.print(escape(line) if raw else readable(line), soft_wrap=True)


def show_log(path: Path, lines: int, follow: bool, follow_s: float, raw: bool) -> None:
    """Print the last `lines` lines of `path`, then (with `follow`) what is appended, for
    `follow_s` seconds (0: until interrupted)."""
    if not path.exists():
        raise UserError(f"no log at {path} (has the node been started?)")
    with path.open("r", encoding="utf-8", errors="replace") as f:
        for line in deque(f, maxlen=lines):
            _show(line.rstrip("\n"), raw)
        if not follow:
            return
        _follow(path, f, follow_s, raw)


def _follow(path: Path, handle: TextIO, follow_s: float, raw: bool) -> None:
    deadline = time.monotonic() + follow_s if follow_s > 0 else None
    inode = path.stat().st_ino
    partial = ""
    reopened: TextIO | None = None
    try:
        while deadline is None or time.monotonic() < deadline:
            chunk = handle.read()
            if chunk:
                partial += chunk
                *complete, partial = partial.split("\n")
                for line in complete:
                    _show(line, raw)
                continue
            time.sleep(POLL_S)
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue  # between the rename and the new file of a rotation
            if stat.st_ino != inode or stat.st_size < handle.tell():
                if reopened is not None:
                    reopened.close()
                reopened = handle = path.open("r", encoding="utf-8", errors="replace")
                inode = stat.st_ino
    finally:
        if reopened is not None:
            reopened.close()
