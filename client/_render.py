"""How the CLI shows things: rich tables for people, documented JSON objects for scripts, plain event lines.

Executions use the stable JSON view of `taskwire.common.execution_view`; stats,
workers and lists use the objects below (documented in docs/cli.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from taskwire.common import JSON_VIEW_VERSION, AttemptOutcome, Payload, Reason, State, Stats, TaskRun, iso, payload_view

from ._events import ExecutionTransition, TaskLog, TaskNote, TaskProgress, TaskRunTransition, WatchEvent
from ._models import ExecutionSnapshot, WorkerInfo, task_run_output

STATE_STYLES = {
    State.PENDING: "cyan",
    State.WAITING: "cyan",
    State.RUNNING: "yellow",
    State.SUCCESS: "green",
    State.FAILED: "red",
    State.CANCELLED: "magenta",
}

# ---- Plain values -------------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """A decoded output made printable as JSON (a non-JSON payload as {content_type, base64})."""
    if isinstance(value, Payload):
        return payload_view(value)
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    return value


def dumps(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def short_time(value: datetime | None) -> str:
    """UTC, to the second: `2026-01-31 12:00:05Z`; `-` when unset."""
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def short_duration(value: timedelta | None) -> str:
    if value is None:
        return "-"
    total = value.total_seconds()
    if total < 60:
        return f"{total:.2f}s" if total < 10 else f"{total:.1f}s"
    minutes, secs = divmod(int(total), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def reason_text(reason: Reason | None, *, with_message: bool = True) -> str:
    if reason is None:
        return "-"
    return f"{reason.code.value}: {reason.message}" if with_message and reason.message else reason.code.value


def state_text(state: State) -> Text:
    return Text(state.value, style=STATE_STYLES.get(state, ""))


def compact_json(value: Any, limit: int = 60) -> str:
    text = json.dumps(jsonable(value), ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---- JSON objects for scripts -------------------------------------------------------------------


def list_view(snapshots: Iterable[ExecutionSnapshot]) -> dict[str, Any]:
    """`taskwire list --json`: {"version", "executions": [execution view, ...]}, newest first."""
    return {"version": JSON_VIEW_VERSION, "executions": [snapshot.to_json() for snapshot in snapshots]}


def stats_view(stats: Stats) -> dict[str, Any]:
    """`taskwire stats --json`."""
    queue = stats.queue
    return {
        "version": JSON_VIEW_VERSION,
        "queue": {
            "size": queue.size,
            "capacity": queue.capacity,
            "full": queue.full,
            "empty": queue.empty,
            "waiting_submitters": queue.waiting_submitters,
        },
        "in_flight": stats.in_flight,
        "connected_workers": stats.connected_workers,
        "free_slots": stats.free_slots,
        "handlers": [
            {
                "handler": h.handler,
                "pending": h.pending,
                "in_flight": h.in_flight,
                "free_slots": h.free_slots,
                "workers": h.workers,
            }
            for h in stats.handlers
        ],
        "concurrency_keys": [
            {"key": k.key, "limit": k.limit, "running": k.running, "queued": k.queued, "waiting": k.waiting}
            for k in stats.concurrency_keys
        ],
        "rate_limits": [
            {
                "name": r.name,
                "rate_per_s": r.rate_per_s,
                "burst": r.burst,
                "tokens": r.tokens,
                "reserved": r.reserved,
                "waiting": r.waiting,
            }
            for r in stats.rate_limits
        ],
    }


def worker_view(worker: WorkerInfo) -> dict[str, Any]:
    return {
        "session_id": worker.session_id,
        "instance_id": worker.instance_id,
        "name": worker.name,
        "handlers": list(worker.handlers),
        "slots": worker.slots,
        "in_flight": worker.in_flight,
        "labels": dict(worker.labels),
        "agent_version": worker.agent_version,
        "connected_at": iso(worker.connected_at),
        "last_seen_at": iso(worker.last_seen_at),
        "draining": worker.draining,
        "lease_timeout_s": worker.lease_timeout.total_seconds() if worker.lease_timeout is not None else None,
        "replica": worker.replica,
    }


def workers_view(workers: Sequence[WorkerInfo]) -> dict[str, Any]:
    """`taskwire workers --json`: {"version", "workers": [worker, ...]}."""
    return {"version": JSON_VIEW_VERSION, "workers": [worker_view(worker) for worker in workers]}


# ---- Tables for people --------------------------------------------------------------------------


def _table(*columns: str, title: str | None = None) -> Table:
    table = Table(box=box.SIMPLE_HEAD, title=title, title_justify="left", pad_edge=False, show_edge=False)
    for column in columns:
        table.add_column(column, no_wrap=column in ("ID", "TASK RUN", "SESSION"), overflow="fold")
    return table


def _task_outcome(run: TaskRun) -> str:
    attempt = run.current_attempt
    if run.state is State.SUCCESS:
        return compact_json(task_run_output(run))
    if attempt is not None and attempt.error is not None:
        return f"{attempt.error.type}: {attempt.error.message}"
    if run.progress is not None:
        return f"{run.progress.fraction:.0%} {run.progress.message}".strip()
    return ""


def execution_detail(snapshot: ExecutionSnapshot) -> RenderableType:
    """`taskwire get`: the execution's fields, then one row per task run."""
    execution = snapshot.execution
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold")
    fields.add_column()
    fields.add_row("Execution", execution.id)
    fields.add_row("Name", execution.name)
    state = state_text(execution.state)
    if execution.reason is not None:
        state.append(f"  {reason_text(execution.reason)}")
    fields.add_row("State", state)
    if execution.closing is not None:
        fields.add_row("Closing", f"{execution.closing.state.value} ({reason_text(execution.closing.reason)})")
    if execution.idempotency_key:
        fields.add_row("Key", execution.idempotency_key)
    if execution.metadata:
        fields.add_row("Metadata", ", ".join(f"{k}={v}" for k, v in sorted(execution.metadata.items())))
    fields.add_row("Created", short_time(execution.created_at))
    if execution.not_before is not None:
        fields.add_row("Not before", short_time(execution.not_before))
    if execution.deadline is not None:
        fields.add_row("Deadline", short_time(execution.deadline))
    fields.add_row("Started", short_time(execution.started_at))
    fields.add_row("Ended", short_time(execution.ended_at))
    if execution.started_at is not None and execution.ended_at is not None:
        fields.add_row("Duration", short_duration(execution.ended_at - execution.started_at))

    runs = _table("TASK", "HANDLER", "PRIORITY", "STATE", "REASON", "ATTEMPTS", "WORKER", "RESULT")
    for run in snapshot.task_runs:
        attempt = run.current_attempt
        runs.add_row(
            run.task_id,
            run.handler,
            str(run.priority),
            state_text(run.state),
            reason_text(run.reason),
            str(run.attempt_count),
            attempt.worker_id if attempt else "-",
            _task_outcome(run),
        )
    if any(run.depends_on for run in snapshot.task_runs):
        return Group(fields, Text(""), runs, Text(""), task_tree(snapshot))
    return Group(fields, Text(""), runs)


