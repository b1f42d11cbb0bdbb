"""`taskwire`: the command line over the SDK.

Every command talks to one server (`--server`, `TASKWIRE_SERVER`, default
127.0.0.1:50051). Read commands print rich tables for people and, with `--json`,
the stable JSON views for scripts. Errors are one line on stderr and an exit code
from `ExitCode`; never a traceback for a user mistake or an unreachable server.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from pathlib import Path
from typing import IO, Any, NoReturn

from opentelemetry import context as otel_context
from opentelemetry import propagate
from rich.console import Console

from taskwire.common import (
    AdmissionTimeout,
    ExecutionFilter,
    ExecutionSpec,
    InvalidTransition,
    NotFound,
    ShuttingDown,
    State,
    TaskwireError,
    Unauthenticated,
    ValidationError,
    positive_int,
)
from taskwire.common.bearer import TOKEN_ENV
from taskwire.common.tls import TlsConfigError, TlsFiles, add_tls_arguments, tls_from_args

from ._common import DEFAULT_ADDRESS, parse_state, unserved_warning
from ._errors import ServerUnavailable, WaitTimeout
from ._events import WatchEvent
from ._flowfile import FlowFileError, load_flow
from ._live import JsonLinesView, LiveView, PlainView, WatchView
from ._models import ExecutionSnapshot
from ._render import (
    dumps,
    execution_detail,
    executions_table,
    final_line,
    jsonable,
    list_view,
    reason_text,
    stats_detail,
    stats_view,
    task_tree,
    workers_table,
    workers_view,
)
from ._sync import Client
from ._tokens_cmd import add_tokens_command, cmd_tokens

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


def _add_filter(parser: argparse.ArgumentParser, action: str) -> None:
    """The options that select many executions for a bulk cancel or delete."""
    group = parser.add_argument_group(f"{action} every execution that matches (instead of one ID)")
    group.add_argument("--state", dest="states", metavar="S", type=_state, action="append", default=[])
    group.add_argument("--handler", metavar="H", default="", help="with a task run for this handler")
    group.add_argument("--label", dest="labels", metavar="K=V", type=_label, action="append", default=[])
    group.add_argument("--created-after", metavar="TIME", type=_time, help="created at or after (ISO 8601)")
    group.add_argument("--created-before", metavar="TIME", type=_time, help="created before (ISO 8601)")
    group.add_argument("--dry-run", action="store_true", help="count the matches; change nothing")


def _selection(args: argparse.Namespace) -> ExecutionFilter | None:
    """The filter of a bulk action, None for a single ID (UsageError for both or neither)."""
    chosen = bool(args.states or args.handler or args.labels or args.created_after or args.created_before)
    if args.execution_id is not None:
        if chosen or args.dry_run:
            raise UsageError("give an execution ID or filter options (--state, --handler, ...), not both")
        return None
    if not chosen:
        raise UsageError("give an execution ID, or filter options (--state, --handler, --label, --created-after, ...)")
    return ExecutionFilter(
        states=tuple(args.states),
        handler=args.handler,
        labels=dict(args.labels),
        created_after=args.created_after,
        created_before=args.created_before,
    )


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.USAGE, f"{PROG}: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--server",
        metavar="HOST:PORT",
        default=argparse.SUPPRESS,
        help=f"the taskwire server (default: ${SERVER_ENV} or {DEFAULT_ADDRESS})",
    )
    common.add_argument(
        "--token",
        metavar="TOKEN",
        default=argparse.SUPPRESS,
        help=f"bearer token for a server with an auth file (default: ${TOKEN_ENV}, which other users cannot "
        "read from the process list)",
    )
    add_tls_arguments(common)
    as_json = _Parser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")
    # For the subcommands of a command that takes --json itself: unset there keeps the command's value.
    also_json = _Parser(add_help=False)
    also_json.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON for scripts")

    parser = _Parser(
        prog=PROG,
        description="Submit, inspect, follow and cancel taskwire executions.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    def command(name: str, help: str, *parents: _Parser) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = commands.add_parser(
            name,
            help=help,
            description=help,
            epilog=EXIT_CODES_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            parents=[common, *parents],
        )
        return parser

    submit = command("submit", "submit one task, or the tasks of a flow file; prints the execution id", as_json)
    submit.add_argument("handler", metavar="HANDLER", nargs="?", help="the handler to run")
    submit.add_argument(
        "-f",
        "--file",
        metavar="FILE",
        help="submit the execution a YAML or JSON flow file describes (several tasks, dependencies); - for stdin",
    )
    submit.add_argument(
        "--input", metavar="JSON|@FILE", help="the handler's input: JSON text, @path to a JSON file, or @- for stdin"
    )
    submit.add_argument("--timeout", metavar="S", type=_seconds, help="limit of each attempt, in seconds")
    submit.add_argument("--max-attempts", metavar="N", type=int, help="attempts in all, the first included")
    submit.add_argument(
        "--schedule-to-start-timeout",
        metavar="S",
        type=_seconds,
        help="fail the task (SCHEDULE_TO_START_TIMEOUT) when no worker starts it within S seconds of being queued",
    )
    submit.add_argument(
        "--max-infrastructure-retries",
        metavar="N",
        type=int,
        help="retries after failures that are not the handler's fault (worker lost or shut down; default 3)",
    )
    submit.add_argument("--key", metavar="K", help="idempotency key: a repeated submit returns the same execution")
    submit.add_argument("--name", metavar="N", help="a label for the execution (default: the handler)")
    submit.add_argument(
        "--fail-fast", action="store_true", help="fail at once when the queue is full (default: wait for room)"
    )
    follow = submit.add_mutually_exclusive_group()
    follow.add_argument("--wait", action="store_true", help="wait for the result and print it")
    follow.add_argument("--watch", action="store_true", help="show the live view until the execution ends")

    get = command("get", "show one execution with its task runs", as_json)
    get.add_argument("execution_id", metavar="ID")

    listing = command("list", "list executions, newest first", as_json)
    listing.add_argument(
        "--state",
        dest="states",
        metavar="S",
        type=_state,
        action="append",
        default=[],
        help="only this state (repeatable): " + ", ".join(s.value for s in State),
    )
    listing.add_argument("--handler", metavar="H", default="", help="only executions running this handler")
    listing.add_argument("--limit", metavar="N", type=positive_int, default=50, help="at most N (default: 50)")

    cancel = command("cancel", "cancel an execution (idempotent), or every one that matches", as_json)
    cancel.add_argument("execution_id", metavar="ID", nargs="?")
    cancel.add_argument("--reason", metavar="R", default="", help="why; stored with the execution")
    _add_filter(cancel, "cancel")

    delete = command("delete", "delete a finished execution with its history, or every one that matches", as_json)
    delete.add_argument("execution_id", metavar="ID", nargs="?")
    _add_filter(delete, "delete")

    rerun = command("rerun", "run a finished execution again, as a new one; prints its id", as_json)
    rerun.add_argument("execution_id", metavar="ID")
    rerun.add_argument(
        "--failed-only", action="store_true", help="run only the tasks that did not succeed; reuse the others' outputs"
    )
    rerun_follow = rerun.add_mutually_exclusive_group()
    rerun_follow.add_argument("--wait", action="store_true", help="wait for the result and print it")
    rerun_follow.add_argument("--watch", action="store_true", help="show the live view until it ends")

    wait = command("wait", "wait for an execution to end and print its result", as_json)
    wait.add_argument("execution_id", metavar="ID")
    wait.add_argument("--timeout", metavar="S", type=_seconds, help="give up after S seconds (exit code 6)")

    watch = command("watch", "follow an execution live until it ends", as_json)
    watch.add_argument("execution_id", metavar="ID")
    watch.add_argument("--timeout", metavar="S", type=_seconds, help="give up after S seconds (exit code 6)")

    command("stats", "queue and worker statistics", as_json)
    workers = command("workers", "list connected workers (the default) or drain one", as_json)
    actions = workers.add_subparsers(dest="workers_action", metavar="ACTION", parser_class=_Parser)

    def action(name: str, help: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(
            name, help=help, description=help, parents=[common, also_json]
        )
        return parser

    action("list", "list connected workers (the same as 'taskwire workers')")
    drain = action("drain", "drain a worker: it finishes what it runs, takes nothing new, and exits")
    drain.add_argument("worker", metavar="NAME", help="the worker's name, as 'taskwire workers' shows it")
    drain.add_argument(
        "--grace",
        metavar="S",
        type=_seconds,
        help="seconds its running tasks may take to finish before they are aborted (default: the worker's own)",
    )
    drain.add_argument("--reason", metavar="TEXT", default="", help="why; shown in the worker's log")
    add_tokens_command(commands, _Parser)

    dev_certs = commands.add_parser(
        "dev-certs",
        help="create a local CA, a server certificate and client certificates for mutual TLS",
        description="Create a local CA, a server certificate (for localhost, 127.0.0.1, ::1 and each --host) "
        "and one client certificate per --client (URI SAN spiffe://taskwire/NAME) in DIR, then print the "
        "flags that use them. For trying mutual TLS, not for production.",
    )
    dev_certs.add_argument("directory", metavar="DIR", type=Path, help="where to write them (created if missing)")
    dev_certs.add_argument(
        "--host", dest="hosts", metavar="NAME", action="append", default=[], help="another server name or IP (repeat)"
    )
    dev_certs.add_argument(
        "--client",
        dest="clients",
        metavar="NAME",
        action="append",
        default=[],
        help="a client certificate for NAME (repeatable; default: worker and admin)",
    )
    return parser


def server_address(args: argparse.Namespace, env: dict[str, str] | os._Environ[str] | None = None) -> str:
    environ = os.environ if env is None else env
    return getattr(args, "server", None) or environ.get(SERVER_ENV) or DEFAULT_ADDRESS


def bearer_token(args: argparse.Namespace, env: dict[str, str] | os._Environ[str] | None = None) -> str | None:
    environ = os.environ if env is None else env
    return getattr(args, "token", None) or environ.get(TOKEN_ENV) or None


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


def _watch_view(args: argparse.Namespace, out: Output) -> WatchView:
    if args.json:
        return JsonLinesView(out.stdout)
    if out.is_terminal:
        return LiveView(out.console)
    return PlainView(out.stdout)


def _follow(client: Client, execution_id: str, args: argparse.Namespace, out: Output) -> ExitCode:
    """The live view until the execution ends; the exit code of its final state."""
    timeout: timedelta | None = getattr(args, "timeout", None) if args.command not in ("submit", "rerun") else None
    with _watch_view(args, out) as view:

        def show(event: WatchEvent) -> None:
            view.show(event)

        done = client.wait_finished(execution_id, timeout, on_event=show)
        view.finish(done.id, done.state, done.reason)
    if not args.json and any(run.depends_on for run in done.task_runs):
        out.console.print(task_tree(done))
    return final_exit(done.state)


def _wait(client: Client, execution_id: str, args: argparse.Namespace, out: Output) -> ExitCode:
    """Wait, then print the result (people) or the execution's JSON view (scripts)."""
    timeout: timedelta | None = getattr(args, "timeout", None) if args.command not in ("submit", "rerun") else None
    done = client.wait_finished(execution_id, timeout)
    if args.json:
        out.json(done.to_json())
    elif done.state is State.SUCCESS:
        out.json(jsonable(done.output))
    else:
        out.error(ended_line(done))
    return final_exit(done.state)


