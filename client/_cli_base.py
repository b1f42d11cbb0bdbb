"""The command line's shared parts: exit codes, errors and their lines, input reading, argument types,
where a command writes (`Output`), and which server and token it uses."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from pathlib import Path
from typing import IO, Any

from rich.console import Console

from taskwire.common import (
    AdmissionTimeout,
    AlreadyExists,
    InvalidTransition,
    NotFound,
    ShuttingDown,
    State,
    TaskwireError,
    Unauthenticated,
    Unimplemented,
    ValidationError,
    positive_seconds,
)
from taskwire.common.bearer import TOKEN_ENV

from ._common import DEFAULT_ADDRESS, channel_target, check_credentials, parse_state
from ._errors import ServerUnavailable, WaitTimeout
from ._models import ExecutionSnapshot
from ._render import (
    dumps,
    final_line,
)

SERVER_ENV = "TASKWIRE_SERVER"
PROG = "taskwire"


class ExitCode(IntEnum):
    """The exit codes of `taskwire`; stable, documented in `taskwire --help` and docs/cli.md."""

    OK = 0
    FAILED = 1  # the execution ended FAILED (or in a terminal state this version does not know)
    USAGE = 2  # a usage error or bad input (unknown flag, bad --input JSON, unreadable file)
    CANCELLED = 3  # the execution ended CANCELLED
    REJECTED = 4  # the server refused the request (NOT_FOUND, INVALID_ARGUMENT, RESOURCE_EXHAUSTED, ...)
    UNAVAILABLE = 5  # the server could not be reached, or is shutting down
    TIMEOUT = 6  # --timeout of wait/watch passed first (the execution goes on)
    INTERRUPTED = 130  # Ctrl-C


EXIT_CODES_HELP = """\
exit codes:
  0  success (for wait/watch/submit --wait: the execution SUCCEEDED)
  1  the execution FAILED (or ended in a state this version does not know)
  2  usage error or bad input (unknown flag, bad --input JSON, unreadable @file)
  3  the execution was CANCELLED
  4  the server rejected the request (NOT_FOUND, INVALID_ARGUMENT, RESOURCE_EXHAUSTED, ...)
  5  the server is unreachable (or shutting down)
  6  --timeout of wait/watch passed before the execution finished (it keeps running)
