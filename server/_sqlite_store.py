"""The default store: one SQLite file, group-committed by one writer process.

Durability as shipped: WAL journal with `synchronous=FULL`, so a commit is
fsynced before `write` returns. `write(batch)` serializes the batch to rows
(a batch that cannot be encoded fails alone, at once), queues it and waits.
The store's writer task takes everything queued at that moment and sends it
to the writer process, which alone holds the write connection: it applies the
group in one transaction and commits once; then every waiter wakes, so N
concurrent writers cost about one fsync, not N. When such a transaction fails,
each of its batches is retried alone, so one bad batch fails only its own
writer. The commit runs in a process of its own so that SQLite's work, and the
Python around every row, never competes with the event loop for the
interpreter lock; if that process dies, every later write fails (and the
server, which cannot keep what it would serve, stops).

Reads run on a small pool of read-only connections in their own threads, each
read in one read transaction (a consistent snapshot of committed data); WAL
lets them run while the writer commits. The event loop never touches the disk.

Schema (PRAGMA user_version 2; timestamps are INTEGER microseconds since the
Unix epoch, UTC; durations INTEGER microseconds; JSON columns are compact JSON):

- `executions`: `seq` (AUTOINCREMENT, never reused: the newest-first paging
  key), `id` UNIQUE, the Execution's fields, `request_fingerprint`;
  `idempotency_key` is UNIQUE where not empty.
- `task_runs`: `seq` (insertion order, the tie-break of the PENDING queue),
  `id` UNIQUE, `execution_id` → executions, `position` within the execution,
  the TaskRun's fields; attempts are a JSON array.
- `task_run_inputs`: the input bytes of each task run, written once. Kept apart
  so the frequent updates of a task run never rewrite a large input.
- `events`: (`execution_id`, `sequence`) primary key, WITHOUT ROWID.

Version 2 adds the indexes of cold recovery: `task_runs_pending` covers the
queue scan, `executions_cold` (partial: executions that may be cold) and
`task_runs_not_cold` (partial: task runs that are not PENDING or have
attempts) answer "is this execution cold?" with two index probes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import heapq
import json
import multiprocessing.connection
import os
import pickle
import signal
import socket
import sqlite3
import struct
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Protocol, TypedDict, TypeVar

from .domain import (
    Attempt,
    Closing,
    Execution,
    Payload,
    Reason,
    ReasonCode,
    RetryPolicy,
    State,
    TaskRun,
)
from .store._json import (
    EPOCH,
    attempt_from_json,
    attempt_to_json,
    closing_from_json,
    closing_to_json,
    datetime_from_db,
    datetime_to_db,
    dumps,
    progress_from_json,
    progress_to_json,
    reason_from_json,
    reason_to_json,
    retry_policy_from_json,
    retry_policy_to_json,
    timedelta_to_db,
)
from .store._paging import check_page_size, decode_page_token, encode_page_token
from .store._protocol import (
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

__all__ = [
    "SCHEMA_VERSION",
    "DuplicateIdempotencyKey",
    "SqliteStore",
    "StoreClosed",
    "StoreError",
    "StoreStats",
]

_T = TypeVar("_T")


# --------------------------------------------------------------------------- codec: rows


class RowLike(Protocol):
    """A row by column name: a `sqlite3.Row` or a plain dict."""

    def __getitem__(self, key: str, /) -> Any: ...


# The columns of an execution that an update rewrites (everything but seq and request_fingerprint).
_EXECUTION_COLUMNS: Final = (
    "id",
    "name",
    "state",
    "reason_code",
    "reason_message",
    "closing",
    "metadata",
    "deadline",
    "not_before",
    "idempotency_key",
    "created_at",
    "updated_at",
    "started_at",
    "ended_at",
)

# The columns of a task run that an update rewrites; execution_id and position only identify it.
_TASK_RUN_COLUMNS: Final = (
    "id",
    "execution_id",
    "task_id",
    "handler",
    "input_content_type",
    "depends_on",
    "timeout_us",
    "retry_policy",
    "state",
    "reason_code",
    "reason_message",
    "pending_cancel",
    "progress",
    "not_before",
    "created_at",
    "updated_at",
    "started_at",
    "ended_at",
    "attempts",
)


class _Memo:
    """A small cache from a key to its (immutable) value, emptied when full. Safe to share between threads.

    Only values that equal keys always map to, exactly (same JSON text in, same record out), are memoized.
    """

    __slots__ = ("_limit", "_values")

    def __init__(self, limit: int = 256) -> None:
        self._limit = limit
        self._values: dict[Any, Any] = {}

    def get(self, key: Any, make: Callable[[Any], _T]) -> _T:
        try:
            return self._values[key]  # type: ignore[no-any-return]
        except KeyError:
            pass
        value = make(key)
        values = self._values
        if len(values) >= self._limit:
            values.clear()
        values[key] = value
        return value


_STATES: Final[dict[str, State]] = {state.value: state for state in State}
_REASON_CODES: Final[dict[str, ReasonCode]] = {code.value: code for code in ReasonCode}

# Decoding: column text → decoded value, for the columns that repeat across rows.
_memo_retry_policies_from_db: Final = _Memo()
_memo_depends_on_from_db: Final = _Memo()
_memo_metadata_from_db: Final = _Memo()  # values are dicts: callers get a copy
_memo_closings_from_db: Final = _Memo()
_memo_reasons_from_db: Final = _Memo(1024)
# Encoding: value → column text.
_memo_retry_policies_to_db: Final = _Memo()
_memo_depends_on_to_db: Final = _Memo()
_memo_metadata_to_db: Final = _Memo()
_memo_closings_to_db: Final = _Memo()


def _state_from_db(value: str) -> State:
    try:
        return _STATES[value]
    except KeyError:
        return State(value)  # raises the usual ValueError


def _make_reason(key: tuple[str, str]) -> Reason:
    code, message = key
    return Reason(_REASON_CODES.get(code) or ReasonCode(code), message)


def _reason_from_db(code: str | None, message: str | None) -> Reason | None:
    if code is None:
        return None
    return _memo_reasons_from_db.get((code, message or ""), _make_reason)


def _retry_policy_text(policy: RetryPolicy) -> str:
    return dumps(retry_policy_to_json(policy))


def _retry_policy_to_db(policy: RetryPolicy) -> str:
    # Equal policies share a text only when their fields encode alike: 0.0 == -0.0 and True == 1 do not.
    if type(policy.max_attempts) is int and type(policy.backoff_coefficient) is float and policy.backoff_coefficient:
        return _memo_retry_policies_to_db.get(policy, _retry_policy_text)
    return _retry_policy_text(policy)


def _retry_policy_from_text(text: str) -> RetryPolicy:
    return retry_policy_from_json(json.loads(text))


def _json_list(value: tuple[str, ...]) -> str:
    return dumps(list(value))


def _depends_on_to_db(depends_on: tuple[str, ...]) -> str:
    if not depends_on:
        return "[]"
    if type(depends_on) is not tuple:
        return _json_list(tuple(depends_on))
    return _memo_depends_on_to_db.get(depends_on, _json_list)


def _tuple_from_text(text: str) -> tuple[str, ...]:
    return tuple(json.loads(text))


def _depends_on_from_db(text: str) -> tuple[str, ...]:
    if text == "[]":
        return ()
    return _memo_depends_on_from_db.get(text, _tuple_from_text)


def _metadata_text(items: tuple[tuple[str, str], ...]) -> str:
    return dumps(dict(items))


def _metadata_to_db(metadata: Any) -> str:
    if not metadata:
        return "{}"
    items = tuple(metadata.items())
    if len(items) > 8:
        return dumps(dict(items))
    return _memo_metadata_to_db.get(items, _metadata_text)


def _metadata_from_db(text: str) -> dict[str, str]:
    if text == "{}":
        return {}
    if len(text) > 512:
        return json.loads(text)  # type: ignore[no-any-return]
    return dict(_memo_metadata_from_db.get(text, json.loads))


def _closing_text(closing: Closing) -> str:
    return dumps(closing_to_json(closing))


def _closing_from_text(text: str) -> Closing:
    return closing_from_json(json.loads(text))


def _attempts_to_db(attempts: tuple[Attempt, ...]) -> str:
    if not attempts:
        return "[]"
    return dumps([attempt_to_json(attempt) for attempt in attempts])


def _attempts_from_db(text: str) -> tuple[Attempt, ...]:
    if text == "[]":
        return ()
    return tuple(attempt_from_json(value) for value in json.loads(text))


class _LifecycleFields(TypedDict):
    """The fields executions and task runs have alike: identity, state and reason, and their times."""

    id: str
    state: State
    reason: Reason | None
    not_before: datetime | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    ended_at: datetime | None


def _lifecycle_to_row(record: Execution | TaskRun) -> dict[str, Any]:
    """The columns of `_LifecycleFields`, alike in executions and task runs."""
    reason = record.reason
    not_before = record.not_before
    started_at = record.started_at
    ended_at = record.ended_at
    return {
        "id": record.id,
        "state": record.state.value,
        "reason_code": None if reason is None else reason.code.value,
        "reason_message": None if reason is None else reason.message,
        "not_before": None if not_before is None else datetime_to_db(not_before),
        "created_at": datetime_to_db(record.created_at),
        "updated_at": datetime_to_db(record.updated_at),
        "started_at": None if started_at is None else datetime_to_db(started_at),
        "ended_at": None if ended_at is None else datetime_to_db(ended_at),
    }


def _lifecycle_from_row(row: RowLike) -> _LifecycleFields:
    not_before = row["not_before"]
    started_at = row["started_at"]
    ended_at = row["ended_at"]
    return {
        "id": row["id"],
        "state": _state_from_db(row["state"]),
        "reason": _reason_from_db(row["reason_code"], row["reason_message"]),
        "not_before": None if not_before is None else EPOCH + timedelta(microseconds=not_before),
        "created_at": EPOCH + timedelta(microseconds=row["created_at"]),
        "updated_at": EPOCH + timedelta(microseconds=row["updated_at"]),
        "started_at": None if started_at is None else EPOCH + timedelta(microseconds=started_at),
        "ended_at": None if ended_at is None else EPOCH + timedelta(microseconds=ended_at),
    }


def execution_to_row(execution: Execution) -> dict[str, Any]:
    """The columns of `_EXECUTION_COLUMNS` for one execution."""
    closing = execution.closing
    deadline = execution.deadline
    return {
        **_lifecycle_to_row(execution),
        "name": execution.name,
        "closing": None if closing is None else _memo_closings_to_db.get(closing, _closing_text),
        "metadata": _metadata_to_db(execution.metadata),
        "deadline": None if deadline is None else datetime_to_db(deadline),
        "idempotency_key": execution.idempotency_key,
    }


def execution_from_row(row: RowLike) -> Execution:
    closing = row["closing"]
    deadline = row["deadline"]
    return Execution(
        **_lifecycle_from_row(row),
        name=row["name"],
        metadata=_metadata_from_db(row["metadata"]),
        deadline=None if deadline is None else EPOCH + timedelta(microseconds=deadline),
        idempotency_key=row["idempotency_key"],
        closing=None if closing is None else _memo_closings_from_db.get(closing, _closing_from_text),
    )


def task_run_to_row(task_run: TaskRun) -> dict[str, Any]:
    """The columns of `_TASK_RUN_COLUMNS` for one task run, plus `input` (its bytes)."""
    pending_cancel = task_run.pending_cancel
    progress = task_run.progress
    timeout = task_run.timeout
    return {
        **_lifecycle_to_row(task_run),
        "execution_id": task_run.execution_id,
        "task_id": task_run.task_id,
        "handler": task_run.handler,
        "input": task_run.input.data,
        "input_content_type": task_run.input.content_type,
        "depends_on": _depends_on_to_db(task_run.depends_on),
        "timeout_us": None if timeout is None else timedelta_to_db(timeout),
        "retry_policy": _retry_policy_to_db(task_run.retry_policy),
        "pending_cancel": None if pending_cancel is None else dumps(reason_to_json(pending_cancel)),
        "progress": None if progress is None else dumps(progress_to_json(progress)),
        "attempts": _attempts_to_db(task_run.attempts),
    }


def task_run_from_row(row: RowLike) -> TaskRun:
    pending_cancel = row["pending_cancel"]
    progress = row["progress"]
    timeout_us = row["timeout_us"]
    return TaskRun(
        **_lifecycle_from_row(row),
        execution_id=row["execution_id"],
        task_id=row["task_id"],
        handler=row["handler"],
        input=Payload(bytes(row["input"]), row["input_content_type"]),
        depends_on=_depends_on_from_db(row["depends_on"]),
        timeout=None if timeout_us is None else timedelta(microseconds=timeout_us),
        retry_policy=_memo_retry_policies_from_db.get(row["retry_policy"], _retry_policy_from_text),
        attempts=_attempts_from_db(row["attempts"]),
        pending_cancel=None if pending_cancel is None else reason_from_json(json.loads(pending_cancel)),
        progress=None if progress is None else progress_from_json(json.loads(progress)),
    )


def event_to_row(event: EventRecord) -> dict[str, Any]:
    return {
        "execution_id": event.execution_id,
        "sequence": event.sequence,
        "time": datetime_to_db(event.time),
        "kind": event.kind,
        "body": event.body,
    }


def event_from_row(row: RowLike) -> EventRecord:
    return EventRecord(
        execution_id=row["execution_id"],
        sequence=row["sequence"],
        time=datetime_from_db(row["time"]),
        kind=row["kind"],
        body=bytes(row["body"]),
    )


# --------------------------------------------------------------------------- schema and migrations

_APPLICATION_ID: Final = 0x74776972  # "twir": marks the file as a taskwire database
_TERMINAL_SQL: Final = "('SUCCESS', 'FAILED', 'CANCELLED')"

_SCHEMA_V1: Final = (
    """
    CREATE TABLE executions (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        state TEXT NOT NULL,
        reason_code TEXT,
        reason_message TEXT,
        closing TEXT,
        metadata TEXT NOT NULL,
        deadline INTEGER,
        not_before INTEGER,
        idempotency_key TEXT NOT NULL,
        request_fingerprint TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        started_at INTEGER,
        ended_at INTEGER
    )
    """,
    "CREATE UNIQUE INDEX executions_by_idempotency_key ON executions (idempotency_key) WHERE idempotency_key != ''",
    f"CREATE INDEX executions_active ON executions (seq) WHERE state NOT IN {_TERMINAL_SQL}",
    "CREATE INDEX executions_by_state ON executions (state, seq)",
    """
    CREATE TABLE task_runs (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        execution_id TEXT NOT NULL REFERENCES executions (id),
        position INTEGER NOT NULL,
        task_id TEXT NOT NULL,
        handler TEXT NOT NULL,
        input_content_type TEXT NOT NULL,
        depends_on TEXT NOT NULL,
        timeout_us INTEGER,
        retry_policy TEXT NOT NULL,
        state TEXT NOT NULL,
        reason_code TEXT,
        reason_message TEXT,
        pending_cancel TEXT,
        progress TEXT,
        not_before INTEGER,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        started_at INTEGER,
        ended_at INTEGER,
        attempts TEXT NOT NULL,
        UNIQUE (execution_id, position)
    )
    """,
    "CREATE INDEX task_runs_pending ON task_runs (updated_at, seq) WHERE state = 'PENDING'",
    "CREATE INDEX task_runs_by_handler ON task_runs (handler, execution_id)",
    """
    CREATE TABLE task_run_inputs (
        task_run_id TEXT PRIMARY KEY REFERENCES task_runs (id),
        data BLOB NOT NULL
    )
    """,
    """
    CREATE TABLE events (
        execution_id TEXT NOT NULL REFERENCES executions (id),
        sequence INTEGER NOT NULL,
        time INTEGER NOT NULL,
        kind TEXT NOT NULL,
        body BLOB NOT NULL,
        PRIMARY KEY (execution_id, sequence)
    ) WITHOUT ROWID
    """,
)


def _create_schema_v1(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA_V1:
        conn.execute(statement)


# Cold executions (see `ColdTaskRun`), in SQL. An execution is cold when its row is in `executions_cold` and no
# task run of it is in `task_runs_not_cold`. The texts must stay exactly as the indexes' WHERE clauses below,
# or SQLite no longer uses these partial indexes.
_COLD_EXECUTION_SQL: Final = "state = 'PENDING' AND closing IS NULL AND deadline IS NULL"
_NOT_COLD_TASK_RUN_SQL: Final = "(state != 'PENDING' OR attempts != '[]')"

_SCHEMA_V2: Final = (
    # The queue, covering what recovery reads of it (state too: SQLite needs it to treat the index as covering).
    "DROP INDEX task_runs_pending",
    "CREATE INDEX task_runs_pending ON task_runs (updated_at, seq, state, execution_id, id, handler) "
    "WHERE state = 'PENDING'",
    f"CREATE INDEX executions_cold ON executions (id, state, closing, deadline) WHERE {_COLD_EXECUTION_SQL}",
    f"CREATE INDEX task_runs_not_cold ON task_runs (execution_id) WHERE {_NOT_COLD_TASK_RUN_SQL}",
)


def _add_cold_indexes_v2(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA_V2:
        conn.execute(statement)


# MIGRATIONS[n] takes a database from user_version n to n + 1, inside one transaction.
# A later schema appends its step here; SCHEMA_VERSION follows.
MIGRATIONS: Final[tuple[Callable[[sqlite3.Connection], None], ...]] = (_create_schema_v1, _add_cold_indexes_v2)
SCHEMA_VERSION: Final = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection, migrations: Sequence[Callable[[sqlite3.Connection], None]] = MIGRATIONS) -> int:
    """Bring the schema to `len(migrations)`, one transaction per step; return the version found.

    `conn` must be in autocommit mode (isolation_level=None).
    """
    target = len(migrations)
    application_id = conn.execute("PRAGMA application_id").fetchone()[0]
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if application_id not in (0, _APPLICATION_ID):
        raise StoreError(f"not a taskwire database (application_id {application_id:#x})")
    if found > target:
        raise StoreError(f"the database has schema version {found}, newer than this server supports ({target})")
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]  # another process may have migrated
            if version >= target:
                conn.execute("COMMIT")
                return int(found)
            migrations[version](conn)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def _connect(path: Path, *, busy_timeout_s: float, read_only: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {round(busy_timeout_s * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = FULL")
        if read_only:
            conn.execute("PRAGMA query_only = ON")
            conn.row_factory = sqlite3.Row
        else:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"cannot use WAL journal mode on {path} (got {mode!r})")
    except BaseException:
        conn.close()
        raise
    return conn


# --------------------------------------------------------------------------- the write path

_INSERT_EXECUTION: Final = (
    f"INSERT INTO executions ({', '.join(_EXECUTION_COLUMNS)}, request_fingerprint) "
    f"VALUES ({', '.join(':' + c for c in _EXECUTION_COLUMNS)}, :request_fingerprint)"
)
_UPDATE_EXECUTION: Final = (
    f"UPDATE executions SET {', '.join(f'{c} = :{c}' for c in _EXECUTION_COLUMNS if c != 'id')} WHERE id = :id"
)
_INSERT_TASK_RUN: Final = (
    f"INSERT INTO task_runs ({', '.join(_TASK_RUN_COLUMNS)}, position) "
    f"VALUES ({', '.join(':' + c for c in _TASK_RUN_COLUMNS)}, :position)"
)
_UPDATE_TASK_RUN: Final = (
    f"UPDATE task_runs SET {', '.join(f'{c} = :{c}' for c in _TASK_RUN_COLUMNS if c not in ('id', 'execution_id'))} "
    "WHERE id = :id AND execution_id = :execution_id"
)
_INSERT_INPUT: Final = "INSERT INTO task_run_inputs (task_run_id, data) VALUES (:id, :input)"
_INSERT_EVENT: Final = (
    "INSERT INTO events (execution_id, sequence, time, kind, body) "
    "VALUES (:execution_id, :sequence, :time, :kind, :body)"
)
_EXISTING_EXECUTIONS: Final = "SELECT id FROM executions WHERE id IN ({marks})"
_EXISTING_TASK_RUNS: Final = "SELECT id, execution_id FROM task_runs WHERE id IN ({marks})"
_TAKEN_KEYS: Final = (
    "SELECT idempotency_key FROM executions WHERE idempotency_key IN ({marks}) AND idempotency_key != ''"
)
_CHUNK: Final = 500  # values per IN list, well under SQLite's limit on bound parameters


def _select_in(conn: sqlite3.Connection, sql: str, values: Sequence[str], *, tuples: bool = False) -> list[Any]:
    """Rows of `sql` whose `IN ({marks})` list is `values`, queried in chunks (as plain tuples if `tuples`).

    Bound parameters rather than json_each(): SQLite's JSON functions cut text at
    a NUL character, and ids or keys may hold one.
    """
    rows: list[Any] = []
    cursor = conn.cursor()
    if tuples:
        cursor.row_factory = None
    for start in range(0, len(values), _CHUNK):
        chunk = values[start : start + _CHUNK]
        rows.extend(cursor.execute(sql.format(marks=", ".join("?" * len(chunk))), chunk))
    return rows


@dataclass(slots=True)
class _Rows:
    """A WriteBatch serialized to rows (by `write`, one batch at a time: bad data fails its own batch)."""

    new_executions: list[dict[str, Any]] = field(default_factory=list)
    new_task_runs: list[dict[str, Any]] = field(default_factory=list)
    executions: list[dict[str, Any]] = field(default_factory=list)
    task_runs: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    idempotency_keys: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, batch: WriteBatch) -> _Rows:
        rows = cls()
        for new in batch.new_executions:
            row = execution_to_row(new.execution)
            row["request_fingerprint"] = new.request_fingerprint
            rows.new_executions.append(row)
            if new.execution.idempotency_key:
                rows.idempotency_keys.append(new.execution.idempotency_key)
            for position, task_run in enumerate(new.task_runs):
                if task_run.execution_id != new.execution.id:
                    raise ValueError(
                        f"task run {task_run.id} belongs to {task_run.execution_id}, not {new.execution.id}"
                    )
                task_run_row = task_run_to_row(task_run)
                task_run_row["position"] = position
                rows.new_task_runs.append(task_run_row)
        rows.executions = [execution_to_row(execution) for execution in batch.executions]
        rows.task_runs = [task_run_to_row(task_run) for task_run in batch.task_runs]
        rows.events = [event_to_row(event) for event in batch.events]
        return rows


@dataclass(slots=True)
class _Pending:
    rows: _Rows
    future: asyncio.Future[None]


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Counters of the write path since the store was opened."""

    commits: int = 0  # transactions committed that wrote something: one fsync each
    batches_committed: int = 0
    batches_failed: int = 0
    rows_written: int = 0  # rows inserted or updated, all tables
    largest_commit: int = 0  # the most batches one commit carried


