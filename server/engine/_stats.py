"""What the engine reports about itself: the queue, each handler's figures, keys and rate limits.

Read off the rooms that keep them (the queue figures of `_live`, the sessions of `_workers`, the
admission queue, the ready queues); nothing here changes anything.

May use: the live executions' figures, worker sessions, the admission queue, the ready queues.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from taskwire.common import ConcurrencyKeyStats, HandlerStats, RateLimitStats, Stats
from taskwire.server.domain import State

from ._admission import AdmissionQueue
from ._live import Figures, LiveExecution
from ._ready import ReadyQueues
from ._sessions import WorkerSession

# How far into a handler's queue `oldest_queued` looks for a task run held in memory.
_AGE_PEEK = 256


def engine_stats(
    figures: Figures,
    connected: list[WorkerSession],
    admission: AdmissionQueue,
    oldest: Mapping[str, datetime],
    *,
    keys: Iterable[ConcurrencyKeyStats],
    rates: Iterable[RateLimitStats],
) -> Stats:
    handlers = set(figures.pending_by_handler) | set(figures.in_flight_by_handler)
    for session in connected:
        handlers |= session.handlers
    per_handler = []
    for handler in sorted(handlers):
        serving = [session for session in connected if handler in session.handlers]
        per_handler.append(
            HandlerStats(
                handler=handler,
                pending=figures.pending_by_handler.get(handler, 0),
                in_flight=figures.in_flight_by_handler.get(handler, 0),
                free_slots=sum(session.free_slots for session in serving),
                workers=len(serving),
                oldest_queued_at=oldest.get(handler),
            )
        )
    return Stats(
        queue=admission.stats(),
        in_flight=sum(figures.in_flight_by_handler.values()),
        connected_workers=len(connected),
        free_slots=sum(session.free_slots for session in connected),
        handlers=tuple(per_handler),
        concurrency_keys=tuple(keys),
        rate_limits=tuple(rates),
    )


def oldest_queued(ready: ReadyQueues, by_task_run: Mapping[str, LiveExecution]) -> dict[str, datetime]:
    """Per handler, when its oldest queued task run held in memory was queued (a cold one, in a queue
    longer than `hot_queue_size`, may be older still). Looks at the front of each queue only."""
    oldest: dict[str, datetime] = {}
    for handler in ready.handlers_with_work():
        for task_run_id in ready.peek(handler, _AGE_PEEK):
            live = by_task_run.get(task_run_id)
            task_run = live.task_runs[task_run_id] if live is not None else None
            if task_run is not None and task_run.state is State.PENDING:
                oldest[handler] = task_run.updated_at  # nothing changes a PENDING task run in the queue
                break
    return oldest