def cmd_submit(client: Client, args: argparse.Namespace, out: Output) -> ExitCode:
    if (args.handler is None) == (args.file is None):
        raise UsageError("submit takes a HANDLER or -f FILE (one of them)")
    if args.file is not None:
        submitted = client.submit_execution(_flow_spec(args), wait_for_room=not args.fail_fast)
    else:
        value = read_input(args.input) if args.input is not None else None
        submitted = client.submit(
            args.handler,
            value,
            timeout=args.timeout,
            max_attempts=args.max_attempts,
            max_infrastructure_retries=args.max_infrastructure_retries,
            key=args.key,
            name=args.name,
            schedule_to_start_timeout=args.schedule_to_start_timeout,
            wait_for_room=not args.fail_fast,
        )
    if submitted.unserved_handlers:
        out.error(f"warning: {unserved_warning(submitted.id, submitted.unserved_handlers)}")
    if args.wait or args.watch:
        if not args.json:
            out.error(f"submitted {submitted.id}")
        return (_follow if args.watch else _wait)(client, submitted.id, args, out)
    if args.json:
        out.json(submitted.to_json())
    else:
        out.line(submitted.id)
    return ExitCode.OK


def _flow_spec(args: argparse.Namespace) -> ExecutionSpec:
    """The execution of `submit -f FILE`; the task options of a single submit do not apply to it."""
    single = ("input", "timeout", "max_attempts", "max_infrastructure_retries", "schedule_to_start_timeout")
    given = [name for name in single if getattr(args, name) is not None]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise UsageError(f"{flags}: set these in the flow file's tasks, not with -f")
    name = args.file
    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise UsageError(f"cannot read the flow file {name!r}: {reason}") from None
    try:
        spec = load_flow(text, "stdin" if name == "-" else name)
    except FlowFileError as error:
        raise UsageError(str(error)) from None
    if args.key or args.name:
        spec = replace(spec, idempotency_key=args.key or spec.idempotency_key, name=args.name or spec.name)
    return spec