def _settle(group: Sequence[_Pending], outcomes: Sequence[BaseException | None]) -> None:
    """Resolve the futures of written batches."""
    for item, error in zip(group, outcomes, strict=True):
        if item.future.done():  # the caller was cancelled; the batch was still written (or not) as reported
            continue
        if error is None:
            item.future.set_result(None)
        else:
            item.future.set_exception(error)


def _translate(error: Exception) -> StoreError:
    if isinstance(error, StoreError):
        return error
    if isinstance(error, sqlite3.IntegrityError):
        translated = StoreError(f"the database refused the batch: {error}")
    elif isinstance(error, sqlite3.Error):
        translated = StoreError(f"the write failed: {error}")
    else:
        translated = StoreError(f"the write failed: {error!r}")
    translated.__cause__ = error
    return translated


# Why a batch was refused, as it crosses from the writer process: ("duplicate", key) or ("error", message).
_Refusal = tuple[str, str]


class _Writer:
    """The writer process's side: owns the write connection, commits groups of encoded batches.

    Runs in its own process (see `_WriterProcess`), so the Python work around every row it writes never
    takes the interpreter lock from the server's event loop.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.commits = 0
        self.batches_committed = 0
        self.batches_failed = 0
        self.rows_written = 0
        self.largest_commit = 0

    def commit_isolating(self, group: Sequence[_Rows]) -> list[_Refusal | None]:
        """Commit the group in one transaction; per batch None (committed) or why it alone was refused."""
        try:
            return self._commit(group)
        except Exception as error:
            if len(group) == 1:
                return [self._fail(error)]
        # The group failed as a whole: retry each batch alone, so a bad one fails only itself.
        outcomes: list[_Refusal | None] = []
        for rows in group:
            try:
                outcomes.extend(self._commit([rows]))
            except Exception as error:
                outcomes.append(self._fail(error))
        return outcomes

    def _fail(self, error: Exception) -> _Refusal:
        self.batches_failed += 1
        return ("error", str(_translate(error)))

    def _commit(self, group: Sequence[_Rows]) -> list[_Refusal | None]:
        """Apply the group in one transaction; per batch None (committed) or the refusal of it alone.

        Raises when the transaction as a whole failed (nothing of it is committed).
        """
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            outcomes = self._refuse_duplicate_keys(group)
            accepted = [rows for rows, outcome in zip(group, outcomes, strict=True) if outcome is None]
            written = self._apply(accepted)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        if accepted:
            self.commits += 1
            self.batches_committed += len(accepted)
            self.rows_written += written
            self.largest_commit = max(self.largest_commit, len(accepted))
        self.batches_failed += len(group) - len(accepted)
        return outcomes

    def _refuse_duplicate_keys(self, group: Sequence[_Rows]) -> list[_Refusal | None]:
        """A refusal for each batch whose new executions reuse a key (stored, or earlier in the group)."""
        wanted = [key for rows in group for key in rows.idempotency_keys]
        if not wanted:
            return [None] * len(group)
        taken = {row[0] for row in _select_in(self.conn, _TAKEN_KEYS, wanted)}
        outcomes: list[_Refusal | None] = []
        for rows in group:
            seen: set[str] = set()
            duplicate = None
            for key in rows.idempotency_keys:
                if key in taken or key in seen:
                    duplicate = key
                    break
                seen.add(key)
            if duplicate is None:
                taken.update(rows.idempotency_keys)
                outcomes.append(None)
            else:
                outcomes.append(("duplicate", duplicate))
        return outcomes

    def _apply(self, batches: Sequence[_Rows]) -> int:
        """Write the batches in their order; return the rows written."""
        conn = self.conn
        written = 0
        new_executions = [row for rows in batches for row in rows.new_executions]
        new_task_runs = [row for rows in batches for row in rows.new_task_runs]
        # Updates: the last version of each record wins, exactly as if applied one after the other.
        executions = {row["id"]: row for rows in batches for row in rows.executions}
        task_runs = {row["id"]: row for rows in batches for row in rows.task_runs}
        events = [row for rows in batches for row in rows.events]
        if new_executions:
            conn.executemany(_INSERT_EXECUTION, new_executions)
            written += len(new_executions)
        if new_task_runs:
            conn.executemany(_INSERT_TASK_RUN, new_task_runs)
            conn.executemany(_INSERT_INPUT, new_task_runs)
            written += 2 * len(new_task_runs)
        if executions:
            self._update(_UPDATE_EXECUTION, list(executions.values()), "executions")
            written += len(executions)
        if task_runs:
            self._update(_UPDATE_TASK_RUN, list(task_runs.values()), "task_runs")
            written += len(task_runs)
        if events:
            conn.executemany(_INSERT_EVENT, events)
            written += len(events)
        return written

    def _update(self, sql: str, rows: list[dict[str, Any]], table: str) -> None:
        """Run the UPDATEs; StoreError naming the records that do not exist when fewer rows changed."""
        cursor = self.conn.executemany(sql, rows)
        if cursor.rowcount == len(rows):
            return
        ids = [row["id"] for row in rows]
        if table == "executions":
            found = {row[0] for row in _select_in(self.conn, _EXISTING_EXECUTIONS, ids)}
            missing = [row["id"] for row in rows if row["id"] not in found]
            raise StoreError(f"cannot update executions that do not exist: {', '.join(missing)}")
        pairs = {(row[0], row[1]) for row in _select_in(self.conn, _EXISTING_TASK_RUNS, ids)}
        missing = [
            f"{row['id']} of {row['execution_id']}" for row in rows if (row["id"], row["execution_id"]) not in pairs
        ]
        raise StoreError(f"cannot update task runs that do not exist: {', '.join(missing)}")

    def stats(self) -> StoreStats:
        return StoreStats(
            commits=self.commits,
            batches_committed=self.batches_committed,
            batches_failed=self.batches_failed,
            rows_written=self.rows_written,
            largest_commit=self.largest_commit,
        )


def writer_process_main(argv: Sequence[str]) -> int:
    """The writer process (`python -m taskwire.server._sqlite_writer FD PATH BUSY_TIMEOUT_S`).

    Opens and migrates the database, says ("ready", "") or ("failed", message) on the connection FD,
    then commits each group it receives and answers (refusals, stats), until it receives None or the
    server's end of the connection closes. Interrupts are the server's to handle: a Ctrl-C that reaches
    the whole process group must not cut a commit short.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    channel = multiprocessing.connection.Connection(int(argv[0]))
    path, busy_timeout_s = Path(argv[1]), float(argv[2])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = _connect(path, busy_timeout_s=busy_timeout_s, read_only=False)
    except Exception as error:
        channel.send(("failed", str(_translate(error))))
        return 1
    try:
        try:
            migrate(conn)
        except Exception as error:
            channel.send(("failed", str(_translate(error))))
            return 1
        writer = _Writer(conn)
        channel.send(("ready", ""))
        while True:
            try:
                group = channel.recv()
            except EOFError:  # the server is gone; whatever it had not sent is not ours to write
                return 0
            if group is None:
                return 0
            channel.send((writer.commit_isolating(group), writer.stats()))
    finally:
        conn.close()


