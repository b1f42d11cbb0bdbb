"""Group commit: the engine's writes, staged as it makes them and committed in groups.

The engine stages every change synchronously as it makes it. One commit is in flight at a time;
whatever is staged meanwhile goes into the next one, so under load each commit carries many
changes and the cost of an fsync is shared. When a commit is done, those who waited for it go
first: the committer lets the loop turn twice (the waiters resume, then what they wake runs, such
as a stream writing a submit's answer) before it takes the next group. So answers are not held
behind the next commit's encoding, and what arrives in those turns joins the next group. Only the
latest version of a record staged in one window is written, and a new execution is inserted as
it is when its commit starts. Events reach the event sink only after their commit is durable, so
a watcher never sees anything a restart could take back.

On one server nothing the engine stages can be refused for a reused idempotency key (the engine claims
keys in memory first, and the server owns its database). Replicas share the database: another one may
commit a key first. A new execution refused for its key is let go of (`on_key_taken`: the engine holds
a keyed execution on a replica out of dispatch until its commit, so nothing else of it is staged), and
the rest of the commit is written. Any other refusal, or a commit that fails, is a store that fails:
every waiter gets StoreFailure and the server stops (fail-stop) rather than serve state it cannot
keep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Protocol

from taskwire.server.domain import Execution, Schedule, TaskRun, TaskwireError

from ._protocol import DuplicateIdempotencyKey, EventRecord, NewExecution, Store, StoreFenced, WriteBatch

log = logging.getLogger(__name__)


class StoreFailure(TaskwireError):
    """The store could not commit: the server stops rather than serve state it cannot keep."""

    status_name = "UNAVAILABLE"


class EventSink(Protocol):
    """Where committed events go (the engine's event bus)."""

    def publish(self, events: list[EventRecord]) -> None: ...


class Committer:
    def __init__(
        self,
        *,
        store: Store,
        bus: EventSink,
        on_fatal: Callable[[BaseException], None],
        observed: Callable[[float, int], None] = lambda seconds, records: None,
        on_key_taken: Callable[[str], bool] = lambda execution_id: False,
    ) -> None:
        self._store = store
        # A new execution's key was taken by another replica: whether the engine let go of it (by its id).
        self._on_key_taken = on_key_taken
        self._observed = observed  # each commit: its seconds and records
        self._bus = bus
        self._on_fatal = on_fatal
        self._new: list[NewExecution] = []
        self._executions: dict[str, Execution] = {}
        self._task_runs: dict[str, TaskRun] = {}
        self._events: list[EventRecord] = []
        self._deleted: list[str] = []
        self._schedules: dict[str, Schedule | None] = {}  # by name; None: delete it
        self._new_schedules: set[str] = set()  # of those, the ones created: written even where none is stored
        self._after_commit: list[Callable[[], None]] = []
        # One future per caller of `durable` since the last take: one caller giving up cancels its own only.
        self._waiters: list[asyncio.Future[None]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._holding = 0  # blocks of `after_the_rest` open: staging does not wake the committer
        self._held = False  # something was staged while held
        self.commits = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="taskwire-committer")

    def _nudge(self) -> None:
        if self._holding:
            self._held = True
        else:
            self._wake.set()

    @contextlib.contextmanager
    def after_the_rest(self) -> Iterator[None]:
        """Stage within the block without waking the committer until the block ends, so that what the block
        wakes meanwhile runs first: a cancel goes down its worker's stream before the committer takes (and
        encodes and sends) the commit that records it."""
        self._holding += 1
        try:
            yield
        finally:
            self._holding -= 1
            if not self._holding and self._held:
                self._held = False
                self._wake.set()

    def stage_new(self, new: NewExecution) -> None:
        self._new.append(new)
        self._nudge()

    def stage_execution(self, execution: Execution) -> None:
        self._executions[execution.id] = execution
        self._nudge()

    def stage_task_run(self, task_run: TaskRun) -> None:
        self._task_runs[task_run.id] = task_run
        self._nudge()

    def stage_event(self, event: EventRecord) -> None:
        self._events.append(event)
        self._nudge()

    def stage_delete(self, execution_id: str) -> None:
        """Delete a terminal execution and all it has, after whatever else is staged for it."""
        self._deleted.append(execution_id)
        self._nudge()

    def stage_schedule(self, schedule: Schedule, *, new: bool = False) -> None:
        """Write a schedule (the latest version staged in a window is written): a `new` one is inserted, any
        other only replaces the stored one, so that a schedule another replica deleted meanwhile stays deleted."""
        self._schedules[schedule.name] = schedule
        if new:
            self._new_schedules.add(schedule.name)
        self._nudge()

    def stage_schedule_delete(self, name: str) -> None:
        self._schedules[name] = None
        self._new_schedules.discard(name)
        self._nudge()

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once everything staged so far is durable."""
        self._after_commit.append(callback)
        self._nudge()

    def durable(self) -> asyncio.Future[None]:
        """A future of its caller's own that resolves when everything staged so far is committed. Cancelling
        it (its caller's deadline) leaves the commit and every other caller waiting on it alone."""
        if self._failure is not None:
            raise StoreFailure(f"the store failed: {self._failure}")
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._wake.set()
        return waiter

    def _take(self) -> tuple[WriteBatch, list[Callable[[], None]], list[asyncio.Future[None]]]:
        staged = self._schedules.items()
        batch = WriteBatch(
            new_executions=[self._latest(new) for new in self._new],
            executions=list(self._executions.values()),
            task_runs=list(self._task_runs.values()),
            events=self._events,
            deleted=self._deleted,
            schedules=[schedule for name, schedule in staged if schedule is not None and name in self._new_schedules],
            schedule_updates=[
                schedule for name, schedule in staged if schedule is not None and name not in self._new_schedules
            ],
            deleted_schedules=[name for name, schedule in staged if schedule is None],
        )
        callbacks, waiters = self._after_commit, self._waiters
        self._new, self._executions, self._task_runs, self._events, self._deleted = [], {}, {}, [], []
        self._schedules, self._new_schedules = {}, set()
        self._after_commit, self._waiters = [], []
        return batch, callbacks, waiters

    def _latest(self, new: NewExecution) -> NewExecution:
        """A new execution as of now: versions staged since it was created are inserted in its row, not
        written again as updates (a task that starts and ends before its submit's commit costs one row)."""
        execution = self._executions.pop(new.execution.id, new.execution)
        task_runs = [self._task_runs.pop(task_run.id, task_run) for task_run in new.task_runs]
        return NewExecution(execution, task_runs, new.request_fingerprint)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, callbacks, waiters = self._take()
            try:
                if batch:
                    started = time.perf_counter()
                    [refusal] = await self._store.commit([batch])
                    while isinstance(refusal, DuplicateIdempotencyKey) and self._let_go(batch, refusal.key):
                        [refusal] = await self._store.commit([batch]) if batch else [None]
                    if refusal is not None:
                        raise refusal
                    self.commits += 1
                    self._observed(time.perf_counter() - started, batch.records)
            except Exception as error:
                if not isinstance(error, StoreFenced):  # a fenced server says so in one line, when it stops
                    log.critical("store write failed; stopping: %s", error, exc_info=True)
                self._failure = error
                # The waiters of this group, and of whatever was staged meanwhile (a flush while it was in flight).
                for future in (*waiters, *self._waiters):
                    if not future.done():
                        future.set_exception(StoreFailure(f"the store failed: {error}"))
                        future.exception()  # a waiter that gave up is not warned of: the failure is logged above
                self._waiters = []
                self._on_fatal(error)
                return
            self._bus.publish(batch.events)
            for callback in callbacks:
                callback()
            resumed = False
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
                    resumed = True
            if resumed and self._wake.is_set():
                await _turns(2)

    def _let_go(self, batch: WriteBatch, key: str) -> bool:
        """Take the new execution that carries `key` out of `batch`, with its events, if the engine lets go of it."""
        new = next((new for new in batch.new_executions if new.execution.idempotency_key == key), None)
        if new is None or not self._on_key_taken(new.execution.id):
            return False
        execution_id = new.execution.id
        batch.new_executions.remove(new)
        batch.events[:] = [event for event in batch.events if event.execution_id != execution_id]
        return True

    async def flush(self) -> None:
        """Wait until everything staged so far is durable."""
        if self._task is not None and not self._task.done():
            await self.durable()

    async def close(self) -> None:
        if self._task is None:
            return
        if not self._task.done() and self._failure is None:
            # A commit that fails now has told on_fatal already: closing goes on.
            with contextlib.suppress(StoreFailure):
                await self.flush()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None


async def _turns(count: int) -> None:
    """Let the event loop run what is ready, `count` times over."""
    for _ in range(count):
        await asyncio.sleep(0)
