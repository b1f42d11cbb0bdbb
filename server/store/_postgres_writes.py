"""The PostgreSQL store's writes: a group of encoded batches (`Rows`) applied inside the caller's transaction.

One statement per table and kind: the rows travel as one array per column and `unnest` turns them
back into rows, so a group costs a handful of round trips whatever its size. Updates return the ids
they matched, so an update of a record that does not exist is named in the refusal; the last
version of a record in the group wins, as if the batches were applied one after the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from ._postgres_text import EXECUTION_TEXT, TASK_RUN_TEXT, from_db, optional_to_db, to_db
from ._protocol import StoreError
from ._sqlite_codec import EXECUTION_COLUMNS, TASK_RUN_COLUMNS, Rows, last_schedules

_BIGINT_COLUMNS: Final = frozenset(
    {
        *("deadline", "not_before", "created_at", "updated_at", "started_at", "ended_at"),
        *("timeout_us", "schedule_to_start_us", "sequence", "time"),
    }
)
_TYPES: Final = {
    "position": "integer",
    "priority": "integer",
    "concurrency_limit": "integer",
    "input": "bytea",
    "body": "bytea",
}

_NEW_EXECUTION_COLUMNS: Final = (*EXECUTION_COLUMNS, "request_fingerprint")
_NEW_TASK_RUN_COLUMNS: Final = (*TASK_RUN_COLUMNS, "position")
_INPUT_COLUMNS: Final = ("id", "input")
_EVENT_COLUMNS: Final = ("execution_id", "sequence", "time", "kind", "body")


def _sql_type(column: str) -> str:
    return "bigint" if column in _BIGINT_COLUMNS else _TYPES.get(column, "text")


def _unnest(columns: Sequence[str]) -> str:
    """`unnest($1::type[], ...) AS u(column, ...)`: the rows of one array parameter per column."""
    arrays = ", ".join(f"${n}::{_sql_type(column)}[]" for n, column in enumerate(columns, start=1))
    return f"unnest({arrays}) AS u({', '.join(columns)})"


def _insert(table: str, columns: Sequence[str], *, names: Sequence[str] | None = None) -> str:
    return f"INSERT INTO {table} ({', '.join(names or columns)}) SELECT {', '.join(columns)} FROM {_unnest(columns)}"


def _update(table: str, columns: Sequence[str], keys: Sequence[str]) -> str:
    assignments = ", ".join(f"{column} = u.{column}" for column in columns if column not in keys)
    match = " AND ".join(f"x.{key} = u.{key}" for key in keys)
    return f"UPDATE {table} AS x SET {assignments} FROM {_unnest(columns)} WHERE {match} RETURNING x.id"


_INSERT_EXECUTIONS: Final = _insert("executions", _NEW_EXECUTION_COLUMNS)
# A replica's new executions are its own: the holder is one more parameter, after the arrays.
_INSERT_HELD_EXECUTIONS: Final = _INSERT_EXECUTIONS.replace(") SELECT ", ", holder) SELECT ", 1).replace(
    " FROM unnest(", f", ${len(_NEW_EXECUTION_COLUMNS) + 1}::text FROM unnest(", 1
)
_INSERT_TASK_RUNS: Final = _insert("task_runs", _NEW_TASK_RUN_COLUMNS)
_INSERT_INPUTS: Final = _insert("task_run_inputs", _INPUT_COLUMNS, names=("task_run_id", "data"))
_INSERT_EVENTS: Final = _insert("events", _EVENT_COLUMNS)
_UPDATE_EXECUTIONS: Final = _update("executions", EXECUTION_COLUMNS, ("id",))
_UPDATE_TASK_RUNS: Final = _update("task_runs", TASK_RUN_COLUMNS, ("id", "execution_id"))
# A replica changes only the executions it holds (and their task runs): the holder is one more parameter. With the
# epoch checked in the same transaction, a row another replica holds now is refused as one that does not exist.
_UPDATE_HELD_EXECUTIONS: Final = _UPDATE_EXECUTIONS.replace(
    " RETURNING", f" AND x.holder = ${len(EXECUTION_COLUMNS) + 1}::text RETURNING", 1
)
_UPDATE_HELD_TASK_RUNS: Final = _UPDATE_TASK_RUNS.replace(
    " RETURNING",
    " AND EXISTS (SELECT 1 FROM executions AS e WHERE e.id = x.execution_id "
    f"AND e.holder = ${len(TASK_RUN_COLUMNS) + 1}::text) RETURNING",
    1,
)
# Deleting executions: children first (foreign keys), each by an index.
_DELETE_EXECUTIONS: Final = (
    "DELETE FROM events WHERE execution_id = ANY($1::text[])",
    "DELETE FROM task_run_inputs WHERE task_run_id IN (SELECT id FROM task_runs WHERE execution_id = ANY($1::text[]))",
    "DELETE FROM task_runs WHERE execution_id = ANY($1::text[])",
    "DELETE FROM executions WHERE id = ANY($1::text[])",
)
_UPSERT_SCHEDULES: Final = (
    "INSERT INTO schedules (name, body) SELECT name, body FROM unnest($1::text[], $2::text[]) AS u(name, body) "
    "ON CONFLICT (name) DO UPDATE SET body = excluded.body"
)
_UPDATE_SCHEDULES: Final = (
    "UPDATE schedules SET body = u.body FROM unnest($1::text[], $2::text[]) AS u(name, body) "
    "WHERE schedules.name = u.name"
)
_DELETE_SCHEDULES: Final = "DELETE FROM schedules WHERE name = ANY($1::text[])"


_FREE_TEXT: Final = EXECUTION_TEXT | TASK_RUN_TEXT


def _columns(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> list[list[Any]]:
    """One array per column; free text as PostgreSQL can hold it (`_postgres_text`)."""
    return [
        [optional_to_db(row[column]) for row in rows] if column in _FREE_TEXT else [row[column] for row in rows]
        for column in columns
    ]


async def taken_keys(conn: Any, keys: Sequence[str]) -> set[str]:
    """The idempotency keys among `keys` that stored executions hold."""
    rows = await conn.fetch(
        "SELECT idempotency_key FROM executions WHERE idempotency_key = ANY($1::text[]) AND idempotency_key <> ''",
        [to_db(key) for key in keys],
    )
    return {from_db(row[0]) for row in rows}


def _schedules(batches: Sequence[Rows]) -> dict[str, tuple[str | None, bool]]:
    """Each schedule named in the batches, by its stored name, as `last_schedules` gives it."""
    return {to_db(name): last for name, last in last_schedules(batches).items()}


async def apply_rows(conn: Any, batches: Sequence[Rows], holder: str = "") -> None:
    """Write the batches in their order inside the caller's transaction; raise when the database refuses. New
    executions are `holder`'s (a replica's name; '' without replicas)."""
    new_executions = [row for rows in batches for row in rows.new_executions]
    new_task_runs = [row for rows in batches for row in rows.new_task_runs]
    executions = list({row["id"]: row for rows in batches for row in rows.executions}.values())
    task_runs = list({row["id"]: row for rows in batches for row in rows.task_runs}.values())
    events = [row for rows in batches for row in rows.events]
    deleted = [execution_id for rows in batches for execution_id in rows.deleted]
    schedules = _schedules(batches)
    if new_executions:
        columns = _columns(new_executions, _NEW_EXECUTION_COLUMNS)
        if holder:
            await conn.execute(_INSERT_HELD_EXECUTIONS, *columns, holder)
        else:
            await conn.execute(_INSERT_EXECUTIONS, *columns)
    if new_task_runs:
        await conn.execute(_INSERT_TASK_RUNS, *_columns(new_task_runs, _NEW_TASK_RUN_COLUMNS))
        await conn.execute(_INSERT_INPUTS, *_columns(new_task_runs, _INPUT_COLUMNS))
    held = (holder,) if holder else ()
    unheld = " or that another replica holds" if holder else ""
    if executions:
        update = _UPDATE_HELD_EXECUTIONS if holder else _UPDATE_EXECUTIONS
        found = await conn.fetch(update, *_columns(executions, EXECUTION_COLUMNS), *held)
        if len(found) != len(executions):
            matched = {row[0] for row in found}
            missing = [row["id"] for row in executions if row["id"] not in matched]
            raise StoreError(f"cannot update executions that do not exist{unheld}: {', '.join(missing)}")
    if task_runs:
        update = _UPDATE_HELD_TASK_RUNS if holder else _UPDATE_TASK_RUNS
        found = await conn.fetch(update, *_columns(task_runs, TASK_RUN_COLUMNS), *held)
        if len(found) != len(task_runs):
            matched = {row[0] for row in found}
            missing = [f"{row['id']} of {row['execution_id']}" for row in task_runs if row["id"] not in matched]
            raise StoreError(f"cannot update task runs that do not exist{unheld}: {', '.join(missing)}")
    if events:
        await conn.execute(_INSERT_EVENTS, *_columns(events, _EVENT_COLUMNS))
    if deleted:
        for sql in _DELETE_EXECUTIONS:
            await conn.execute(sql, deleted)
    if upserted := {name: body for name, (body, new) in schedules.items() if body is not None and new}:
        await conn.execute(_UPSERT_SCHEDULES, list(upserted), list(upserted.values()))
    if updated := {name: body for name, (body, new) in schedules.items() if body is not None and not new}:
        await conn.execute(_UPDATE_SCHEDULES, list(updated), list(updated.values()))
    if removed := [name for name, (body, _) in schedules.items() if body is None]:
        await conn.execute(_DELETE_SCHEDULES, removed)