class _WriterProcess:
    """The server's handle on the writer process: start it, hand it groups, stop it.

    A process rather than a thread: SQLite's work, and the Python around every row, never holds the
    interpreter lock the event loop needs. The event loop talks to it directly over a socket pair (the
    framing of `multiprocessing.connection`, which the process uses), so a commit costs no thread
    hand-offs. Should the process die, every write from then on fails with StoreError, which stops the
    server (fail-stop: it never serves state it cannot keep).
    """

    def __init__(
        self, popen: asyncio.subprocess.Process, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._popen = popen
        self._reader = reader
        self._writer = writer
        self._broken: StoreError | None = None
        self.stats = StoreStats()

    @classmethod
    async def start(cls, path: Path, busy_timeout_s: float) -> _WriterProcess:
        """Start the process; returns once it has opened and migrated the database (StoreError if it could not)."""
        ours, theirs = socket.socketpair()
        try:
            popen = await asyncio.create_subprocess_exec(
                # -P: the working directory does not go first on the import path, where a folder named
                # `server` (common in the projects that run taskwire) would shadow this package.
                sys.executable,
                "-P",
                "-m",
                "taskwire.server._sqlite_writer",
                str(theirs.fileno()),
                str(path),
                str(busy_timeout_s),
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                env=_writer_environment(),
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours, limit=_STREAM_LIMIT)
        process = cls(popen, reader, writer)
        try:
            status, message = await process._receive()
        except BaseException:
            await process.stop()
            raise
        if status != "ready":
            await process.stop()
            raise StoreError(message)
        return process

    @property
    def pid(self) -> int:
        return self._popen.pid

    async def commit(self, group: Sequence[_Rows]) -> list[BaseException | None]:
        """Commit the group; per batch None or the error that refused it (every batch fails once broken)."""
        if self._broken is None:
            try:
                self._send(list(group))
                await self._writer.drain()
                refusals, self.stats = await self._receive()
            except StoreError as error:
                self._broken = error
            except OSError as error:
                self._broken = await self._exited(error)
            else:
                return [_refusal_error(refusal) for refusal in refusals]
        return [self._broken] * len(group)

    def _send(self, message: object) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        # multiprocessing.connection's framing: a signed 32-bit length, or -1 and an unsigned 64-bit one.
        header = struct.pack("!i", len(data)) if len(data) < 0x7FFFFFFF else struct.pack("!iQ", -1, len(data))
        self._writer.writelines((header, data))

    async def _receive(self) -> Any:
        try:
            (size,) = struct.unpack("!i", await self._reader.readexactly(4))
            if size == -1:
                (size,) = struct.unpack("!Q", await self._reader.readexactly(8))
            return pickle.loads(await self._reader.readexactly(size))
        except (asyncio.IncompleteReadError, OSError) as error:
            raise await self._exited(error) from error

    async def _exited(self, error: BaseException) -> StoreError:
        status = await self._popen.wait()
        exited = StoreError(f"the store's writer process exited unexpectedly (exit status {status})")
        exited.__cause__ = error
        return exited

    async def stop(self) -> None:
        """Ask the process to finish and wait for it to exit (it has committed everything it was sent)."""
        with contextlib.suppress(OSError):
            self._send(None)
            await self._writer.drain()
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()
        await self._popen.wait()


# Read buffer of the connection to the writer process; a frame of any size still arrives whole.
_STREAM_LIMIT: Final = 16 * 1024 * 1024


def _writer_environment() -> dict[str, str]:
    """This environment, with the folder that holds the `server` package first on the import path."""
    root = str(Path(__file__).resolve().parent.parent)
    search_path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root if not search_path else f"{root}{os.pathsep}{search_path}"}


