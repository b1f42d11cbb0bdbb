"""`taskwire`: the command line over the SDK.

Every command talks to one server (`--server`, `TASKWIRE_SERVER`, default
127.0.0.1:50051). Read commands print rich tables for people and, with `--json`,
the stable JSON views for scripts. Errors are one line on stderr and an exit code
from `ExitCode`; never a traceback for a user mistake or an unreachable server.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate

from taskwire.common import (
    State,
    TaskwireError,
    positive_int,
)
from taskwire.common.bearer import TOKEN_ENV
from taskwire.common.tls import TlsConfigError, TlsFiles, add_tls_arguments, tls_from_args

from ._cli_base import (
    EXIT_CODES_HELP,
    PROG,
    SERVER_ENV,
    ExitCode,
    Output,
    UsageError,
    _label,
    _seconds,
    _state,
    _time,
    _wait_seconds,
    bearer_token,
    error_line,
    exit_code_for,
    final_exit,
    read_input,
    server_address,
)
from ._cli_commands import COMMANDS
from ._common import DEFAULT_ADDRESS
from ._errors import ServerUnavailable
from ._sync import Client
from ._tokens_cmd import add_tokens_command, cmd_tokens


def _add_filter(parser: argparse.ArgumentParser, action: str) -> None:
    """The options that select many executions for a bulk cancel or delete."""
    group = parser.add_argument_group(f"{action} every execution that matches (instead of one ID)")
    group.add_argument("--state", dest="states", metavar="S", type=_state, action="append", default=[])
    group.add_argument("--handler", metavar="H", default="", help="with a task run for this handler")
    group.add_argument("--label", dest="labels", metavar="K=V", type=_label, action="append", default=[])
    group.add_argument("--created-after", metavar="TIME", type=_time, help="created at or after (ISO 8601)")
    group.add_argument("--created-before", metavar="TIME", type=_time, help="created before (ISO 8601)")
    group.add_argument("--dry-run", action="store_true", help="count the matches; change nothing")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.USAGE, f"{PROG}: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--server",
        metavar="HOST:PORT[,HOST:PORT...]",
        default=argparse.SUPPRESS,
        help=f"the taskwire server; several (IP addresses, comma-separated: an active server and its standbys) are "
        f"tried in order, an unreachable one skipped (default: ${SERVER_ENV} or {DEFAULT_ADDRESS})",
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
        "--priority",
        metavar="N",
        type=int,
        help="1 (lowest) to 9 (highest), default 5: a higher priority is dispatched first",
    )
    submit.add_argument(
        "--concurrency-key",
        metavar="K",
        default="",
        help="a key shared by tasks that must not run too many at once (needs --concurrency-limit)",
    )
    submit.add_argument(
        "--concurrency-limit",
        metavar="N",
        type=int,
        default=0,
        help="with --concurrency-key: at most N attempts of the key run at once; the rest wait",
    )
    submit.add_argument(
        "--fairness-key",
        metavar="K",
        default="",
        help="the tenant the task runs for: within a priority, tenants take turns in the handler's queue",
    )
    submit.add_argument(
        "--rate-limit",
        metavar="NAME",
        default="",
        help="a rate limit the server defines (taskwire-server --rate-limit): each dispatch takes one of its tokens",
    )
    submit.add_argument(
        "--rate-limit-key",
        metavar="K",
        default="",
        help="with --rate-limit: draw from a bucket of that limit of its own for K (e.g. per customer)",
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

    wait = command("wait", "wait for executions to end and print their results", as_json)
    wait.add_argument("execution_id", metavar="ID")
    wait.add_argument("more_ids", metavar="ID", nargs="*", help="more executions: each is printed as it ends")
    wait.add_argument("--timeout", metavar="S", type=_wait_seconds, help="give up after S seconds (exit code 6)")

    watch = command("watch", "follow an execution live until it ends", as_json)
    watch.add_argument("execution_id", metavar="ID")
    watch.add_argument("--timeout", metavar="S", type=_wait_seconds, help="give up after S seconds (exit code 6)")

    events = command("events", "follow the events of all executions live, from now on (Ctrl-C stops)", as_json)
    events.add_argument("--handler", metavar="H", default="", help="only executions with a task run of this handler")
    events.add_argument(
        "--state",
        dest="states",
        metavar="S",
        type=_state,
        action="append",
        default=[],
        help="only events where the execution's state before or after is this one (repeatable)",
    )

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

    console = commands.add_parser(
        "console",
        help="serve the web console (a client of --server) over HTTP until interrupted",
        description="Serve the web console: executions, workers and the queue, live, with the actions the "
        "server's role for these credentials allows. It is a client of --server, with the TLS options given.",
        parents=[common],
    )
    console.add_argument("--listen", metavar="HOST:PORT", default="127.0.0.1:8080", help="default: 127.0.0.1:8080")
    console.add_argument(
        "--view-as",
        metavar="ROLE",
        choices=("reader", "submitter", "worker", "admin"),
        help="show only what ROLE may do (within what the server's role allows): reader, submitter, worker, admin",
    )
    console.add_argument(
        "--allowed-host",
        metavar="NAME",
        action="append",
        default=[],
        help="a host name the console answers to (repeatable); IP addresses, localhost and the --listen host always",
    )

    # Imported here: the schedule commands take names from this module.
    from ._cli_schedules import add_schedule_commands

    schedule = command("schedule", "create, list, pause, resume, trigger or delete schedules (cron)", as_json)
    add_schedule_commands(schedule, [common, also_json])

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


def cmd_console(
    args: argparse.Namespace,
    credentials: grpc.ChannelCredentials | None,
    options: Sequence[Any],
    token: str | None,
    out: Output,
) -> int:
    # Imported here: the other commands do not load aiohttp.
    import asyncio

    from taskwire.console import ListenError, serve

    try:
        asyncio.run(
            serve(
                server=server_address(args),
                listen=args.listen,
                credentials=credentials,
                options=options,
                token=token,
                view_as=args.view_as,
                allowed_hosts=args.allowed_host,
                out=out.stdout,
            )
        )
    except ListenError as error:
        raise UsageError(str(error)) from None
    return ExitCode.OK


def action_of(args: argparse.Namespace) -> str:
    """What the user asked for, as the error line names it: `get 01J...`, `submit echo`."""
    if getattr(args, "workers_action", None) == "drain":
        return f"workers drain {args.worker}"
    if args.command == "schedule":
        return f"schedule {args.schedule_action} {getattr(args, 'name', '')}".strip()
    subject = getattr(args, "execution_id", None) or getattr(args, "handler", None) or ""
    if more := getattr(args, "more_ids", None):
        subject += f" (and {len(more)} more)"
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


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """The arguments, with an optional HANDLER (`submit`, `schedule create`) also accepted after the options:
    argparse takes an optional positional only where it first looks for one."""
    args, extra = parser.parse_known_args(argv)
    if len(extra) == 1 and not extra[0].startswith("-") and getattr(args, "handler", "") is None:
        args.handler = extra[0]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _client(args: argparse.Namespace, credentials: grpc.ChannelCredentials | None, options: Sequence[Any]) -> Client:
    """The command's client of --server; what the SDK refuses to build one with is the user's to fix."""
    try:
        return Client(server_address(args), credentials=credentials, options=options, token=bearer_token(args))
    except (TypeError, ValueError) as error:
        raise UsageError(str(error)) from None


def main(argv: Sequence[str] | None = None, *, stdout: IO[str] | None = None, stderr: IO[str] | None = None) -> int:
    """Run one command; returns its exit code (the console script exits with it)."""
    out = Output(stdout or sys.stdout, stderr or sys.stderr)
    args = _parse(build_parser(), argv)
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
        if args.command == "console":
            return cmd_console(args, credentials, options, bearer_token(args), out)
        with _client(args, credentials, options) as client, _parent_trace():
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


# What the rest of the package and its tests take from here (the parts live in _cli_base and _cli_commands).
__all__ = [
    "EXIT_CODES_HELP",
    "ExitCode",
    "Output",
    "UsageError",
    "action_of",
    "build_parser",
    "error_line",
    "exit_code_for",
    "final_exit",
    "main",
    "read_input",
    "server_address",
]