"""

# A terminal state this version does not know (a newer server) is no success: it exits like FAILED.
_FINAL_EXIT = {State.SUCCESS: ExitCode.OK, State.FAILED: ExitCode.FAILED, State.CANCELLED: ExitCode.CANCELLED}


def final_exit(state: State) -> ExitCode:
    return _FINAL_EXIT.get(state, ExitCode.FAILED)


# What to try next, by error class (the server's message says what and why).
_HINTS: dict[type[TaskwireError], str] = {
    NotFound: "list executions with 'taskwire list'",
    ValidationError: "fix the value and try again",
    ShuttingDown: "the server is shutting down; try again shortly",
    Unauthenticated: f"pass --token or set {TOKEN_ENV}",
    Unimplemented: "the server is older than this command; upgrade taskwire-server to use it",
}


class UsageError(Exception):
    """Bad input the user can fix (exit code 2)."""


# ---- Errors and exit codes ----------------------------------------------------------------------


def exit_code_for(error: BaseException) -> ExitCode:
    if isinstance(error, UsageError):
        return ExitCode.USAGE
    if isinstance(error, ServerUnavailable | ShuttingDown):
        return ExitCode.UNAVAILABLE
    if isinstance(error, WaitTimeout):
        return ExitCode.TIMEOUT
    if isinstance(error, TaskwireError):
        return ExitCode.REJECTED
    if isinstance(error, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    raise TypeError(f"no exit code for {type(error).__name__}")


def error_line(error: BaseException, *, action: str) -> str:
    """The one line printed on stderr: what failed, why, what to try."""
    if isinstance(error, ServerUnavailable):
        return (
            f"{PROG}: cannot reach the server at {error.address} — is taskwire-server running? "
            f"(set --server or {SERVER_ENV})"
        )
    if isinstance(error, WaitTimeout):
        return f"{PROG}: {action}: {error.message}; it keeps running — 'taskwire watch {error.execution_id}' follows it"
    if isinstance(error, UsageError):
        return f"{PROG}: {error}"
    message = str(error) or type(error).__name__
    hint = next((text for cls, text in _HINTS.items() if isinstance(error, cls)), "")
    if isinstance(error, NotFound) and action.startswith("workers"):
        hint = "list connected workers with 'taskwire workers'"
    if isinstance(error, NotFound) and action.startswith("schedule"):
        hint = "list schedules with 'taskwire schedule list'"
    if isinstance(error, AlreadyExists) and action.startswith("schedule create"):
        hint = "pick another name, or 'taskwire schedule delete' the old one first"
    if isinstance(error, InvalidTransition) and action.startswith("delete"):
        hint = f"only a finished execution can be deleted; 'taskwire cancel {action.split()[-1]}' ends it first"
    if isinstance(error, AdmissionTimeout) and action.startswith("submit"):
        hint = "the queue stayed full; try again later, check 'taskwire stats', or use --fail-fast"
    return f"{PROG}: {action}: {message}" + (f" — {hint}" if hint else "")


def ended_line(snapshot: ExecutionSnapshot) -> str:
    """The stderr line of `wait` when the execution did not succeed."""
    return f"{PROG}: {final_line(snapshot.id, snapshot.state, snapshot.reason)}"


# ---- Parsing what the user typed ----------------------------------------------------------------


def read_input(text: str, *, stdin: IO[str] | None = None) -> Any:
    """The value of `--input`: JSON text, `@path` (a JSON file) or `@-` (JSON on stdin)."""
    source = "--input"
    if text.startswith("@"):
        name = text[1:]
        if not name:
            raise UsageError("--input @ needs a file name (or @- for stdin)")
        if name == "-":
            text, source = (stdin or sys.stdin).read(), "--input @- (stdin)"
        else:
            try:
                text = Path(name).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
                raise UsageError(f"cannot read --input file {name!r}: {reason}") from None
            source = f"--input file {name!r}"
    try:
        return json.loads(text)
    except ValueError as error:
        raise UsageError(
            f"{source} is not valid JSON ({error}); quote strings as JSON, e.g. --input '\"text\"'"
        ) from None


def _seconds(text: str) -> timedelta:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds, got {text!r}")
    try:
        return timedelta(seconds=value)
    except OverflowError:
        raise argparse.ArgumentTypeError(f"{text!r} seconds is too long") from None


def _wait_seconds(text: str) -> timedelta:
    """How long a command waits: more than zero seconds (a wait of none would time out before it asked)."""
    positive_seconds(text)
    return _seconds(text)


def _state(text: str) -> State:
    try:
        return parse_state(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 time such as 2030-01-31T09:00:00Z, got {text!r}"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def server_address(args: argparse.Namespace, env: dict[str, str] | os._Environ[str] | None = None) -> str:
    """The --server address (or several, comma-separated); UsageError when it names none, or several it cannot list."""
    environ = os.environ if env is None else env
    address: str = getattr(args, "server", None) or environ.get(SERVER_ENV) or DEFAULT_ADDRESS
    try:
        channel_target(address)
    except ValueError as error:
        raise UsageError(f"--server: {error}") from None
    return address


def bearer_token(args: argparse.Namespace, env: dict[str, str] | os._Environ[str] | None = None) -> str | None:
    """The --token, else $TASKWIRE_TOKEN, without the whitespace around it (a token read from a file ends with a
    newline); None for neither. UsageError naming where it came from when it cannot be sent."""
    environ = os.environ if env is None else env
    token, source = (getattr(args, "token", None) or "").strip(), "--token"
    if not token:
        token, source = environ.get(TOKEN_ENV, "").strip(), TOKEN_ENV
    if not token:
        return None
    try:
        check_credentials(token, None)
    except ValueError as error:
        raise UsageError(f"{source}: {error}") from None
    return token


# ---- Commands -----------------------------------------------------------------------------------


class Output:
    """Where a command writes: stdout (a rich console for tables) and stderr."""

    def __init__(self, stdout: IO[str], stderr: IO[str]) -> None:
        self.stdout = stdout
        self.stderr = stderr
        self.is_terminal = stdout.isatty()
        # Off a terminal, print wide so tables never wrap or cut ids.
        self.console = Console(file=stdout, width=None if self.is_terminal else 240, highlight=False, soft_wrap=False)

    def json(self, value: Any) -> None:
        print(dumps(value), file=self.stdout, flush=True)

    def line(self, text: str) -> None:
        print(text, file=self.stdout, flush=True)

    def error(self, text: str) -> None:
        print(text, file=self.stderr, flush=True)
