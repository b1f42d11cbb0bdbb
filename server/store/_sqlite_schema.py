"""The SQLite store's schema, its migrations, and how every connection to the file is opened.

Schema (PRAGMA user_version 9; timestamps are INTEGER microseconds since the
Unix epoch, UTC; durations INTEGER microseconds; JSON columns are compact JSON):

- `executions`: `seq` (AUTOINCREMENT, never reused: the newest-first paging
  key), `id` UNIQUE, the Execution's fields, `request_fingerprint`;
  `idempotency_key` is UNIQUE where not empty.
- `task_runs`: `seq` (insertion order, the tie-break of the PENDING queue),
  `id` UNIQUE, `execution_id` → executions, `position` within the execution,
  the TaskRun's fields; attempts are a JSON array.
- `task_run_inputs`: the input bytes of each task run larger than `INLINE_INPUT_MAX`,
  written once. Kept apart so the frequent updates of a task run never rewrite a
  large input; a small one is in the task run's own row (`task_runs.input`, NULL
  when the input is in `task_run_inputs`).
- `events`: (`execution_id`, `sequence`) primary key, WITHOUT ROWID.

Version 2 adds the indexes of cold recovery: `task_runs_pending` covers the
queue scan, `executions_cold` (partial: executions that may be cold) and
`task_runs_not_cold` (partial: task runs that are not PENDING or have
attempts) answer "is this execution cold?" with two index probes. Version 3
adds `executions_finished` (partial: terminal executions, by `ended_at`), what
retention reads. Version 4 adds `task_runs.schedule_to_start_us`; a task run
with one is never cold (`task_runs_not_cold` includes it). Version 5 adds
`executions.trace_context` (JSON). Version 6 adds `executions.submitted_by`
(the identity that submitted it, '' before authentication was on) and
`executions_by_submitter`, what a submitter's listing reads. Version 7 adds
`schedules`: one row per schedule, its name and the whole schedule as one JSON
document (`_schedule_json`).
Version 8 adds flow control: `task_runs.priority` (NULL for the default
priority), `concurrency_key` and `concurrency_limit` (NULL without a key),
`fairness_key` (NULL without one), `rate_limit` and `rate_limit_key` (NULL
without); a task run of another priority, with either key or with a rate limit
is never cold either.
Version 9 writes fewer pages per submit: `task_runs.input` holds an input of up
to `INLINE_INPUT_MAX` bytes in the task run's row (the inputs written before stay
in `task_run_inputs`); `executions_active` is gone (recovery reads
`executions_by_state`); `executions_by_submitter` leaves out executions with no
submitter (nobody lists by an empty identity).

Deleting an execution deletes its events, task run inputs, task runs and row;
SQLite reuses the freed pages for later inserts (the file does not shrink).

Every connection runs with `synchronous=FULL` and foreign keys on; the writer's
turns the file to WAL, so readers never wait for a commit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from taskwire.server.domain import State

from ._protocol import StoreError

_APPLICATION_ID: Final = 0x74776972  # "twir": marks the file as a taskwire database
TERMINAL_SQL: Final = "('SUCCESS', 'FAILED', 'CANCELLED')"
ACTIVE_SQL: Final = f"({', '.join(repr(state.value) for state in State if not state.is_terminal)})"

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
    f"CREATE INDEX executions_active ON executions (seq) WHERE state NOT IN {TERMINAL_SQL}",
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
COLD_EXECUTION_SQL: Final = "state = 'PENDING' AND closing IS NULL AND deadline IS NULL"
NOT_COLD_TASK_RUN_SQL: Final = (
    "(state != 'PENDING' OR attempts != '[]' OR schedule_to_start_us IS NOT NULL OR priority IS NOT NULL "
    "OR concurrency_key IS NOT NULL OR fairness_key IS NOT NULL OR rate_limit IS NOT NULL)"
)
_NOT_COLD_TASK_RUN_SQL_V4: Final = "(state != 'PENDING' OR attempts != '[]' OR schedule_to_start_us IS NOT NULL)"
_NOT_COLD_TASK_RUN_SQL_V2: Final = "(state != 'PENDING' OR attempts != '[]')"

_SCHEMA_V2: Final = (
    # The queue, covering what recovery reads of it (state too: SQLite needs it to treat the index as covering).
    "DROP INDEX task_runs_pending",
    "CREATE INDEX task_runs_pending ON task_runs (updated_at, seq, state, execution_id, id, handler) "
    "WHERE state = 'PENDING'",
    f"CREATE INDEX executions_cold ON executions (id, state, closing, deadline) WHERE {COLD_EXECUTION_SQL}",
    f"CREATE INDEX task_runs_not_cold ON task_runs (execution_id) WHERE {_NOT_COLD_TASK_RUN_SQL_V2}",
)


def _add_cold_indexes_v2(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA_V2:
        conn.execute(statement)


# Version 3: what retention deletes, oldest ended first (`finished_before`).
_SCHEMA_V3: Final = f"CREATE INDEX executions_finished ON executions (ended_at) WHERE state IN {TERMINAL_SQL}"


def _add_finished_index_v3(conn: sqlite3.Connection) -> None:
    conn.execute(_SCHEMA_V3)


# Version 4: a task run's schedule-to-start timeout. Such a task run has a timer while it waits, so its
# execution is never cold: the partial index of task runs that are not cold says so too.
_SCHEMA_V4: Final = (
    "ALTER TABLE task_runs ADD COLUMN schedule_to_start_us INTEGER",
    "DROP INDEX task_runs_not_cold",
    f"CREATE INDEX task_runs_not_cold ON task_runs (execution_id) WHERE {_NOT_COLD_TASK_RUN_SQL_V4}",
)


def _add_schedule_to_start_v4(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA_V4:
        conn.execute(statement)


# Version 5: the submitter's trace context of each execution (W3C traceparent and tracestate, as JSON).
_SCHEMA_V5: Final = "ALTER TABLE executions ADD COLUMN trace_context TEXT NOT NULL DEFAULT '{}'"


def _add_trace_context_v5(conn: sqlite3.Connection) -> None:
    conn.execute(_SCHEMA_V5)


# Version 6: who submitted each execution (a submitter sees only its own).
_SCHEMA_V6: Final = (
    "ALTER TABLE executions ADD COLUMN submitted_by TEXT NOT NULL DEFAULT ''",
    "CREATE INDEX executions_by_submitter ON executions (submitted_by, seq)",
)


def _add_submitter_v6(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA_V6:
        conn.execute(statement)


# Version 7: schedules, each one JSON document by name (a few rows, all read on start).
_SCHEMA_V7: Final = "CREATE TABLE schedules (name TEXT PRIMARY KEY, body TEXT NOT NULL) WITHOUT ROWID"


def _add_schedules_v7(conn: sqlite3.Connection) -> None:
    conn.execute(_SCHEMA_V7)


# Version 8: flow control. A task run's priority (NULL for the default: the ready queue orders by priority, and
# cold task runs come back in the store's plain queue order, so one of another priority is never cold), and its
# concurrency key and limit (NULL without a key: the engine counts a key's places, so a keyed one is never cold),
# its fairness key (NULL without one: cold task runs come back into the queue of tasks without one), and its rate
# limit and key (NULL without: a task run that may wait for a token is never cold).
_SCHEMA_V8: Final = (
    "ALTER TABLE task_runs ADD COLUMN priority INTEGER",
    "ALTER TABLE task_runs ADD COLUMN concurrency_key TEXT",
    "ALTER TABLE task_runs ADD COLUMN concurrency_limit INTEGER",
    "ALTER TABLE task_runs ADD COLUMN fairness_key TEXT",
    "ALTER TABLE task_runs ADD COLUMN rate_limit TEXT",
    "ALTER TABLE task_runs ADD COLUMN rate_limit_key TEXT",
    "DROP INDEX task_runs_not_cold",
    f"CREATE INDEX task_runs_not_cold ON task_runs (execution_id) WHERE {NOT_COLD_TASK_RUN_SQL}",
)


def _add_flow_control_v8(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA_V8:
        conn.execute(statement)


# Version 9: fewer pages written per submit (see the module's docstring). Each index costs a page in the commit
# that inserts a row, and another in each commit that changes one of its columns.
INLINE_INPUT_MAX: Final = 1024  # bytes; a larger input goes to task_run_inputs
_SCHEMA_V9: Final = (
    "ALTER TABLE task_runs ADD COLUMN input BLOB",
    "DROP INDEX executions_active",
    "DROP INDEX executions_by_submitter",
    "CREATE INDEX executions_by_submitter ON executions (submitted_by, seq) WHERE submitted_by != ''",
)


def _fewer_pages_v9(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA_V9:
        conn.execute(statement)


# MIGRATIONS[n] takes a database from user_version n to n + 1, inside one transaction.
# A later schema appends its step here; SCHEMA_VERSION follows.
MIGRATIONS: Final[tuple[Callable[[sqlite3.Connection], None], ...]] = (
    _create_schema_v1,
    _add_cold_indexes_v2,
    _add_finished_index_v3,
    _add_schedule_to_start_v4,
    _add_trace_context_v5,
    _add_submitter_v6,
    _add_schedules_v7,
    _add_flow_control_v8,
    _fewer_pages_v9,
)
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
        with write_transaction(conn):
            version = conn.execute("PRAGMA user_version").fetchone()[0]  # another process may have migrated
            if version >= target:
                return int(found)
            migrations[version](conn)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute(f"PRAGMA application_id = {_APPLICATION_ID}")


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction (`BEGIN IMMEDIATE`) on an autocommit connection: committed when the block
    ends, rolled back when it raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def connect(path: Path, *, busy_timeout_s: float, read_only: bool) -> sqlite3.Connection:
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