def _refusal_error(refusal: _Refusal | None) -> BaseException | None:
    if refusal is None:
        return None
    kind, detail = refusal
    return DuplicateIdempotencyKey(detail) if kind == "duplicate" else StoreError(detail)


# --------------------------------------------------------------------------- the read path

_EXECUTION_SELECT: Final = f"SELECT seq, {', '.join(_EXECUTION_COLUMNS)} FROM executions"
_TASK_RUN_SELECT: Final = (
    f"SELECT {', '.join('t.' + c for c in _TASK_RUN_COLUMNS)}, i.data AS input "
    "FROM task_runs AS t JOIN task_run_inputs AS i ON i.task_run_id = t.id"
)


def _task_runs_of(conn: sqlite3.Connection, execution_ids: Sequence[str]) -> dict[str, list[TaskRun]]:
    found: dict[str, list[TaskRun]] = {execution_id: [] for execution_id in execution_ids}
    if not execution_ids:
        return found
    for row in _select_in(
        conn,
        f"{_TASK_RUN_SELECT} WHERE t.execution_id IN ({{marks}}) ORDER BY t.execution_id, t.position",
        execution_ids,
    ):
        found[row["execution_id"]].append(task_run_from_row(row))
    return found


def _snapshots(conn: sqlite3.Connection, rows: Sequence[sqlite3.Row]) -> list[ExecutionSnapshot]:
    executions = [execution_from_row(row) for row in rows]
    task_runs = _task_runs_of(conn, [execution.id for execution in executions])
    return [ExecutionSnapshot(execution, tuple(task_runs[execution.id])) for execution in executions]