def task_tree(snapshot: ExecutionSnapshot) -> Tree:
    """The tasks as a tree of dependencies, each with its state: a task under each task it depends on
    (shown whole under the first, named again under the others)."""
    runs = {run.task_id: run for run in snapshot.task_runs}
    dependents: dict[str, list[str]] = {task_id: [] for task_id in runs}
    for run in snapshot.task_runs:
        for upstream in run.depends_on:
            dependents.setdefault(upstream, []).append(run.task_id)
    tree = Tree(Text(f"{snapshot.execution.name or snapshot.id}", style="bold"))
    shown: set[str] = set()

    def add(parent: Tree, task_id: str) -> None:
        run = runs[task_id]
        label = Text(f"{task_id} ")
        label.append_text(state_text(run.state))
        if task_id in shown:
            parent.add(label.append("  (above)", style="dim"))
            return
        shown.add(task_id)
        branch = parent.add(label)
        for child in dependents.get(task_id, []):
            add(branch, child)

    for run in snapshot.task_runs:
        if not run.depends_on:
            add(tree, run.task_id)
    return tree


def executions_table(snapshots: Iterable[ExecutionSnapshot]) -> Table:
    """`taskwire list`."""
    table = _table("ID", "NAME", "STATE", "REASON", "TASKS", "CREATED", "ENDED")
    for snapshot in snapshots:
        execution = snapshot.execution
        table.add_row(
            execution.id,
            execution.name,
            state_text(execution.state),
            reason_text(execution.reason, with_message=False),
            str(len(snapshot.task_runs)),
            short_time(execution.created_at),
            short_time(execution.ended_at),
        )
    return table