def cmd_get(client: Client, args: argparse.Namespace, out: Output) -> ExitCode:
    snapshot = client.get(args.execution_id)
    if args.json:
        out.json(snapshot.to_json())
    else:
        out.console.print(execution_detail(snapshot))
    return ExitCode.OK


def cmd_list(client: Client, args: argparse.Namespace, out: Output) -> ExitCode:
    snapshots = list(client.list(states=args.states, handler=args.handler, limit=args.limit))
    if args.json:
        out.json(list_view(snapshots))
    elif snapshots:
        out.console.print(executions_table(snapshots))
    else:
        out.error("no executions")
    return ExitCode.OK


def cmd_cancel(client: Client, args: argparse.Namespace, out: Output) -> ExitCode:
    selection = _selection(args)
    if selection is not None:
        result = client.cancel_matching(selection, reason=args.reason, dry_run=args.dry_run)
        verb = "would cancel" if args.dry_run else "cancelled"
        if args.json:
            out.json({"matched": result.matched, "cancelled": result.changed, "dry_run": args.dry_run})
        else:
            ended = result.matched - result.changed
            out.line(f"{verb} {result.changed} of {result.matched} matching executions ({ended} had already ended)")
        return ExitCode.OK
    snapshot = client.cancel(args.execution_id, args.reason)
    if args.json:
        out.json(snapshot.to_json())
    elif snapshot.state is State.CANCELLED:
        out.line(f"{snapshot.id} CANCELLED ({reason_text(snapshot.reason)})")
    elif snapshot.is_terminal:
        out.line(f"{snapshot.id} had already ended {snapshot.state.value}; nothing to cancel")
    else:
        out.line(
            f"{snapshot.id} cancel requested; it is {snapshot.state.value} while its handlers stop "
            f"(follow with 'taskwire watch {snapshot.id}')"
        )
    return ExitCode.OK


