"""`taskwire schedule create|list|get|pause|resume|delete|trigger`: schedules on the command line.

`create` builds a one-task execution spec as `submit` does; the others name the schedule. Tables for people,
the `ScheduleInfo` JSON view with `--json`.
"""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from rich.table import Table

from taskwire.common import DEFAULT_CATCH_UP_WINDOW, OverlapPolicy, ScheduleSpec, iso, non_negative_int

from ._common import parse_seconds
from ._schedules import ScheduleInfo
from ._sync import Client

if TYPE_CHECKING:
    from ._cli import _Parser
    from ._cli_base import ExitCode, Output

OVERLAP_CHOICES = [policy.value.lower().replace("_", "-") for policy in OverlapPolicy]


def duration(text: str) -> timedelta:
    """A duration typed on the command line: `90`, `90s`, `1.5m`, `2h`, `1d`, `500ms`."""
    seconds = parse_seconds(text)
    if seconds is None:
        raise argparse.ArgumentTypeError(f"expected a duration such as 60s, 5m or 1h, got {text!r}")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise argparse.ArgumentTypeError(f"{text!r} is too long") from None


def add_schedule_commands(schedule: argparse.ArgumentParser, parents: list[_Parser]) -> None:
    """The actions of `taskwire schedule`; `parents` are the options every action takes (server, TLS, --json)."""
    from ._cli import _Parser
    from ._cli_base import _seconds

    actions = schedule.add_subparsers(dest="schedule_action", metavar="ACTION", parser_class=_Parser)
    actions.required = True

    def action(name: str, help: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(name, help=help, description=help, parents=parents)
        return parser

    create = action("create", "create a schedule that submits one task at each time a cron expression names")
    create.add_argument("name", metavar="NAME", help="the schedule's name: 1-128 characters of [A-Za-z0-9_.-]")
    create.add_argument("handler", metavar="HANDLER", nargs="?", help="the handler each execution runs")
    create.add_argument(
        "-f",
        "--file",
        metavar="FILE",
        help="each fire submits the execution this YAML or JSON flow file describes (see submit -f)",
    )
    create.add_argument(
        "--cron",
        required=True,
        metavar="EXPR",
        help="five fields (minute hour day month weekday), or six with seconds first: '*/5 * * * *'",
    )
    create.add_argument("--timezone", metavar="TZ", default="UTC", help="IANA time zone of the cron (default: UTC)")
    create.add_argument(
        "--input", metavar="JSON|@FILE", help="the handler's input: JSON text, @path to a JSON file, or @- for stdin"
    )
    create.add_argument(
        "--catch-up",
        metavar="DURATION",
        type=duration,
        default=DEFAULT_CATCH_UP_WINDOW,
        help="fires missed while the server was down are made up when at most this old (default: 60s)",
    )
    create.add_argument(
        "--overlap",
        choices=OVERLAP_CHOICES,
        default="skip",
        help="what a fire does while an earlier execution still runs (default: skip)",
    )
    create.add_argument("--paused", action="store_true", help="create it paused ('taskwire schedule resume' starts it)")
    create.add_argument("--timeout", metavar="S", type=_seconds, help="limit of each attempt, in seconds")
    create.add_argument("--max-attempts", metavar="N", type=int, help="attempts in all, the first included")
    create.add_argument(
        "--max-infrastructure-retries",
        metavar="N",
        type=int,
        help="retries after failures that are not the handler's fault (worker lost or shut down; default 3)",
    )
    create.add_argument(
        "--schedule-to-start-timeout",
        metavar="S",
        type=_seconds,
        help="fail a task that no worker starts within S seconds of being queued",
    )
    create.add_argument("--execution-name", metavar="N", help="a label for the executions (default: the handler)")

    action("list", "list schedules with their next fire time and counts")
    get = action("get", "show one schedule with its next fire times")
    get.add_argument("name", metavar="NAME")
    get.add_argument(
        "--next", metavar="N", type=non_negative_int, default=5, help="how many next fire times (default: 5)"
    )
    for name, help in (
        ("pause", "pause a schedule: it starts nothing until resumed"),
        ("resume", "resume a schedule from now on (the fires while paused are not made up)"),
        ("delete", "delete a schedule (the executions it started go on)"),
        ("trigger", "start one execution of a schedule now; prints its id"),
    ):
        action(name, help).add_argument("name", metavar="NAME")


def run_schedule(client: Client, args: argparse.Namespace, out: Output) -> ExitCode:
    from ._cli_base import ExitCode, UsageError, read_input
    from ._cli_commands import flow_spec

    verb = args.schedule_action
    if verb == "create" and args.file is not None:
        if args.handler is not None:
            raise UsageError("schedule create takes a HANDLER or -f FILE, not both")
        spec = ScheduleSpec(
            name=args.name,
            cron=args.cron,
            execution=flow_spec(args),
            timezone=args.timezone,
            catch_up_window=args.catch_up,
            overlap=OverlapPolicy(args.overlap.upper().replace("-", "_")),
            paused=args.paused,
        )
        info = client.create_schedule_spec(spec)
        _show(out, info, args, f"schedule {info.name} created")
    elif verb == "create":
        if args.handler is None:
            raise UsageError("schedule create takes a HANDLER or -f FILE")
        value = read_input(args.input) if args.input is not None else None
        info = client.create_schedule(
            args.name,
            args.cron,
            args.handler,
            value,
            timezone=args.timezone,
            catch_up_window=args.catch_up,
            overlap=args.overlap.upper().replace("-", "_"),
            paused=args.paused,
            timeout=args.timeout,
            max_attempts=args.max_attempts,
            max_infrastructure_retries=args.max_infrastructure_retries,
            schedule_to_start_timeout=args.schedule_to_start_timeout,
            execution_name=args.execution_name,
        )
        _show(out, info, args, f"schedule {info.name} created")
    elif verb == "list":
        schedules = client.schedules()
        if args.json:
            out.json([info.to_json() for info in schedules])
        elif schedules:
            out.console.print(schedules_table(schedules))
        else:
            out.error("no schedules")
    elif verb == "get":
        _show(out, client.get_schedule(args.name, next_fire_times=args.next), args)
    elif verb == "pause":
        _show(out, client.pause_schedule(args.name), args, f"schedule {args.name} paused")
    elif verb == "resume":
        _show(out, client.resume_schedule(args.name), args, f"schedule {args.name} resumed")
    elif verb == "delete":
        client.delete_schedule(args.name)
        if args.json:
            out.json({"name": args.name, "deleted": True})
        else:
            out.line(f"schedule {args.name} deleted")
    else:  # trigger
        execution_id = client.trigger_schedule(args.name)
        if args.json:
            out.json({"name": args.name, "execution_id": execution_id})
        else:
            out.line(execution_id)
    return ExitCode.OK


def _show(out: Output, info: ScheduleInfo, args: argparse.Namespace, said: str = "") -> None:
    if args.json:
        out.json(info.to_json())
        return
    if said:
        out.error(said)
    out.console.print(schedule_detail(info))


def _when(value: datetime | None) -> str:
    return iso(value) or "-"


def schedules_table(schedules: list[ScheduleInfo]) -> Table:
    table = Table(box=None, pad_edge=False)
    for column in (
        "NAME",
        "CRON",
        "TIMEZONE",
        "HANDLER",
        "OVERLAP",
        "STATE",
        "NEXT FIRE",
        "FIRED",
        "MISSED",
        "SKIPPED",
    ):
        table.add_column(column, no_wrap=True)
    for info in schedules:
        table.add_row(
            info.name,
            info.cron,
            info.timezone,
            ", ".join(info.handlers),
            info.overlap.value,
            "PAUSED" if info.paused else "ACTIVE",
            _when(info.next_fire_times[0] if info.next_fire_times else None),
            str(info.fired),
            str(info.missed),
            str(info.skipped),
        )
    return table


def schedule_detail(info: ScheduleInfo) -> Table:
    table = Table(box=None, pad_edge=False, show_header=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    rows: list[tuple[str, Any]] = [
        ("name", info.name),
        ("cron", f"{info.cron} ({info.timezone})"),
        ("handler", ", ".join(info.handlers)),
        ("state", "PAUSED" if info.paused else "ACTIVE"),
        ("overlap", info.overlap.value),
        ("catch-up window", f"{info.catch_up_window.total_seconds():g}s"),
        ("next fire times", "\n".join(_when(t) for t in info.next_fire_times) or "-"),
        ("fired / missed / skipped", f"{info.fired} / {info.missed} / {info.skipped}"),
        ("running", ", ".join(info.running_execution_ids) or "-"),
        ("buffered fire", _when(info.buffered_fire_time)),
        ("last fire", f"{_when(info.last_fire_time)} {info.last_execution_id}".strip()),
        ("created", _when(info.created_at)),
    ]
    for label, value in rows:
        table.add_row(label, str(value))
    return table