def stats_detail(stats: Stats) -> RenderableType:
    """`taskwire stats`."""
    queue = stats.queue
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold")
    fields.add_column()
    flag = " (full)" if queue.full else (" (empty)" if queue.empty else "")
    fields.add_row("Queue", f"{queue.size} of {queue.capacity}{flag}")
    fields.add_row("Waiting submitters", str(queue.waiting_submitters))
    fields.add_row("In flight", str(stats.in_flight))
    fields.add_row("Workers", f"{stats.connected_workers} connected, {stats.free_slots} free slots")
    handlers = _table("HANDLER", "PENDING", "IN FLIGHT", "FREE SLOTS", "WORKERS")
    for h in stats.handlers:
        handlers.add_row(h.handler, str(h.pending), str(h.in_flight), str(h.free_slots), str(h.workers))
    parts: list[RenderableType] = [fields]
    if stats.handlers:
        parts += [Text(""), handlers]
    if stats.concurrency_keys:
        keys = _table("CONCURRENCY KEY", "LIMIT", "RUNNING", "QUEUED", "WAITING")
        for k in stats.concurrency_keys:
            keys.add_row(k.key, str(k.limit), str(k.running), str(k.queued), str(k.waiting))
        parts += [Text(""), keys]
    if stats.rate_limits:
        rates = _table("RATE LIMIT", "PER SECOND", "BURST", "TOKENS", "GRANTED", "WAITING")
        for r in stats.rate_limits:
            rates.add_row(r.name, f"{r.rate_per_s:g}", str(r.burst), str(r.tokens), str(r.reserved), str(r.waiting))
        parts += [Text(""), rates]
    return Group(*parts)


def workers_table(workers: Sequence[WorkerInfo]) -> Table:
    """`taskwire workers`; with a REPLICA column when the server is a replica."""
    replicas = any(worker.replica for worker in workers)
    columns = ["NAME", "SESSION", "HANDLERS", "SLOTS", "IN FLIGHT", "STATUS", "CONNECTED", "LAST SEEN"]
    table = _table(*columns, *(["REPLICA"] if replicas else []))
    for worker in workers:
        table.add_row(
            worker.name,
            worker.session_id,
            ", ".join(worker.handlers),
            str(worker.slots),
            str(worker.in_flight),
            "draining" if worker.draining else "ready",
            short_time(worker.connected_at),
            short_time(worker.last_seen_at),
            *([worker.replica] if replicas else []),
        )
    return table


# ---- Watch events as lines ----------------------------------------------------------------------


def event_line(event: WatchEvent) -> str:
    """One plain line per event (what `taskwire watch` prints when stdout is not a terminal)."""
    head = f"#{event.sequence} {short_time(event.time)}"
    if isinstance(event, ExecutionTransition):
        reason = f" {reason_text(event.reason)}" if event.reason else ""
        return f"{head} execution {event.to_state.value}{reason}"
    if isinstance(event, TaskRunTransition):
        text = f"{head} task {event.task_id} {event.to_state.value}"
        if event.reason:
            text += f" {reason_text(event.reason)}"
        if event.attempt and event.to_state is State.RUNNING:
            text += f" (attempt {event.attempt}" + (f" on {event.worker_id})" if event.worker_id else ")")
        elif event.attempt_outcome is not None and event.attempt_outcome is not AttemptOutcome.RUNNING:
            text += f" (attempt {event.attempt} {event.attempt_outcome.value}"
            text += f": {event.error.type}: {event.error.message})" if event.error else ")"
        return text
    if isinstance(event, TaskProgress):
        message = f" {event.message}" if event.message else ""
        return f"{head} task {event.task_id} progress {event.fraction:.0%}{message}"
    if isinstance(event, TaskLog):
        return f"{head} task {event.task_id} log {event.level.value} {event.text}"
    if isinstance(event, TaskNote):
        return f"{head} task {event.task_id} note: {event.text}"
    kind = f" ({event.kind})" if event.kind else ""
    return f"{head} an event of a kind this version does not know{kind}"


def final_line(snapshot_id: str, state: State, reason: Reason | None) -> str:
    return f"execution {snapshot_id} {state.value}" + (f" ({reason_text(reason)})" if reason else "")
