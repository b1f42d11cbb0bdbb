"""Each execution's history: numbering and recording its events, and watching them (replay, then live).

Every transition, progress report and log line becomes one event with the next
sequence number of its execution (1, 2, 3, ... with no gaps), staged with the
records it describes. Watchers replay what the store holds after their
sequence, then follow the bus, which publishes only what is durable; a gap
(a watcher that fell behind and overflowed) is read back from the store.
Watchers of all executions (`watch_all`) follow the bus only, from the moment
they subscribe; while there is one, each event carries its `EventScope` (the
execution's handlers and its states around the event) for their filters. One
that falls behind is dropped with `WatcherFellBehind`.

Event bodies are bytes the engine never reads: a `HistoryCodec` builds them
(the wire layer's `taskwire.server._history_wire`), injected into the engine
so that no module here imports protobuf. The codec is also what tells whether
a stored event ends a history.

May use: the store (reads), the committer (staging), the bus, the codec.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from taskwire.server.domain import (
    Execution,
    NotFound,
    ShuttingDown,
    State,
    TaskRun,
    ValidationError,
    WatcherFellBehind,
)
from taskwire.server.store import Committer, EventRecord, EventScope, Store

from ._bus import AllSubscription, EventBus, EventFilter, Subscription
from ._sessions import AttemptLog, AttemptProgress

if TYPE_CHECKING:
    from ._live import LiveExecution

# The store's names for the kinds of events.
EXECUTION_TRANSITION = "execution_transition"
TASK_RUN_TRANSITION = "task_run_transition"
PROGRESS = "progress"
LOG = "log"
NOTE = "note"
_REPLAY_PAGE = 1000  # the store's page of events


class HistoryCodec(Protocol):
    """Builds the stored body of each kind of history event, and reads back whether one is terminal."""

    def execution_transition(
        self, execution_id: str, sequence: int, time: datetime, before: Execution | None, after: Execution
    ) -> bytes:
        """`before` None: the execution was just created."""

    def task_run_transition(
        self, execution_id: str, sequence: int, time: datetime, before: TaskRun, after: TaskRun
    ) -> bytes: ...

    def progress(
        self,
        execution_id: str,
        sequence: int,
        time: datetime,
        task_run: TaskRun,
        report: AttemptProgress,
        fraction: float,
    ) -> bytes:
        """`fraction` as the task run keeps it (clamped), rather than as reported."""

    def log(self, execution_id: str, sequence: int, time: datetime, task_run: TaskRun, report: AttemptLog) -> bytes: ...

    def note(self, execution_id: str, sequence: int, time: datetime, task_run: TaskRun, text: str) -> bytes: ...

    def is_terminal(self, event: EventRecord) -> bool:
        """Whether the event takes its execution into a terminal state (the last of its history)."""


def _unwired(execution_id: str) -> bool:
    raise AssertionError("the engine wires this hook before use")


class History:
    def __init__(self, *, store: Store, bus: EventBus, committer: Committer, codec: HistoryCodec) -> None:
        self._store = store
        self._bus = bus
        self._committer = committer
        self._codec = codec
        # Wired by the engine: whether an execution is in memory (it may not be in the store yet).
        self.is_live: Callable[[str], bool] = _unwired

    # ---- Recording ------------------------------------------------------------------------------

    def _next(self, live: LiveExecution) -> int:
        sequence = live.next_sequence
        live.next_sequence = sequence + 1
        return sequence

    def _stage(
        self,
        live: LiveExecution,
        sequence: int,
        time: datetime,
        kind: str,
        body: bytes,
        states: tuple[State, ...] = (),
    ) -> None:
        """`states`: the execution's around the event when it changes them; by default its current one."""
        execution = live.execution
        scope = None
        if self._bus.watching_all:
            handlers = frozenset(task_run.handler for task_run in live.task_runs.values())
            scope = EventScope(handlers, frozenset(states or (execution.state,)))
        self._committer.stage_event(EventRecord(execution.id, sequence, time, kind, body, scope))

    def execution_transition(
        self, live: LiveExecution, time: datetime, before: Execution | None, after: Execution
    ) -> None:
        sequence = self._next(live)
        body = self._codec.execution_transition(after.id, sequence, time, before, after)
        states = (after.state,) if before is None else (before.state, after.state)
        self._stage(live, sequence, time, EXECUTION_TRANSITION, body, states)

    def task_run_transition(self, live: LiveExecution, time: datetime, before: TaskRun, after: TaskRun) -> None:
        sequence = self._next(live)
        body = self._codec.task_run_transition(after.execution_id, sequence, time, before, after)
        self._stage(live, sequence, time, TASK_RUN_TRANSITION, body)

    def progress(
        self, live: LiveExecution, time: datetime, task_run: TaskRun, report: AttemptProgress, fraction: float
    ) -> None:
        sequence = self._next(live)
        body = self._codec.progress(task_run.execution_id, sequence, time, task_run, report, fraction)
        self._stage(live, sequence, time, PROGRESS, body)

    def log(self, live: LiveExecution, time: datetime, task_run: TaskRun, report: AttemptLog) -> None:
        sequence = self._next(live)
        body = self._codec.log(task_run.execution_id, sequence, time, task_run, report)
        self._stage(live, sequence, time, LOG, body)

    def note(self, live: LiveExecution, time: datetime, task_run: TaskRun, text: str) -> None:
        sequence = self._next(live)
        body = self._codec.note(task_run.execution_id, sequence, time, task_run, text)
        self._stage(live, sequence, time, NOTE, body)

    # ---- Watching -------------------------------------------------------------------------------

    async def watch(self, execution_id: str, after_sequence: int) -> AsyncIterator[EventRecord]:
        """Stored events after `after_sequence`, then live ones; ends after the terminal event."""
        if after_sequence < 0:
            raise ValidationError("after_sequence", "must not be negative")
        subscription = self._bus.subscribe(execution_id)
        is_terminal = self._codec.is_terminal
        try:
            if not self.is_live(execution_id) and await self._store.get_execution(execution_id) is None:
                raise NotFound("execution", execution_id)
            last = after_sequence
            complete = False  # the store is known to hold the whole history, terminal event included
            while True:
                # Catch up from the store: the whole history the first time, a gap after an overflow.
                while True:
                    page = await self._store.read_events(execution_id, last)
                    for event in page:
                        yield event
                        last = event.sequence
                        if is_terminal(event):
                            return
                    if len(page) < _REPLAY_PAGE:
                        break
                if complete:
                    return  # nothing is stored after `last`: the watch started past the end
                if not self.is_live(execution_id):
                    snapshot = await self._store.get_execution(execution_id)
                    if snapshot is not None and snapshot.execution.state.is_terminal:
                        # It finished, perhaps while the replay above was reading: read the rest of
                        # its history, terminal event included, rather than end without it.
                        complete = True
                        continue
                subscription.overflowed = False
                while not subscription.overflowed:
                    live_event = await _next_live(subscription)
                    if live_event is None:
                        raise ShuttingDown("the server is shutting down; watch again to resume")
                    if live_event.sequence <= last:
                        if is_terminal(live_event):
                            return  # the watch started past this end: nothing after it will come
                        continue
                    if live_event.sequence > last + 1:
                        break  # a gap: read it from the store
                    yield live_event
                    last = live_event.sequence
                    if is_terminal(live_event):
                        return
                while not subscription.queue.empty():
                    subscription.queue.get_nowait()
        finally:
            self._bus.unsubscribe(subscription)

    async def watch_all(self, event_filter: EventFilter) -> AsyncIterator[EventRecord]:
        """Live events of every execution that `event_filter` matches, from now on; never ends by itself.

        Raises WatcherFellBehind once its buffer overflowed, ShuttingDown at shutdown.
        """
        subscription = self._bus.subscribe_all(event_filter)
        try:
            while True:
                event = await _next_live(subscription)
                if subscription.overflowed:
                    raise WatcherFellBehind(
                        "this watcher fell too far behind the server's events and was dropped; "
                        "watch again and re-read what it shows"
                    )
                if event is None:
                    raise ShuttingDown("the server is shutting down; watch again later")
                yield event
        finally:
            self._bus.unsubscribe_all(subscription)


async def _next_live(subscription: Subscription | AllSubscription) -> EventRecord | None:
    if not subscription.queue.empty():
        return subscription.queue.get_nowait()
    getter = asyncio.ensure_future(subscription.queue.get())
    closer = asyncio.ensure_future(subscription.closed.wait())
    try:
        await asyncio.wait({getter, closer}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        closer.cancel()
        if not getter.done():
            getter.cancel()
    if getter.done() and not getter.cancelled():
        return getter.result()
    return None