def _read_execution(conn: sqlite3.Connection, execution_id: str) -> ExecutionSnapshot | None:
    rows = conn.execute(f"{_EXECUTION_SELECT} WHERE id = ?", (execution_id,)).fetchall()
    snapshots = _snapshots(conn, rows)
    return snapshots[0] if snapshots else None


def _read_idempotency_key(conn: sqlite3.Connection, key: str) -> IdempotencyHit | None:
    row = conn.execute(
        "SELECT id, request_fingerprint FROM executions WHERE idempotency_key = ? AND idempotency_key != ''", (key,)
    ).fetchone()
    return None if row is None else IdempotencyHit(row["id"], row["request_fingerprint"])


def _list_executions(
    conn: sqlite3.Connection, states: Sequence[State], handler: str, page_size: int, before: int
) -> ExecutionPage:
    handler_filter = (
        " AND EXISTS (SELECT 1 FROM task_runs AS t WHERE t.handler = :handler AND t.execution_id = executions.id)"
        if handler
        else ""
    )
    params: dict[str, Any] = {"handler": handler, "before": before, "limit": page_size + 1}
    order = " ORDER BY seq DESC LIMIT :limit"
    if not states:
        rows = conn.execute(f"{_EXECUTION_SELECT} WHERE seq < :before{handler_filter}{order}", params).fetchall()
    else:
        # One index range per state (executions_by_state), merged newest first: no sort of the whole table.
        per_state = [
            conn.execute(
                f"{_EXECUTION_SELECT} WHERE state = :state AND seq < :before{handler_filter}{order}",
                {**params, "state": state.value},
            ).fetchall()
            for state in dict.fromkeys(State(state) for state in states)
        ]
        rows = list(heapq.merge(*per_state, key=lambda row: -int(row["seq"])))[: page_size + 1]
    more = len(rows) > page_size
    rows = rows[:page_size]
    token = encode_page_token(int(rows[-1]["seq"])) if more else ""
    return ExecutionPage(_snapshots(conn, rows), token)


