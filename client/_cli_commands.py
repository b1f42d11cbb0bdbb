"""The commands of `taskwire` that talk to a server: one function each, over the SDK's `Client`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from taskwire.common import (
    ExecutionFilter,
    ExecutionSpec,
    State,
)

from ._cli_base import (
    ExitCode,
    Output,
    UsageError,
    ended_line,
    final_exit,
    read_input,
)
from ._common import unserved_warning
from ._events import WatchEvent
from ._render import (
    event_line,
    execution_detail,
    executions_table,
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

if TYPE_CHECKING:
    from ._live import WatchView


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


def _watch_view(args: argparse.Namespace, out: Output) -> WatchView:
    from ._live import JsonLinesView, LiveView, PlainView  # here: rich's live views load only to follow (startup)

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
        submitted = client.submit_execution(flow_spec(args), wait_for_room=not args.fail_fast)
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
            priority=args.priority,
            concurrency_key=args.concurrency_key,
            concurrency_limit=args.concurrency_limit,
            fairness_key=args.fairness_key,
            rate_limit=args.rate_limit,
            rate_limit_key=args.rate_limit_key,
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


def flow_spec(args: argparse.Namespace) -> ExecutionSpec:
    """The execution of `submit -f FILE` (or `schedule create -f FILE`); a single task's options do not apply."""
    single = (
        "input",
        "timeout",
        "max_attempts",
        "max_infrastructure_retries",
        "schedule_to_start_timeout",
        "priority",
        "concurrency_key",
        "concurrency_limit",
        "fairness_key",
        "rate_limit",
        "rate_limit_key",
    )
    given = [name for name in single if getattr(args, name, None) not in (None, "", 0)]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise UsageError(f"{flags}: set these in the flow file's tasks, not with -f")
    name = args.file
    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise UsageError(f"cannot read the flow file {name!r}: {reason}") from None
    from ._flowfile import FlowFileError, load_flow  # here: YAML loads only for flow files (startup)

    try:
        spec = load_flow(text, "stdin" if name == "-" else name)
    except FlowFileError as error:
        raise UsageError(str(error)) from None
    if args.command == "schedule":  # a schedule's NAME is its own; its fires make their own keys
        name, key = args.execution_name, None
    else:
        name, key = args.name, args.key
    if key or name:
        spec = replace(spec, idempotency_key=key or spec.idempotency_key, name=name or spec.name)
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
    if not args.more_ids:
        return _wait(client, args.execution_id, args, out)
    # Several: each as it ends, one line (people) or one JSON view per line (scripts); the exit code of the
    # worst end (FAILED, then CANCELLED).
    worst = ExitCode.OK
    for done in client.as_completed([args.execution_id, *args.more_ids], args.timeout):
        if args.json:
            out.line(json.dumps(done.to_json(), ensure_ascii=False))
        elif done.state is State.SUCCESS:
            out.line(f"{done.id} SUCCESS {json.dumps(jsonable(done.output), ensure_ascii=False)}")
        else:
            out.line(f"{done.id} {done.state.value}" + (f" ({reason_text(done.reason)})" if done.reason else ""))
        code = final_exit(done.state)
        if worst is ExitCode.OK or code is ExitCode.FAILED:
            worst = code
    return worst


def cmd_watch(client: Client, args: argparse.Namespace, out: Output) -> ExitCode:
    return _follow(client, args.execution_id, args, out)


def cmd_events(client: Client, args: argparse.Namespace, out: Output) -> ExitCode:
    from ._live import JsonLinesView  # here: as in _watch_view (startup)

    as_json = JsonLinesView(out.stdout)
    for event in client.watch_events(handler=args.handler, states=args.states):
        if args.json:
            as_json.show(event)
        else:
            out.line(f"{event.execution_id} {event_line(event)}")
    return ExitCode.OK


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


def cmd_schedule(client: Client, args: argparse.Namespace, out: Output) -> ExitCode:
    from ._cli_schedules import run_schedule

    return run_schedule(client, args, out)


COMMANDS: dict[str, Callable[[Client, argparse.Namespace, Output], ExitCode]] = {
    "submit": cmd_submit,
    "get": cmd_get,
    "list": cmd_list,
    "cancel": cmd_cancel,
    "rerun": cmd_rerun,
    "delete": cmd_delete,
    "wait": cmd_wait,
    "watch": cmd_watch,
    "events": cmd_events,
    "stats": cmd_stats,
    "workers": cmd_workers,
    "schedule": cmd_schedule,
}
