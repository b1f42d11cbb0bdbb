"""The PostgreSQL store's reads: each a coroutine of a connection, run inside one read-only transaction.

The same answers as the SQLite store's reads (`_sqlite_queries`), in PostgreSQL's dialect: lists of
ids travel as one array parameter (`= ANY($1)`), and the planner finds the partial indexes of
`_postgres_schema` on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from taskwire.server.domain import Schedule, State, TaskRun

from ._paging import encode_page_token
from ._postgres_schema import COLD_EXECUTION_SQL, TERMINAL_SQL
from ._postgres_text import EXECUTION_TEXT, TASK_RUN_TEXT, decoded, from_db, to_db
from ._protocol import ColdTaskRun, EventRecord, ExecutionPage, ExecutionSnapshot, IdempotencyHit, RecoveredState
from ._schedule_json import schedule_from_text
from ._sqlite_codec import EXECUTION_COLUMNS, TASK_RUN_COLUMNS, event_from_row, execution_from_row, task_run_from_row

_EXECUTION_SELECT: Final = f"SELECT seq, {', '.join(EXECUTION_COLUMNS)} FROM executions"
# The input by a probe of its primary key per task run: never a join that the planner could turn into a scan of
# every input, as it does while the statistics do not know the table yet.
_TASK_RUN_SELECT: Final = (
    f"SELECT {', '.join('t.' + c for c in TASK_RUN_COLUMNS)}, "
    "(SELECT i.data FROM task_run_inputs AS i WHERE i.task_run_id = t.id) AS input FROM task_runs AS t"
)


async def _task_runs_of(conn: Any, execution_ids: Sequence[str]) -> dict[str, list[TaskRun]]:
    found: dict[str, list[TaskRun]] = {execution_id: [] for execution_id in execution_ids}
    if not execution_ids:
        return found
    rows = await conn.fetch(
        f"{_TASK_RUN_SELECT} WHERE t.execution_id = ANY($1::text[]) ORDER BY t.execution_id, t.position",
        list(execution_ids),
    )
    for row in rows:
        found[row["execution_id"]].append(task_run_from_row(decoded(row, TASK_RUN_TEXT)))
    return found


async def _snapshots(conn: Any, rows: Sequence[Any]) -> list[ExecutionSnapshot]:
    executions = [execution_from_row(decoded(row, EXECUTION_TEXT)) for row in rows]
    task_runs = await _task_runs_of(conn, [execution.id for execution in executions])
    return [ExecutionSnapshot(execution, tuple(task_runs[execution.id])) for execution in executions]


async def read_execution(conn: Any, execution_id: str) -> ExecutionSnapshot | None:
    rows = await conn.fetch(f"{_EXECUTION_SELECT} WHERE id = $1", to_db(execution_id))
    snapshots = await _snapshots(conn, rows)
    return snapshots[0] if snapshots else None


async def read_executions(conn: Any, execution_ids: Sequence[str]) -> dict[str, ExecutionSnapshot]:
    rows = await conn.fetch(f"{_EXECUTION_SELECT} WHERE id = ANY($1::text[])", [to_db(i) for i in execution_ids])
    return {snapshot.execution.id: snapshot for snapshot in await _snapshots(conn, rows)}


async def read_idempotency_key(conn: Any, key: str) -> IdempotencyHit | None:
    row = await conn.fetchrow(
        "SELECT id, request_fingerprint FROM executions WHERE idempotency_key = $1 AND idempotency_key <> ''",
        to_db(key),
    )
    return None if row is None else IdempotencyHit(row["id"], row["request_fingerprint"])


async def list_executions(
    conn: Any, states: Sequence[State], handler: str, page_size: int, before: int, submitted_by: str | None = None
) -> ExecutionPage:
    conditions = ["seq < $1"]
    params: list[Any] = [before, page_size + 1]
    if states:
        params.append(sorted({State(state).value for state in states}))
        conditions.append(f"state = ANY(${len(params)}::text[])")
    if submitted_by is not None:
        params.append(to_db(submitted_by))
        conditions.append(f"submitted_by = ${len(params)}")
    if handler:
        params.append(to_db(handler))
        conditions.append(
            f"EXISTS (SELECT 1 FROM task_runs AS t WHERE t.handler = ${len(params)} AND t.execution_id = executions.id)"
        )
    rows = await conn.fetch(f"{_EXECUTION_SELECT} WHERE {' AND '.join(conditions)} ORDER BY seq DESC LIMIT $2", *params)
    more = len(rows) > page_size
    rows = rows[:page_size]
    token = encode_page_token(int(rows[-1]["seq"])) if more else ""
    return ExecutionPage(await _snapshots(conn, rows), token)


async def read_events(conn: Any, execution_id: str, after_sequence: int, limit: int) -> list[EventRecord]:
    rows = await conn.fetch(
        "SELECT execution_id, sequence, time, kind, body FROM events "
        "WHERE execution_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3",
        to_db(execution_id),
        after_sequence,
        limit,
    )
    return [event_from_row(row) for row in rows]


async def last_sequences(conn: Any, execution_ids: Sequence[str]) -> dict[str, int]:
    last = dict.fromkeys(execution_ids, 0)
    rows = await conn.fetch(
        "SELECT e.id, (SELECT max(v.sequence) FROM events AS v WHERE v.execution_id = e.id) "
        "FROM unnest($1::text[]) AS e(id)",
        [to_db(i) for i in execution_ids],
    )
    for execution_id, sequence in rows:
        if sequence is not None:
            last[from_db(execution_id)] = int(sequence)
    return last


async def finished_before(conn: Any, cutoff_us: int, limit: int) -> list[str]:
    rows = await conn.fetch(
        f"SELECT id FROM executions WHERE state IN {TERMINAL_SQL} AND ended_at < $1 ORDER BY ended_at LIMIT $2",
        cutoff_us,
        limit,
    )
    return [row[0] for row in rows]


# NOT_COLD_TASK_RUN_SQL and COLD_EXECUTION_SQL of the aliases `o` and `e`.
NOT_COLD_O: Final = (
    "(o.state <> 'PENDING' OR o.attempts <> '[]' OR o.schedule_to_start_us IS NOT NULL OR o.priority IS NOT NULL "
    "OR o.concurrency_key IS NOT NULL OR o.fairness_key IS NOT NULL OR o.rate_limit IS NOT NULL)"
)
COLD_E: Final = "e.state = 'PENDING' AND e.closing IS NULL AND e.deadline IS NULL"


def _recovery_reads(held: str) -> tuple[str, str]:
    """The reads of every unfinished execution that is not cold, and of the cold queue, of the executions that match
    `held` (a condition on `e`: '' for all)."""
    # The task runs of cold executions in queue order: the PENDING index scanned in order, each row probing
    # executions_cold and task_runs_not_cold.
    cold_queue = (
        "SELECT t.id, t.execution_id, t.handler FROM task_runs AS t WHERE t.state = 'PENDING' "
        f"AND EXISTS (SELECT 1 FROM executions AS e WHERE e.id = t.execution_id AND {COLD_E}{held}) "
        f"AND NOT EXISTS (SELECT 1 FROM task_runs AS o WHERE o.execution_id = t.execution_id AND {NOT_COLD_O}) "
        "ORDER BY t.updated_at, t.seq"
    )
    # Every other unfinished execution (an execution without task runs is never cold: nothing would queue it).
    active = (
        f"{_EXECUTION_SELECT} AS e WHERE state NOT IN {TERMINAL_SQL} AND NOT ({COLD_EXECUTION_SQL} "
        "AND EXISTS (SELECT 1 FROM task_runs AS a WHERE a.execution_id = e.id) "
        f"AND NOT EXISTS (SELECT 1 FROM task_runs AS o WHERE o.execution_id = e.id AND {NOT_COLD_O})){held} "
        "ORDER BY seq"
    )
    return active, cold_queue


# All of them (one server); those a replica holds ($1); those of the ids ($2) a replica holds.
_RECOVERY: Final = {
    0: _recovery_reads(""),
    1: _recovery_reads(" AND e.holder = $1"),
    2: _recovery_reads(" AND e.holder = $1 AND e.id = ANY($2::text[])"),
}
_PENDING_QUEUE: Final = (
    "SELECT id FROM task_runs WHERE state = 'PENDING' AND execution_id = ANY($1::text[]) ORDER BY updated_at, seq"
)


# Recovery reads whole tables: hash joins, whatever the statistics say. Right after a bulk of submits the
# statistics may not know the rows yet (autovacuum has not analyzed them), and a planner that expects one row
# per table picks nested loops that rescan an index per row: minutes instead of a second for 100,000 queued.
_BULK_READ: Final = ("SET LOCAL enable_nestloop = off",)


async def recover(conn: Any, *held: Any) -> RecoveredState:
    """`held`: nothing (every execution), a replica's name (those it holds), or its name and a list of ids (those
    of them it holds)."""
    for setting in _BULK_READ:
        await conn.execute(setting)
    active_sql, cold_sql = _RECOVERY[len(held)]
    active = await _snapshots(conn, await conn.fetch(active_sql, *held))
    ids = [snapshot.execution.id for snapshot in active]
    sequences = await last_sequences(conn, ids) if ids else {}
    pending_order = [row[0] for row in await conn.fetch(_PENDING_QUEUE, ids)] if ids else []
    handlers: dict[str, str] = {}  # one str per handler name, not one per task run
    cold = [
        ColdTaskRun(task_run_id, execution_id, handlers.setdefault(handler, from_db(handler)))
        for task_run_id, execution_id, handler in await conn.fetch(cold_sql, *held)
    ]
    return RecoveredState(active=active, last_sequences=sequences, pending_order=pending_order, cold=cold)


async def load_schedules(conn: Any) -> list[Schedule]:
    # By name as Python orders strings (the database's collation may differ), as the other stores do.
    schedules = [schedule_from_text(row[0]) for row in await conn.fetch("SELECT body FROM schedules")]
    return sorted(schedules, key=lambda schedule: schedule.name)