def _read_events(conn: sqlite3.Connection, execution_id: str, after_sequence: int, limit: int) -> list[EventRecord]:
    rows = conn.execute(
        "SELECT execution_id, sequence, time, kind, body FROM events "
        "WHERE execution_id = ? AND sequence > ? ORDER BY sequence LIMIT ?",
        (execution_id, after_sequence, limit),
    )
    return [event_from_row(row) for row in rows]


def _read_executions(conn: sqlite3.Connection, execution_ids: Sequence[str]) -> dict[str, ExecutionSnapshot]:
    ids = list(dict.fromkeys(execution_ids))
    rows = _select_in(conn, f"{_EXECUTION_SELECT} WHERE id IN ({{marks}})", ids)
    return {snapshot.execution.id: snapshot for snapshot in _snapshots(conn, rows)}


def _last_sequences(conn: sqlite3.Connection, execution_ids: Sequence[str]) -> dict[str, int]:
    last = dict.fromkeys(execution_ids, 0)
    for execution_id, sequence in _select_in(
        conn,
        "SELECT execution_id, MAX(sequence) FROM events WHERE execution_id IN ({marks}) GROUP BY execution_id",
        list(last),
        tuples=True,
    ):
        last[execution_id] = sequence
    return last


def _tuples(conn: sqlite3.Connection) -> sqlite3.Cursor:
    """A cursor whose rows are plain tuples: cheaper than `sqlite3.Row` when there are many."""
    cursor = conn.cursor()
    cursor.row_factory = None
    return cursor


