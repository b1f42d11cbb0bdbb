"""The console's fragments: executions, one execution (summary, task runs with their attempt timeline,
log lines), workers and the queue. Each is HTML for a page's first render and for the pushes that
replace it; actions appear only when the viewer's role may take them.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from taskwire.client import ExecutionSnapshot, TaskLog, WorkerInfo
from taskwire.common import Attempt, Stats, TaskRun

from ._html import badge, esc, span, table, when
from ._roles import Action, Viewer

# ---- Executions ---------------------------------------------------------------------------------


def execution_rows(snapshots: Iterable[ExecutionSnapshot]) -> str:
    rows = []
    for snapshot in snapshots:
        execution = snapshot.execution
        handlers = sorted({task_run.handler for task_run in snapshot.task_runs})
        rows.append(
            f'<tr data-id="{esc(execution.id)}"><td><a href="/executions/{esc(execution.id)}">'
            f"{esc(execution.name)}</a></td><td><code>{esc(execution.id)}</code></td>"
            f"<td>{badge(execution.state)}</td><td>{esc(', '.join(handlers))}</td>"
            f"<td>{_fraction_done(snapshot.task_runs)}</td>"
            f"<td>{when(execution.created_at)}</td><td>{when(execution.ended_at)}</td></tr>"
        )
    return table(
        ("Name", "Id", "State", "Handlers", "Progress", "Created", "Ended"),
        rows,
        empty="No executions match.",
        attrs=' class="executions"',
    )


def _fraction_done(task_runs: tuple[TaskRun, ...]) -> str:
    done = sum(1 for task_run in task_runs if task_run.state.is_terminal)
    return f"{done}/{len(task_runs)} tasks"


def summary(snapshot: ExecutionSnapshot, viewer: Viewer) -> str:
    execution = snapshot.execution
    reason = execution.reason
    reason_text = "-"
    if reason is not None:
        reason_text = f"{reason.code.value}: {reason.message}" if reason.message else reason.code.value
    facts = [
        ("State", badge(execution.state)),
        ("Reason", esc(reason_text)),
        ("Created", when(execution.created_at)),
        ("Started", when(execution.started_at)),
        ("Ended", when(execution.ended_at)),
    ]
    if execution.closing is not None:
        facts.append(("Closing", esc(f"{execution.closing.state.value} (stopping its task runs)")))
    items = "".join(f"<dt>{label}</dt><dd>{value}</dd>" for label, value in facts)
    return f'<dl class="facts" data-state="{esc(execution.state.value)}">{items}</dl>{_actions(snapshot, viewer)}'


def _actions(snapshot: ExecutionSnapshot, viewer: Viewer) -> str:
    base = f"/executions/{esc(snapshot.id)}"
    buttons = []
    if not snapshot.is_terminal and viewer.may(Action.CANCEL):
        buttons.append(
            # The live stream redraws the summary: the answer of the POST, older than what the stream may
            # already have pushed (the handler may stop before the answer arrives), is not swapped in.
            f'<button class="danger" name="cancel" hx-post="{base}/cancel" hx-swap="none" '
            'hx-confirm="Cancel this execution? Its running handlers are asked to stop.">Cancel</button>'
        )
    if snapshot.is_terminal and viewer.may(Action.DELETE):
        buttons.append(
            f'<button class="danger" name="delete" hx-post="{base}/delete" '
            'hx-confirm="Delete this execution with its history? This cannot be undone.">Delete</button>'
        )
    return f'<div class="actions">{"".join(buttons)}</div>' if buttons else ""


def task_runs(snapshot: ExecutionSnapshot, now: datetime | None = None) -> str:
    """Each task run with its progress bar and its attempts on one time axis (the execution's life)."""
    now = now or datetime.now(UTC)
    start = snapshot.execution.created_at
    end = snapshot.execution.ended_at or now
    rows = [_task_run_row(task_run, start, end, now) for task_run in snapshot.task_runs]
    return table(
        ("Task", "Handler", "State", "Progress", "Attempts"), rows, empty="No task runs.", attrs=' class="runs"'
    )


def _task_run_row(task_run: TaskRun, start: datetime, end: datetime, now: datetime) -> str:
    progress = task_run.progress
    fraction = progress.fraction if progress else (1.0 if task_run.state.value == "SUCCESS" else 0.0)
    message = esc(progress.message) if progress and progress.message else ""
    bar = (
        f'<progress max="1" value="{fraction:.4f}" data-task="{esc(task_run.task_id)}"></progress>'
        f' <span class="percent">{fraction:.0%}</span> <span class="message">{message}</span>'
    )
    return (
        f'<tr data-task="{esc(task_run.task_id)}"><td>{esc(task_run.task_id)}</td><td>{esc(task_run.handler)}</td>'
        f"<td>{badge(task_run.state)}</td><td>{bar}</td>"
        f"<td>{_timeline(task_run.attempts, start, end, now)}</td></tr>"
    )


def _timeline(attempts: tuple[Attempt, ...], start: datetime, end: datetime, now: datetime) -> str:
    """The attempts as bars on the execution's time axis; hover one for its worker, times and outcome."""
    if not attempts:
        return '<span class="empty">none yet</span>'
    total = max((end - start).total_seconds(), 1e-3)
    bars = []
    for attempt in attempts:
        ended = attempt.ended_at or now
        left = max(0.0, (attempt.started_at - start).total_seconds() / total * 100)
        width = max(0.8, (ended - attempt.started_at).total_seconds() / total * 100)
        outcome = attempt.outcome.value
        error = f" ({attempt.error.type}: {attempt.error.message})" if attempt.error else ""
        took = span(ended - attempt.started_at)
        detail = f"attempt {attempt.number} on {attempt.worker_id}: {outcome}, {took}{error}"
        style = f"left:{left:.2f}%;width:{min(width, 100 - left):.2f}%"
        bars.append(
            f'<span class="attempt outcome-{esc(outcome.lower())}" style="{style}" title="{esc(detail)}">'
            f"{attempt.number}</span>"
        )
    return f'<div class="timeline">{"".join(bars)}</div>'


def log_lines(events: Iterable[TaskLog]) -> str:
    return "".join(
        f'<li class="log-{esc(event.level.value.lower())}"><span class="seq">#{event.sequence}</span> '
        f"{when(event.time)} <b>{esc(event.task_id)}</b> {esc(event.text)}</li>"
        for event in events
    )


# ---- Workers and the queue ----------------------------------------------------------------------


def worker_rows(workers: list[WorkerInfo], running: dict[str, list[tuple[str, str]]], viewer: Viewer) -> str:
    """`running`: per worker name, the (execution id, label) of the attempts running on it."""
    rows = []
    for worker in workers:
        runs = running.get(worker.name, [])
        run_links = ", ".join(
            f'<a href="/executions/{esc(execution_id)}">{esc(label)}</a>' for execution_id, label in runs
        )
        drain = ""
        if worker.draining:
            drain = '<span class="state state-waiting">DRAINING</span>'
        elif viewer.may(Action.DRAIN):
            drain = (
                f'<button class="danger" name="drain" hx-post="/workers/{esc(worker.session_id)}/drain" '
                f'hx-target="#workers" hx-confirm="Drain {esc(worker.name)}? It finishes what it runs and takes '
                'nothing new.">Drain</button>'
            )
        replica = f' <span class="replica">on {esc(worker.replica)}</span>' if worker.replica else ""
        rows.append(
            f'<tr data-worker="{esc(worker.name)}"><td>{esc(worker.name)}</td><td><code>{esc(worker.session_id)}</code>'
            f"{replica}</td><td>{esc(', '.join(worker.handlers))}</td>"
            f'<td><meter min="0" max="{worker.slots}" value="{worker.in_flight}"></meter> '
            f'<span class="slots">{worker.in_flight}/{worker.slots}</span></td>'
            f"<td>{run_links or '-'}</td><td>{when(worker.last_seen_at)}</td><td>{drain}</td></tr>"
        )
    return table(
        ("Name", "Session", "Handlers", "Slots in use", "Running", "Last seen", ""),
        rows,
        empty="No workers connected.",
        attrs=' class="workers"',
    )


def running_by_worker(snapshots: Iterable[ExecutionSnapshot]) -> dict[str, list[tuple[str, str]]]:
    """Per worker name, the attempts of `snapshots` running on it."""
    running: dict[str, list[tuple[str, str]]] = {}
    for snapshot in snapshots:
        for task_run in snapshot.task_runs:
            for attempt in task_run.attempts:
                if attempt.is_running:
                    label = f"{snapshot.name} / {task_run.task_id}"
                    running.setdefault(attempt.worker_id, []).append((snapshot.id, label))
    return running


def queue(stats: Stats, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    q = stats.queue
    head = (
        f'<p class="queue-size">Queued: <b>{q.size}</b> of {q.capacity}'
        f"{' (full)' if q.full else ''} · waiting submitters: {q.waiting_submitters} · running: {stats.in_flight}"
        f" · workers: {stats.connected_workers} · free slots: {stats.free_slots}</p>"
    )
    rows = [
        f'<tr data-handler="{esc(h.handler)}"><td>{esc(h.handler)}</td><td class="backlog">{h.pending}</td>'
        f"<td>{span(now - h.oldest_queued_at) if h.oldest_queued_at else '-'}</td><td>{h.in_flight}</td>"
        f"<td>{h.free_slots}</td><td>{h.workers}</td></tr>"
        for h in stats.handlers
    ]
    return head + table(
        ("Handler", "Backlog", "Oldest waits", "Running", "Free slots", "Workers"),
        rows,
        empty="No handler has work or a worker.",
        attrs=' class="queue"',
    )
