"""The store seam: what the engine needs from durable storage, the records it speaks and its errors.

SQLite (`SqliteStore`) is the default and `MemoryStore` serves tests; another store (for example
PostgreSQL, for several server replicas) implements the same Protocol and joins the behaviour suite
in `tests/unit/store/`. Only the engine writes, through the committer (`_group_commit`): every
commit is a group of `WriteBatch`es that is durable (committed, fsynced) before `commit` returns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from taskwire.server.domain import Execution, Schedule, State, TaskRun, TaskwireError


class StoreError(TaskwireError):
    """The store could not do what was asked (a refused or failed write, an unusable database file)."""

    status_name = "INTERNAL"


class StoreClosed(StoreError):
    """The store is closed (or was never opened): it takes no more reads or writes."""

    status_name = "UNAVAILABLE"


class DuplicateIdempotencyKey(StoreError):
    """A new execution carries an idempotency key that another execution already has.

    Only the batch holding that execution fails; `find_idempotency_key(key)` then
    tells which execution owns the key.
    """

    status_name = "ALREADY_EXISTS"

    def __init__(self, key: str) -> None:
        super().__init__(f"idempotency key {key!r} is already used by another execution")
        self.key = key


class StoreFenced(StoreError):
    """Another server took the database (or this replica's row) over: this one must change nothing more and stop."""

    status_name = "UNAVAILABLE"

    def __init__(self, *, holder: str, epoch: int, mine: int, what: str = "the database") -> None:
        super().__init__(
            f"fenced: another taskwire server took over {what}: {holder or 'nobody'} holds it at epoch {epoch} "
            f"(this server held epoch {mine}); stopping"
        )
        self.holder = holder
        self.epoch = epoch


@dataclass(frozen=True, slots=True)
class EventScope:
    """What a watcher of all executions filters an event on; known while the event is live, never stored."""

    handlers: frozenset[str]  # the handlers of the execution's task runs
    states: frozenset[State]  # the execution's state just before and right after the event


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One entry of an execution's history, as stored.

    `body` is a serialized `taskwire.v1.ExecutionEvent`: the store keeps it
    opaque, so watchers replay exactly the bytes that live watchers received.
    """

    execution_id: str
    sequence: int  # 1, 2, 3, ... per execution, no gaps
    time: datetime
    kind: str  # "execution_transition", "task_run_transition", "progress" or "log"
    body: bytes
    # Set on live events while someone watches all executions, for the bus; stores do not write it.
    scope: EventScope | None = field(default=None, compare=False, repr=False)


@dataclass(slots=True)
class NewExecution:
    """An execution to insert, with its task runs, and the fingerprint of the request that made it."""

    execution: Execution
    task_runs: Sequence[TaskRun]
    request_fingerprint: str


@dataclass(slots=True)
class WriteBatch:
    """Everything one engine step changes, written in one transaction (with other batches)."""

    new_executions: list[NewExecution] = field(default_factory=list)
    executions: list[Execution] = field(default_factory=list)  # updates of existing rows
    task_runs: list[TaskRun] = field(default_factory=list)  # updates of existing rows
    events: list[EventRecord] = field(default_factory=list)
    # Executions to delete, with their task runs, inputs, history and idempotency key; applied after the
    # rest of the batch. The engine deletes only terminal executions; an id that is not stored is ignored.
    deleted: list[str] = field(default_factory=list)
    # Schedules to insert or replace whole (by name); schedules that replace a stored one only (one deleted
    # meanwhile, by another replica, stays deleted); then schedules to delete (by name; an unknown one is
    # ignored). Written with the rest of the batch, so a fire's execution and the schedule's new cursor can
    # commit together.
    schedules: list[Schedule] = field(default_factory=list)
    schedule_updates: list[Schedule] = field(default_factory=list)
    deleted_schedules: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.new_executions
            or self.executions
            or self.task_runs
            or self.events
            or self.deleted
            or self.schedules
            or self.schedule_updates
            or self.deleted_schedules
        )

    @property
    def records(self) -> int:
        """How many records it writes or deletes: executions (with their task runs), updates, events, schedules."""
        new = sum(1 + len(new.task_runs) for new in self.new_executions)
        changed = len(self.executions) + len(self.task_runs) + len(self.events) + len(self.deleted)
        return new + changed + len(self.schedules) + len(self.schedule_updates) + len(self.deleted_schedules)


@dataclass(frozen=True, slots=True)
class ExecutionSnapshot:
    execution: Execution
    task_runs: tuple[TaskRun, ...]  # in submission order


@dataclass(frozen=True, slots=True)
class IdempotencyHit:
    execution_id: str
    request_fingerprint: str


@dataclass(frozen=True, slots=True)
class ExecutionPage:
    snapshots: list[ExecutionSnapshot]
    next_page_token: str  # empty on the last page


@dataclass(frozen=True, slots=True)
class ColdTaskRun:
    """A queued task run that the engine keeps out of memory until it dispatches it.

    Only executions that nothing can change before a dispatch are cold: PENDING, not closing,
    no deadline, and every task run PENDING with no attempt yet, no schedule-to-start timeout, the default
    priority and no concurrency or fairness key, no
    rate limit.
    """

    task_run_id: str
    execution_id: str
    handler: str


@dataclass(frozen=True, slots=True)
class RecoveredState:
    """What the engine rebuilds itself from on start."""

    # Every non-terminal execution that is not cold, with all its task runs, oldest first.
    active: list[ExecutionSnapshot]
    # Highest stored event sequence of each execution in `active`.
    last_sequences: dict[str, int]
    # Ids of PENDING task runs of `active` executions in queue order (the order they became PENDING).
    pending_order: list[str]
    # The task runs of cold executions, in queue order.
    cold: list[ColdTaskRun] = field(default_factory=list)


class Store(Protocol):
    async def open(self) -> None:
        """Create or migrate the schema; ready for use on return."""

    async def close(self) -> None:
        """Flush pending writes and release resources. Idempotent."""

    async def commit(self, batches: Sequence[WriteBatch]) -> list[Exception | None]:
        """Durably apply the batches, in order, in one transaction; returns once they are committed.

        Per batch, None (committed) or why that batch alone was refused: `DuplicateIdempotencyKey`, a
        `StoreError` (an update of a record that does not exist, a repeated id or event sequence, an
        event of an unknown execution), a `ValueError` for a record no store can keep (a naive
        datetime). A refused batch writes nothing; the other batches commit all the same. Raises
        `StoreClosed` when the store is not open and `StoreError` when it cannot commit at all.
        """

    async def get_execution(self, execution_id: str) -> ExecutionSnapshot | None: ...

    async def get_executions(self, execution_ids: Sequence[str]) -> dict[str, ExecutionSnapshot]:
        """Several executions at once, by id; ids not found are left out."""

    async def last_sequences(self, execution_ids: Sequence[str]) -> dict[str, int]:
        """The highest stored event sequence of each execution (0 when it has none)."""

    async def find_idempotency_key(self, key: str) -> IdempotencyHit | None: ...

    async def list_executions(
        self,
        *,
        states: Sequence[State],
        handler: str,
        page_size: int,
        page_token: str,
        submitted_by: str | None = None,
    ) -> ExecutionPage:
        """Newest first; only those `submitted_by` submitted when it is given. Raises
        ValidationError('page_token', ...) for a token it did not issue."""

    async def read_events(self, execution_id: str, after_sequence: int, limit: int = 1000) -> list[EventRecord]:
        """Events with sequence > after_sequence, in order, at most `limit`."""

    async def finished_before(self, cutoff: datetime, limit: int) -> list[str]:
        """Ids of terminal executions that ended before `cutoff`, the earliest ended first, at most
        `limit`: what retention deletes (through `WriteBatch.deleted`)."""

    async def recover(self) -> RecoveredState: ...

    async def load_schedules(self) -> list[Schedule]:
        """Every stored schedule, by name. Schedules are written through `commit` (`WriteBatch.schedules`,
        `WriteBatch.deleted_schedules`); the engine holds them all in memory from start on."""


@dataclass(frozen=True, slots=True)
class Mail:
    """A message from one replica to another (`ReplicaStore`), kept until its recipient is done with it."""

    id: int
    # "cancel" {execution_id, reason}, "claim" {by, executions}, "hand_over" {by, executions, instance, identity},
    # "given" {executions}, "refused" {executions}, "drain" {workers: [{instance, identity}], grace_us, reason}
    kind: str
    body: dict[str, Any]


class ReplicaStore(Protocol):
    """What one of several active replicas on one database needs beyond `Store` (`PostgresStore` with `replica`).

    Every execution is held by one replica; every write here is fenced on this replica's own lease: StoreFenced (and
    the store broken, `on_lost` called) once another process took this replica's name or another replica adopted it.
    """

    replica: str  # this replica's name

    async def lapsed_replicas(self) -> list[str]:
        """The other replicas, not adopted yet, whose lease lapsed or whose session ended."""

    async def adopt(self, dead: str) -> RecoveredState | None:
        """Fence `dead` and move its unfinished executions, its mail and its claims here; what it held, as a recovery
        reads it. None when another replica adopted it first (or it is alive again)."""

    async def claim(self, handlers: Sequence[str], limit: int) -> list[str]:
        """Claim up to `limit` movable executions of other live replicas with a task run of one of `handlers`, oldest
        first; each holder is mailed a `claim`. The ids claimed."""

    async def give(self, given: Sequence[str], refused: Sequence[str], to: str) -> list[str]:
        """Move the `given` executions still held here to `to` (all refused when `to` is not alive), clear the claim on
        the rest, mail `to` `given` and/or `refused`. The ids moved."""

    async def load(self, execution_ids: Sequence[str]) -> RecoveredState:
        """Those of the executions this replica holds, as a recovery reads them."""

    async def send(self, recipient: str, kind: str, body: dict[str, Any]) -> None:
        """Mail a replica (notified at commit)."""

    async def take_mail(self, limit: int = 500) -> list[Mail]:
        """This replica's mail, oldest first; it stays until `done_mail`."""

    async def done_mail(self, ids: Sequence[int]) -> None:
        """Delete the mail of `ids` (applied)."""

    async def publish_workers(self, workers: Sequence[dict[str, Any]], drains: Sequence[dict[str, Any]]) -> None:
        """Store the workers connected to this replica now and the drains it keeps for worker instances (JSON
        objects), replacing what it stored before."""

    async def workers_elsewhere(self) -> dict[str, list[dict[str, Any]]]:
        """Per other live replica (its lease current, not adopted), the workers it stored last."""

    async def drains_elsewhere(self) -> dict[str, list[dict[str, Any]]]:
        """Per other live replica that stored any, the drains it stored last."""

    async def holder_of(self, execution_id: str) -> str:
        """The replica that holds the execution; '' when it is unknown or finished."""

    async def holders_of_task_runs(self, task_run_ids: Sequence[str]) -> dict[str, str]:
        """Per unfinished execution with one of the task runs of `task_run_ids`: the replica that holds it."""

    async def lead(self) -> bool:
        """Take or renew the leader's row; True while this replica leads."""

    async def listen(self, on_notice: Callable[[str, str], None]) -> None:
        """Start a background LISTEN (returns once listening): `on_notice(kind, payload)` with kind "mail", "ready"
        (payload: a handler), "history" (payload: comma-joined ids or "*"), "schedules" (some were written or
        deleted) or "lost" (the connection was lost and is back: poll everything). Does nothing when the store does
        not notify."""