_NOT_COLD_TASK_RUN_OF_O: Final = "(o.state != 'PENDING' OR o.attempts != '[]')"  # for the alias `o`
# The task runs of cold executions in queue order: one scan of the covering task_runs_pending, and for each
# row a probe of executions_cold and one of task_runs_not_cold (both empty-handed for a cold execution).
_COLD_QUEUE: Final = (
    "SELECT t.id, t.execution_id, t.handler FROM task_runs AS t INDEXED BY task_runs_pending "
    "WHERE t.state = 'PENDING' "
    "AND EXISTS (SELECT 1 FROM executions AS e INDEXED BY executions_cold "
    "WHERE e.id = t.execution_id AND e.state = 'PENDING' AND e.closing IS NULL AND e.deadline IS NULL) "
    "AND NOT EXISTS (SELECT 1 FROM task_runs AS o INDEXED BY task_runs_not_cold "
    f"WHERE o.execution_id = t.execution_id AND {_NOT_COLD_TASK_RUN_OF_O}) "
    "ORDER BY t.updated_at, t.seq"
)
# Every other unfinished execution (an execution without task runs is never cold: nothing would queue it).
_ACTIVE_EXECUTIONS: Final = (
    f"{_EXECUTION_SELECT} WHERE state NOT IN {_TERMINAL_SQL} AND NOT ({_COLD_EXECUTION_SQL} "
    "AND EXISTS (SELECT 1 FROM task_runs AS a WHERE a.execution_id = executions.id) "
    "AND NOT EXISTS (SELECT 1 FROM task_runs AS o INDEXED BY task_runs_not_cold "
    f"WHERE o.execution_id = executions.id AND {_NOT_COLD_TASK_RUN_OF_O})) "
    "ORDER BY seq"
)
_PENDING_QUEUE: Final = (
    "SELECT id, execution_id FROM task_runs INDEXED BY task_runs_pending WHERE state = 'PENDING' "
    "ORDER BY updated_at, seq"
)


def _recover(conn: sqlite3.Connection) -> RecoveredState:
    active = _snapshots(conn, conn.execute(_ACTIVE_EXECUTIONS).fetchall())
    ids = [snapshot.execution.id for snapshot in active]
    last_sequences = _last_sequences(conn, ids)
    pending_order: list[str] = []
    if ids:
        wanted = set(ids)
        pending_order = [
            task_run_id for task_run_id, execution_id in _tuples(conn).execute(_PENDING_QUEUE) if execution_id in wanted
        ]
    handlers: dict[str, str] = {}  # one str per handler name, not one per task run
    cold = [
        ColdTaskRun(task_run_id, execution_id, handlers.setdefault(handler, handler))
        for task_run_id, execution_id, handler in _tuples(conn).execute(_COLD_QUEUE)
    ]
    return RecoveredState(active=active, last_sequences=last_sequences, pending_order=pending_order, cold=cold)


# --------------------------------------------------------------------------- the store


