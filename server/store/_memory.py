"""`MemoryStore`: the `Store` in a few dicts, for tests that need a store but not a disk.

It keeps the semantics of `SqliteStore`, and the behaviour suite in `tests/unit/store/` holds both to
them: a batch is applied whole or not at all (a refused batch fails alone; the others of its group
commit), idempotency keys are unique, executions list newest first with the same page tokens, events
read back in sequence order, and `recover()` sorts executions into active and cold alike. Records are
immutable, so it keeps the very objects it is given. Nothing survives the process.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from types import TracebackType

from taskwire.server.domain import DEFAULT_PRIORITY, Execution, Schedule, State, TaskRun

from ._json import datetime_to_db, timedelta_to_db
from ._paging import check_page_size, decode_page_token, encode_page_token
from ._protocol import (
    ColdTaskRun,
    DuplicateIdempotencyKey,
    EventRecord,
    ExecutionPage,
    ExecutionSnapshot,
    IdempotencyHit,
    RecoveredState,
    StoreClosed,
    StoreError,
    WriteBatch,
)

__all__ = ["MemoryStore"]


@dataclasses.dataclass(slots=True)
class _StoredExecution:
    seq: int  # insertion number: the newest-first paging key
    execution: Execution
    request_fingerprint: str
    task_run_ids: list[str]  # in submission order


class MemoryStore:
    """The `Store` in memory. Create it, `await open()` (or `async with`), `await close()`."""

    def __init__(self) -> None:
        self._state = "new"  # new → open → closed
        self._executions: dict[str, _StoredExecution] = {}
        self._task_runs: dict[str, tuple[int, TaskRun]] = {}  # id -> (insertion number, latest version)
        self._keys: dict[str, str] = {}  # idempotency key -> execution id
        self._events: dict[str, dict[int, EventRecord]] = {}
        self._schedules: dict[str, Schedule] = {}
        self._seq = 0
        self._task_run_seq = 0

    # ---- lifecycle

    async def open(self) -> None:
        if self._state == "closed":
            raise StoreClosed("the store is closed; make a new MemoryStore to open one again")
        self._state = "open"

    async def close(self) -> None:
        self._state = "closed"

    async def __aenter__(self) -> MemoryStore:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()

    def _check_open(self, what: str) -> None:
        if self._state != "open":
            state = "closed" if self._state == "closed" else "not open yet (await open() first)"
            raise StoreClosed(f"cannot {what}: the store is {state}")

    # ---- writes

    async def commit(self, batches: Sequence[WriteBatch]) -> list[Exception | None]:
        """Apply each batch whole, in order, or refuse it alone (see `Store.commit`)."""
        self._check_open("write")
        outcomes: list[Exception | None] = []
        for batch in batches:
            try:
                _check_storable(batch)
                self._check(batch)
            except (StoreError, ValueError) as refusal:
                outcomes.append(refusal)
            else:
                self._apply(batch)
                outcomes.append(None)
        return outcomes

    def _check(self, batch: WriteBatch) -> None:
        """Raise what SQLite would refuse the batch for, before anything of it is applied."""
        new_ids: set[str] = set()
        new_task_runs: dict[str, str] = {}  # id -> execution id
        keys: set[str] = set()
        for new in batch.new_executions:
            execution = new.execution
            key = execution.idempotency_key
            if key and (key in self._keys or key in keys):
                raise DuplicateIdempotencyKey(key)
            keys.add(key)
            if execution.id in self._executions or execution.id in new_ids:
                raise _refused(f"UNIQUE constraint failed: executions.id ({execution.id})")
            new_ids.add(execution.id)
            for task_run in new.task_runs:
                if task_run.execution_id != execution.id:
                    raise ValueError(f"task run {task_run.id} belongs to {task_run.execution_id}, not {execution.id}")
                if task_run.id in self._task_runs or task_run.id in new_task_runs:
                    raise _refused(f"UNIQUE constraint failed: task_runs.id ({task_run.id})")
                new_task_runs[task_run.id] = execution.id
        missing = [e.id for e in batch.executions if e.id not in self._executions and e.id not in new_ids]
        if missing:
            raise StoreError(f"cannot update executions that do not exist: {', '.join(missing)}")
        missing = [
            f"{t.id} of {t.execution_id}"
            for t in batch.task_runs
            if t.execution_id != new_task_runs.get(t.id, self._execution_of(t.id))
        ]
        if missing:
            raise StoreError(f"cannot update task runs that do not exist: {', '.join(missing)}")
        sequences: set[tuple[str, int]] = set()
        for event in batch.events:
            if event.execution_id not in self._executions and event.execution_id not in new_ids:
                raise _refused(f"FOREIGN KEY constraint failed: no execution {event.execution_id} for its event")
            place = (event.execution_id, event.sequence)
            if place in sequences or event.sequence in self._events.get(event.execution_id, {}):
                raise _refused(f"UNIQUE constraint failed: events ({event.execution_id}, {event.sequence})")
            sequences.add(place)

    def _execution_of(self, task_run_id: str) -> str | None:
        stored = self._task_runs.get(task_run_id)
        return None if stored is None else stored[1].execution_id

    def _apply(self, batch: WriteBatch) -> None:
        for new in batch.new_executions:
            self._seq += 1
            ids = [task_run.id for task_run in new.task_runs]
            self._executions[new.execution.id] = _StoredExecution(
                self._seq, new.execution, new.request_fingerprint, ids
            )
            if new.execution.idempotency_key:
                self._keys[new.execution.idempotency_key] = new.execution.id
            for task_run in new.task_runs:
                self._task_run_seq += 1
                self._task_runs[task_run.id] = (self._task_run_seq, task_run)
        for execution in batch.executions:
            self._executions[execution.id].execution = execution
        for task_run in batch.task_runs:
            self._task_runs[task_run.id] = (self._task_runs[task_run.id][0], task_run)
        for event in batch.events:
            self._events.setdefault(event.execution_id, {})[event.sequence] = event
        for execution_id in batch.deleted:
            self._delete(execution_id)
        for schedule in batch.schedules:
            self._schedules[schedule.name] = schedule
        for schedule in batch.schedule_updates:
            if schedule.name in self._schedules:
                self._schedules[schedule.name] = schedule
        for name in batch.deleted_schedules:
            self._schedules.pop(name, None)

    def _delete(self, execution_id: str) -> None:
        stored = self._executions.pop(execution_id, None)
        if stored is None:
            return
        for task_run_id in stored.task_run_ids:
            del self._task_runs[task_run_id]
        self._events.pop(execution_id, None)
        key = stored.execution.idempotency_key
        if key and self._keys.get(key) == execution_id:
            del self._keys[key]

    # ---- reads

    def _snapshot(self, stored: _StoredExecution) -> ExecutionSnapshot:
        return ExecutionSnapshot(stored.execution, tuple(self._task_runs[i][1] for i in stored.task_run_ids))

    async def get_execution(self, execution_id: str) -> ExecutionSnapshot | None:
        self._check_open("read")
        stored = self._executions.get(execution_id)
        return None if stored is None else self._snapshot(stored)

    async def get_executions(self, execution_ids: Sequence[str]) -> dict[str, ExecutionSnapshot]:
        self._check_open("read")
        return {i: self._snapshot(self._executions[i]) for i in execution_ids if i in self._executions}

    async def last_sequences(self, execution_ids: Sequence[str]) -> dict[str, int]:
        self._check_open("read")
        return {i: max(self._events.get(i, {}), default=0) for i in execution_ids}

    async def find_idempotency_key(self, key: str) -> IdempotencyHit | None:
        self._check_open("read")
        execution_id = self._keys.get(key) if key else None
        if execution_id is None:
            return None
        return IdempotencyHit(execution_id, self._executions[execution_id].request_fingerprint)

    async def list_executions(
        self,
        *,
        states: Sequence[State],
        handler: str,
        page_size: int,
        page_token: str,
        submitted_by: str | None = None,
    ) -> ExecutionPage:
        """Newest first. Raises ValidationError('page_token', ...) for a token it did not issue."""
        check_page_size(page_size)
        before = decode_page_token(page_token)
        self._check_open("read")
        wanted = {State(state) for state in states}
        found: list[_StoredExecution] = []
        for stored in sorted(self._executions.values(), key=lambda stored: -stored.seq):
            if stored.seq >= before or (wanted and stored.execution.state not in wanted):
                continue
            if submitted_by is not None and stored.execution.submitted_by != submitted_by:
                continue
            if handler and all(self._task_runs[i][1].handler != handler for i in stored.task_run_ids):
                continue
            found.append(stored)
            if len(found) > page_size:
                break
        token = encode_page_token(found[page_size - 1].seq) if len(found) > page_size else ""
        return ExecutionPage([self._snapshot(stored) for stored in found[:page_size]], token)

    async def read_events(self, execution_id: str, after_sequence: int, limit: int = 1000) -> list[EventRecord]:
        self._check_open("read")
        events = self._events.get(execution_id, {})
        return [events[n] for n in sorted(events) if n > after_sequence][: max(limit, 0)]

    async def finished_before(self, cutoff: datetime, limit: int) -> list[str]:
        self._check_open("read")
        ended = sorted(
            (stored.execution.ended_at, stored.seq, stored.execution.id)
            for stored in self._executions.values()
            if stored.execution.state.is_terminal
            and stored.execution.ended_at is not None
            and stored.execution.ended_at < cutoff
        )
        return [execution_id for _, _, execution_id in ended[: max(limit, 0)]]

    async def recover(self) -> RecoveredState:
        """Active executions whole; cold ones only as their queue entries (see `RecoveredState`)."""
        self._check_open("read")
        unfinished = [s for s in self._executions.values() if not s.execution.state.is_terminal]
        cold = {s.execution.id for s in unfinished if self._is_cold(s)}
        active = sorted((s for s in unfinished if s.execution.id not in cold), key=lambda s: s.seq)
        queue = sorted(
            (task_run.updated_at, seq, task_run)
            for seq, task_run in self._task_runs.values()
            if task_run.state is State.PENDING
        )
        active_ids = {s.execution.id for s in active}
        return RecoveredState(
            active=[self._snapshot(s) for s in active],
            last_sequences={s.execution.id: max(self._events.get(s.execution.id, {}), default=0) for s in active},
            pending_order=[t.id for _, _, t in queue if t.execution_id in active_ids],
            cold=[ColdTaskRun(t.id, t.execution_id, t.handler) for _, _, t in queue if t.execution_id in cold],
        )

    async def load_schedules(self) -> list[Schedule]:
        self._check_open("read")
        return [self._schedules[name] for name in sorted(self._schedules)]

    def _is_cold(self, stored: _StoredExecution) -> bool:
        """See `ColdTaskRun`: PENDING, not closing, no deadline, every task run PENDING without an attempt or a
        schedule-to-start timeout, at the default priority, without a concurrency or fairness key or a rate limit."""
        execution = stored.execution
        if execution.state is not State.PENDING or execution.closing is not None or execution.deadline is not None:
            return False
        task_runs = [self._task_runs[i][1] for i in stored.task_run_ids]
        return bool(task_runs) and all(
            t.state is State.PENDING
            and not t.attempts
            and t.schedule_to_start_timeout is None
            and t.priority == DEFAULT_PRIORITY
            and not t.concurrency_key
            and not t.fairness_key
            and not t.rate_limit
            for t in task_runs
        )


def _refused(detail: str) -> StoreError:
    return StoreError(f"the store refused the batch: {detail}")


def _check_storable(batch: WriteBatch) -> None:
    """ValueError for what no store can keep: a naive datetime, a duration beyond 64-bit microseconds."""
    records: list[object] = [
        *batch.executions,
        *batch.task_runs,
        *batch.events,
        *batch.schedules,
        *batch.schedule_updates,
    ]
    for new in batch.new_executions:
        records.append(new.execution)
        records.extend(new.task_runs)
    _check_values(records)


def _check_values(values: Iterable[object]) -> None:
    for value in values:
        if isinstance(value, datetime):
            datetime_to_db(value)
        elif isinstance(value, timedelta):
            timedelta_to_db(value)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            _check_values(getattr(value, f.name) for f in dataclasses.fields(value))
        elif isinstance(value, tuple):
            _check_values(value)
