"""The error boundary of the `dltmw` command: a message and an exit status, never a traceback —
unless `--debug` asks for one.

Whose fault it was decides the status (the house rule, here for people rather than RPCs):

| status | meaning |
|---|---|
| 1 | the command could not do its job: a bad file, a network that is not running, a refused call |
| 2 | bad command line (click's own usage errors; also `UserError(..., status=2)`) |
| 70 | a bug in dltmw (`EX_SOFTWARE`): reported with its type, the traceback with `--debug` |
| 130 | interrupted (Ctrl-C) |

A refused RPC is shown as the node said it: gRPC code, ErrorInfo reason and message.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from typing import NoReturn

import grpc
from rich.console import Console
from rich.markup import escape

from dltmw.net.tomlfile import FileError
from dltmw.rpc.status import reason_of

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_BUG = 70
err_console = Console(stderr=True)


class UserError(Exception):
    """Something the user can fix; the message says what and how."""

    def __init__(self, message: str, status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.status = status


def describe(exc: BaseException) -> tuple[str, int]:
    """(message, exit status) for an exception that reached the top of a command."""
    if isinstance(exc, UserError):
        return str(exc), exc.status
    if isinstance(exc, grpc.RpcError):
        code = exc.code().name if hasattr(exc, "code") else "UNKNOWN"
        details = exc.details() if hasattr(exc, "details") else str(exc)
        reason = reason_of(exc)
        return f"the node refused: {code}{f' {reason}' if reason else ''}: {details}", EXIT_FAILED
    if isinstance(exc, FileError | FileNotFoundError | PermissionError | IsADirectoryError):
        return str(exc), EXIT_FAILED
    if isinstance(exc, ConnectionError | TimeoutError | OSError | ValueError | KeyError):
        return f"{type(exc).__name__}: {exc}", EXIT_FAILED
    return f"internal error {type(exc).__name__}: {exc}", EXIT_BUG


def run(app: Callable[..., object], argv: list[str]) -> NoReturn:
    """Run the typer app on `argv` and exit with a status from the table above. Typer itself
    handles usage errors (status 2), `typer.Exit` and Ctrl-C; everything else ends here."""
    debug = "--debug" in argv
    try:
        app(args=argv, prog_name="dltmw")
    except Exception as exc:
        message, status = describe(exc)
        if debug:
            traceback.print_exc()
        hint = " (--debug shows the traceback)" if status == EXIT_BUG and not debug else ""
        err_console.print(f"[red]dltmw: error:[/] {escape(message)}{hint}", highlight=False)
        sys.exit(status)
    sys.exit(0)