class SqliteStore:
    """The `Store` on one SQLite file. Create it, `await open()` (or `async with`), `await close()`.

    `write` raises `StoreClosed` before `open()` and after `close()`,
    `DuplicateIdempotencyKey` when a new execution reuses a key, `StoreError`
    when the database refuses the batch (an update of a record that does not
    exist, a duplicate id or event sequence, an event of an unknown execution)
    or the disk fails, and `ValueError` for a record it cannot encode (a naive
    datetime). In every failing case nothing of that batch is written; other
    batches of the same group commit are not affected. A `write` cancelled
    while waiting does not withdraw its batch, which may still be committed.

    Batches are applied in the order `write` was called (the batch is queued
    before the first await).
    """

    def __init__(
        self,
        path: Path | str,
        *,
        busy_timeout_s: float = 5.0,
        readers: int = 2,
        max_batches_per_commit: int | None = None,
    ) -> None:
        """`path` is the database file (its parent folders are created); `readers` is the size of the
        read pool; `max_batches_per_commit` caps a group commit (None: everything queued; 1: no grouping).
        """
        if str(path) == ":memory:" or str(path).startswith("file:"):
            raise ValueError("SqliteStore needs a file path: readers and the writer share the database through it")
        if readers < 1:
            raise ValueError(f"readers must be at least 1, got {readers}")
        if max_batches_per_commit is not None and max_batches_per_commit < 1:
            raise ValueError(f"max_batches_per_commit must be at least 1 or None, got {max_batches_per_commit}")
        self.path = Path(path)
        self._busy_timeout_s = busy_timeout_s
        self._reader_count = readers
        self._max_batches_per_commit = max_batches_per_commit
        self._lock = threading.Lock()  # guards the list of reader connections
        self._pending: list[_Pending] = []  # queued writes, in order
        self._wake = asyncio.Event()
        # Cleared by tests to make the writer wait before it takes what is queued (then all of it, as one group).
        self._gate = asyncio.Event()
        self._gate.set()
        self._state = "new"  # new → opening → open → closing → closed
        self._opening: asyncio.Future[None] | None = None
        self._process: _WriterProcess | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._encode_failures = 0  # batches refused before the writer process saw them: they could not be encoded
        self._readers: concurrent.futures.ThreadPoolExecutor | None = None
        self._reader_connections: list[sqlite3.Connection] = []
        self._reader_local = threading.local()
        self._closed: asyncio.Event | None = None

    # ---- lifecycle

    async def open(self) -> None:
        """Create or migrate the schema and start the writer and the readers. A second call does nothing."""
        if self._state == "open":
            return
        if self._state == "new":
            self._state = "opening"
            self._opening = asyncio.ensure_future(self._start_writer())
        if self._state == "opening" and self._opening is not None:
            try:
                await asyncio.shield(self._opening)
            except BaseException:
                self._state = "closed"
                raise
        if self._state == "opening":
            self._readers = concurrent.futures.ThreadPoolExecutor(
                max_workers=self._reader_count,
                thread_name_prefix="taskwire-store-reader",
                initializer=self._open_reader,
            )
            self._state = "open"
        elif self._state != "open":  # closed before it was ready, or closed already
            raise StoreClosed(f"the store at {self.path} is closed; make a new SqliteStore to open it again")

    async def close(self) -> None:
        """Commit what is queued, stop the writer, close every connection. Idempotent."""
        if self._closed is None and self._state in ("new", "closed"):  # never opened, or open() failed
            self._state = "closed"
            return
        if self._closed is not None:  # closing or closed already
            await self._closed.wait()
            return
        self._closed = asyncio.Event()
        self._state = "closing"
        try:
            if self._opening is not None:
                with contextlib.suppress(Exception):  # open() reports a failed start
                    await asyncio.shield(self._opening)
            self._wake.set()
            if self._writer_task is not None:
                await self._writer_task  # commits what is queued first
            if self._process is not None:
                await self._process.stop()
            if self._readers is not None:
                await asyncio.to_thread(self._readers.shutdown, wait=True)
            for conn in self._reader_connections:
                conn.close()
            self._reader_connections.clear()
        finally:
            self._state = "closed"
            self._closed.set()

    async def __aenter__(self) -> SqliteStore:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def writer_pid(self) -> int | None:
        """The process id of the writer process while the store is open, else None."""
        process = self._process
        return process.pid if process is not None and self._state == "open" else None

    def stats(self) -> StoreStats:
        """Counters of the write path (commits, batches, rows) since open()."""
        stats = self._process.stats if self._process is not None else StoreStats()
        return replace(stats, batches_failed=stats.batches_failed + self._encode_failures)

    # ---- writes

    async def write(self, batch: WriteBatch) -> None:
        """Durably apply the batch: returns once it is committed and fsynced (see the class for errors)."""
        self._check_open("write")
        if not batch:
            return
        try:
            rows = _Rows.of(batch)
        except Exception:
            self._encode_failures += 1
            raise
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(rows, future))
        self._wake.set()
        await future

    async def _start_writer(self) -> None:
        self._process = await _WriterProcess.start(self.path.resolve(), self._busy_timeout_s)
        self._writer_task = asyncio.create_task(self._write_loop(self._process), name="taskwire-store-writer")

    async def _write_loop(self, process: _WriterProcess) -> None:
        """Take everything queued, commit it (one transaction per group), wake its writers; until closed."""
        while True:
            await self._wake.wait()
            await self._gate.wait()
            self._wake.clear()
            pending, self._pending = self._pending, []
            size = self._max_batches_per_commit or len(pending) or 1
            for start in range(0, len(pending), size):
                group = pending[start : start + size]
                try:
                    outcomes = await process.commit([item.rows for item in group])
                except Exception as error:  # a bug, not a refused batch: fail the waiters, keep serving
                    outcomes = [_translate(error)] * len(group)
                _settle(group, outcomes)
            if self._state == "closing" and not self._pending:
                return

    # ---- reads

    def _open_reader(self) -> None:
        conn = _connect(self.path, busy_timeout_s=self._busy_timeout_s, read_only=True)
        self._reader_local.conn = conn
        with self._lock:
            self._reader_connections.append(conn)

    def _in_read_transaction(self, read: Callable[..., _T], *args: Any) -> _T:
        conn: sqlite3.Connection = self._reader_local.conn
        conn.execute("BEGIN")  # one snapshot of committed data for the whole read
        try:
            return read(conn, *args)
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")

    async def _read(self, read: Callable[..., _T], *args: Any) -> _T:
        self._check_open("read")
        assert self._readers is not None
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._readers, self._in_read_transaction, read, *args)
        except (sqlite3.Error, concurrent.futures.BrokenExecutor) as error:
            raise StoreError(f"reading {self.path} failed: {error}") from error

    def _check_open(self, what: str) -> None:
        if self._state != "open":
            if self._state in ("closing", "closed"):
                raise StoreClosed(f"cannot {what}: the store at {self.path} is closed")
            raise StoreClosed(f"cannot {what}: the store at {self.path} is not open yet (await open() first)")

    async def get_execution(self, execution_id: str) -> ExecutionSnapshot | None:
        return await self._read(_read_execution, execution_id)

    async def find_idempotency_key(self, key: str) -> IdempotencyHit | None:
        if not key:
            return None
        return await self._read(_read_idempotency_key, key)

    async def list_executions(
        self, *, states: Sequence[State], handler: str, page_size: int, page_token: str
    ) -> ExecutionPage:
        """Newest first. Raises ValidationError('page_token', ...) for a token it did not issue."""
        check_page_size(page_size)
        before = decode_page_token(page_token)
        return await self._read(_list_executions, list(states), handler, page_size, before)

    async def read_events(self, execution_id: str, after_sequence: int, limit: int = 1000) -> list[EventRecord]:
        """Events with sequence > after_sequence, in order, at most `limit`."""
        if limit <= 0:
            return []
        return await self._read(_read_events, execution_id, after_sequence, limit)

    async def get_executions(self, execution_ids: Sequence[str]) -> dict[str, ExecutionSnapshot]:
        """Several executions at once, by id; ids not found are left out."""
        if not execution_ids:
            return {}
        return await self._read(_read_executions, list(execution_ids))

    async def last_sequences(self, execution_ids: Sequence[str]) -> dict[str, int]:
        """The highest stored event sequence of each execution (0 when it has none)."""
        if not execution_ids:
            return {}
        return await self._read(_last_sequences, list(execution_ids))

    async def recover(self) -> RecoveredState:
        """Active executions whole; cold ones only as their queue entries (see `RecoveredState`)."""
        return await self._read(_recover)