def cmd_delete(client: Client, args: argparse.Namespace, out: Output) -> ExitCode:
    selection = _selection(args)
    if selection is not None:
        result = client.delete_matching(selection, dry_run=args.dry_run)
        verb = "would delete" if args.dry_run else "deleted"
        if args.json:
            out.json(
                {
                    "matched": result.matched,
                    "deleted": result.changed,
                    "skipped": result.skipped,
                    "dry_run": args.dry_run,
                }
            )
        else:
            out.line(
                f"{verb} {result.changed} of {result.matched} matching executions"
                f" ({result.skipped} not finished, left alone)"
            )
        return ExitCode.OK
    client.delete(args.execution_id)
    if args.json:
        out.json({"id": args.execution_id, "deleted": True})
    else:
        out.line(f"{args.execution_id} deleted")
    return ExitCode.OK


def cmd_rerun(client: Client, args: argparse.Namespace, out: Output) -> ExitCode:
    again = client.rerun(args.execution_id, only_failed=args.failed_only)
    if args.wait or args.watch:
        if not args.json:
            out.error(f"re-running {args.execution_id} as {again.id}")
        return (_follow if args.watch else _wait)(client, again.id, args, out)
    if args.json:
        out.json(again.to_json())
    else:
        out.line(again.id)
    return ExitCode.OK


def cmd_wait(client: Client, args: argparse.Namespace, out: Output) -> ExitCode:
    return _wait(client, args.execution_id, args, out)


def cmd_watch(client: Client, args: argparse.Namespace, out: Output) -> ExitCode:
    return _follow(client, args.execution_id, args, out)


def cmd_stats(client: Client, args: argparse.Namespace, out: Output) -> ExitCode:
    stats = client.stats()
    if args.json:
        out.json(stats_view(stats))
    else:
        out.console.print(stats_detail(stats))
    return ExitCode.OK


