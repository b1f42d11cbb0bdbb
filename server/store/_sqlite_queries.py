"""The SQLite store's reads: each a function of a connection, run inside one read transaction.

Executions come back whole (with their task runs, in submission order) in as few queries as the
ids allow; `recover()` sorts unfinished executions into active ones (built whole) and cold ones
(only their queue entries), with a plan that the indexes of schema version 2 cover.
"""

from __future__ import annotations

import heapq
import sqlite3
from collections.abc import Sequence
from typing import Any, Final

from taskwire.server.domain import Schedule, State, TaskRun

from ._paging import encode_page_token
from ._protocol import ColdTaskRun, EventRecord, ExecutionPage, ExecutionSnapshot, IdempotencyHit, RecoveredState
from ._schedule_json import schedule_from_text
from ._sqlite_codec import EXECUTION_COLUMNS, TASK_RUN_COLUMNS, event_from_row, execution_from_row, task_run_from_row
from ._sqlite_schema import ACTIVE_SQL, COLD_EXECUTION_SQL, TERMINAL_SQL

CHUNK: Final = 500  # values per IN list, well under SQLite's limit on bound parameters


def select_in(conn: sqlite3.Connection, sql: str, values: Sequence[str], *, tuples: bool = False) -> list[Any]:
    """Rows of `sql` whose `IN ({marks})` list is `values`, queried in chunks (as plain tuples if `tuples`).

    Bound parameters rather than json_each(): SQLite's JSON functions cut text at
    a NUL character, and ids or keys may hold one.
    """
    rows: list[Any] = []
    cursor = conn.cursor()
    if tuples:
        cursor.row_factory = None
    for start in range(0, len(values), CHUNK):
        chunk = values[start : start + CHUNK]
        rows.extend(cursor.execute(sql.format(marks=", ".join("?" * len(chunk))), chunk))
    return rows


_EXECUTION_SELECT: Final = f"SELECT seq, {', '.join(EXECUTION_COLUMNS)} FROM executions"
# The input is in the task run's row, or (when large, or written before schema version 9) in task_run_inputs.
TASK_RUN_SELECT: Final = (
    f"SELECT {', '.join('t.' + c for c in TASK_RUN_COLUMNS)}, CASE WHEN t.input IS NULL "
    "THEN (SELECT i.data FROM task_run_inputs AS i WHERE i.task_run_id = t.id) ELSE t.input END AS input "
    "FROM task_runs AS t"
)


def _task_runs_of(conn: sqlite3.Connection, execution_ids: Sequence[str]) -> dict[str, list[TaskRun]]:
    found: dict[str, list[TaskRun]] = {execution_id: [] for execution_id in execution_ids}
    if not execution_ids:
        return found
    for row in select_in(
        conn,
        f"{TASK_RUN_SELECT} WHERE t.execution_id IN ({{marks}}) ORDER BY t.execution_id, t.position",
        execution_ids,
    ):
        found[row["execution_id"]].append(task_run_from_row(row))
    return found


def _snapshots(conn: sqlite3.Connection, rows: Sequence[sqlite3.Row]) -> list[ExecutionSnapshot]:
    executions = [execution_from_row(row) for row in rows]
    task_runs = _task_runs_of(conn, [execution.id for execution in executions])
    return [ExecutionSnapshot(execution, tuple(task_runs[execution.id])) for execution in executions]


def read_execution(conn: sqlite3.Connection, execution_id: str) -> ExecutionSnapshot | None:
    rows = conn.execute(f"{_EXECUTION_SELECT} WHERE id = ?", (execution_id,)).fetchall()
    snapshots = _snapshots(conn, rows)
    return snapshots[0] if snapshots else None


def read_idempotency_key(conn: sqlite3.Connection, key: str) -> IdempotencyHit | None:
    row = conn.execute(
        "SELECT id, request_fingerprint FROM executions WHERE idempotency_key = ? AND idempotency_key != ''", (key,)
    ).fetchone()
    return None if row is None else IdempotencyHit(row["id"], row["request_fingerprint"])