def cmd_workers(client: Client, args: argparse.Namespace, out: Output) -> ExitCode:
    if args.workers_action == "drain":
        return cmd_drain(client, args, out)
    workers = client.workers()
    if args.json:
        out.json(workers_view(workers))
    elif workers:
        out.console.print(workers_table(workers))
    else:
        out.error("no workers connected")
    return ExitCode.OK


def cmd_drain(client: Client, args: argparse.Namespace, out: Output) -> ExitCode:
    told = client.drain_worker(args.worker, grace=args.grace, reason=args.reason)
    if args.json:
        out.json(workers_view(told))
        return ExitCode.OK
    for worker in told:
        out.line(f"{worker.name} (session {worker.session_id}) is draining: {worker.in_flight} running, nothing new")
    return ExitCode.OK


COMMANDS: dict[str, Callable[[Client, argparse.Namespace, Output], ExitCode]] = {
    "submit": cmd_submit,
    "get": cmd_get,
    "list": cmd_list,
    "cancel": cmd_cancel,
    "rerun": cmd_rerun,
    "delete": cmd_delete,
    "wait": cmd_wait,
    "watch": cmd_watch,
    "stats": cmd_stats,
    "workers": cmd_workers,
}


def cmd_dev_certs(args: argparse.Namespace, out: Output) -> int:
    # Imported here: the other commands do not load the cryptography package.
    from ._dev_certs import DEFAULT_CLIENTS, usage_text, write_dev_certs

    try:
        certs = write_dev_certs(args.directory, hosts=args.hosts, clients=args.clients or DEFAULT_CLIENTS)
    except (ValueError, OSError) as error:
        out.error(f"{PROG}: dev-certs: {error}")
        return ExitCode.USAGE
    out.line(usage_text(certs))
    return ExitCode.OK


def action_of(args: argparse.Namespace) -> str:
    """What the user asked for, as the error line names it: `get 01J...`, `submit echo`."""
    if getattr(args, "workers_action", None) == "drain":
        return f"workers drain {args.worker}"
    subject = getattr(args, "execution_id", None) or getattr(args, "handler", None) or ""
    return f"{args.command} {subject}".strip()


@contextlib.contextmanager
def _parent_trace() -> Iterator[None]:
    """A trace context in TRACEPARENT (and TRACESTATE), as a script in a traced job sets it, becomes the
    parent of what the command submits."""
    carrier = {name.lower(): value for name in ("TRACEPARENT", "TRACESTATE") if (value := os.environ.get(name))}
    if not carrier:
        yield
        return
    token = otel_context.attach(propagate.extract(carrier))
    try:
        yield
    finally:
        otel_context.detach(token)


def main(argv: Sequence[str] | None = None, *, stdout: IO[str] | None = None, stderr: IO[str] | None = None) -> int:
    """Run one command; returns its exit code (the console script exits with it)."""
    out = Output(stdout or sys.stdout, stderr or sys.stderr)
    args = build_parser().parse_args(argv)
    if args.command == "tokens":
        out.line(cmd_tokens(args))
        return ExitCode.OK
    if args.command == "dev-certs":
        return cmd_dev_certs(args, out)
    tls: TlsFiles | None = None
    try:
        try:
            tls = tls_from_args(args)
            credentials = tls.credentials() if tls is not None else None
        except TlsConfigError as error:
            raise UsageError(str(error)) from None
        options = tls.channel_options() if tls is not None else ()
        with (
            Client(server_address(args), credentials=credentials, options=options, token=bearer_token(args)) as client,
            _parent_trace(),
        ):
            return COMMANDS[args.command](client, args, out)
    except (UsageError, TaskwireError) as error:
        line = error_line(error, action=action_of(args))
        if isinstance(error, ServerUnavailable) and tls is not None:
            line += " (or the TLS handshake failed: check --tls-ca, --tls-cert and --tls-key)"
        out.error(line)
        return exit_code_for(error)
    except KeyboardInterrupt:
        subject = getattr(args, "execution_id", None)
        goes_on = f"; the execution goes on ('taskwire cancel {subject}' stops it)" if subject else ""
        out.error(f"{PROG}: interrupted{goes_on}")
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`taskwire list | head`): stop quietly, as other tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return ExitCode.OK