def list_executions(
    conn: sqlite3.Connection,
    states: Sequence[State],
    handler: str,
    page_size: int,
    before: int,
    submitted_by: str | None = None,
) -> ExecutionPage:
    handler_filter = (
        " AND EXISTS (SELECT 1 FROM task_runs AS t WHERE t.handler = :handler AND t.execution_id = executions.id)"
        if handler
        else ""
    )
    if submitted_by:  # executions_by_submitter leaves out the executions of no submitter ('')
        handler_filter += " AND submitted_by = :submitted_by AND submitted_by != ''"
    elif submitted_by is not None:
        handler_filter += " AND submitted_by = :submitted_by"
    params: dict[str, Any] = {
        "handler": handler,
        "before": before,
        "limit": page_size + 1,
        "submitted_by": submitted_by,
    }
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


def read_events(conn: sqlite3.Connection, execution_id: str, after_sequence: int, limit: int) -> list[EventRecord]:
    rows = conn.execute(
        "SELECT execution_id, sequence, time, kind, body FROM events "
        "WHERE execution_id = ? AND sequence > ? ORDER BY sequence LIMIT ?",
        (execution_id, after_sequence, limit),
    )
    return [event_from_row(row) for row in rows]


def read_executions(conn: sqlite3.Connection, execution_ids: Sequence[str]) -> dict[str, ExecutionSnapshot]:
    ids = list(dict.fromkeys(execution_ids))
    rows = select_in(conn, f"{_EXECUTION_SELECT} WHERE id IN ({{marks}})", ids)
    return {snapshot.execution.id: snapshot for snapshot in _snapshots(conn, rows)}


def last_sequences(conn: sqlite3.Connection, execution_ids: Sequence[str]) -> dict[str, int]:
    last = dict.fromkeys(execution_ids, 0)
    for execution_id, sequence in select_in(
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


# NOT_COLD_TASK_RUN_SQL for the alias `o` (SQLite matches a partial index's WHERE clause term by term).
_NOT_COLD_TASK_RUN_OF_O: Final = (
    "(o.state != 'PENDING' OR o.attempts != '[]' OR o.schedule_to_start_us IS NOT NULL OR o.priority IS NOT NULL "
    "OR o.concurrency_key IS NOT NULL OR o.fairness_key IS NOT NULL OR o.rate_limit IS NOT NULL)"
)
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
# Every other unfinished execution (an execution without task runs is never cold: nothing would queue it), by
# executions_by_state: one range per active state.
_ACTIVE_EXECUTIONS: Final = (
    f"{_EXECUTION_SELECT} WHERE state IN {ACTIVE_SQL} AND NOT ({COLD_EXECUTION_SQL} "
    "AND EXISTS (SELECT 1 FROM task_runs AS a WHERE a.execution_id = executions.id) "
    "AND NOT EXISTS (SELECT 1 FROM task_runs AS o INDEXED BY task_runs_not_cold "
    f"WHERE o.execution_id = executions.id AND {_NOT_COLD_TASK_RUN_OF_O})) "
    "ORDER BY seq"
)
_PENDING_QUEUE: Final = (
    "SELECT id, execution_id FROM task_runs INDEXED BY task_runs_pending WHERE state = 'PENDING' "
    "ORDER BY updated_at, seq"
)


def finished_before(conn: sqlite3.Connection, cutoff_us: int, limit: int) -> list[str]:
    rows = conn.execute(
        f"SELECT id FROM executions WHERE state IN {TERMINAL_SQL} AND ended_at < ? ORDER BY ended_at LIMIT ?",
        (cutoff_us, limit),
    )
    return [row[0] for row in rows]


def recover(conn: sqlite3.Connection) -> RecoveredState:
    active = _snapshots(conn, conn.execute(_ACTIVE_EXECUTIONS).fetchall())
    ids = [snapshot.execution.id for snapshot in active]
    sequences = last_sequences(conn, ids)
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
    return RecoveredState(active=active, last_sequences=sequences, pending_order=pending_order, cold=cold)


def load_schedules(conn: sqlite3.Connection) -> list[Schedule]:
    return [schedule_from_text(row["body"]) for row in conn.execute("SELECT body FROM schedules ORDER BY name")]
