"""SQLite rows of the store's records: which columns each table has, and records to rows and back.

Timestamps and durations are INTEGER microseconds, the parts kept as JSON are TEXT (see `_json`);
a new task run's row carries its input bytes, which the SQLite writer keeps in the task run's row when
small and in a table of their own (`task_run_inputs`) when large, so that the row stays small.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Protocol, TypedDict

from taskwire.server.domain import DEFAULT_PRIORITY, Execution, Payload, Reason, ReasonCode, State, TaskRun

from ._json import (
    EPOCH,
    Memo,
    attempts_from_text,
    attempts_to_text,
    closing_from_text,
    closing_to_text,
    datetime_from_db,
    datetime_to_db,
    depends_on_from_text,
    depends_on_to_text,
    dumps,
    metadata_from_text,
    metadata_to_text,
    progress_from_json,
    progress_to_json,
    reason_from_json,
    reason_to_json,
    retry_policy_from_text,
    retry_policy_to_text,
    timedelta_to_db,
)
from ._protocol import EventRecord, WriteBatch
from ._schedule_json import schedule_to_text


class RowLike(Protocol):
    """A row by column name: a `sqlite3.Row` or a plain dict."""

    def __getitem__(self, key: str, /) -> Any: ...


# The columns of an execution that an update rewrites (everything but seq and request_fingerprint).
EXECUTION_COLUMNS: Final = (
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
    "trace_context",
    "submitted_by",
)

# The columns of a task run that an update rewrites; execution_id and position only identify it.
TASK_RUN_COLUMNS: Final = (
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
    "schedule_to_start_us",
    "priority",
    "concurrency_key",
    "concurrency_limit",
    "fairness_key",
    "rate_limit",
    "rate_limit_key",
)


_STATES: Final[dict[str, State]] = {state.value: state for state in State}
_REASON_CODES: Final[dict[str, ReasonCode]] = {code.value: code for code in ReasonCode}

_reasons_from_columns: Final = Memo(1024)


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
    return _reasons_from_columns.get((code, message or ""), _make_reason)


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
    """The columns of `EXECUTION_COLUMNS` for one execution."""
    closing = execution.closing
    deadline = execution.deadline
    return {
        **_lifecycle_to_row(execution),
        "name": execution.name,
        "closing": None if closing is None else closing_to_text(closing),
        "metadata": metadata_to_text(execution.metadata),
        "deadline": None if deadline is None else datetime_to_db(deadline),
        "idempotency_key": execution.idempotency_key,
        "trace_context": metadata_to_text(execution.trace_context),
        "submitted_by": execution.submitted_by,
    }


def execution_from_row(row: RowLike) -> Execution:
    closing = row["closing"]
    deadline = row["deadline"]
    return Execution(
        **_lifecycle_from_row(row),
        name=row["name"],
        metadata=metadata_from_text(row["metadata"]),
        deadline=None if deadline is None else EPOCH + timedelta(microseconds=deadline),
        idempotency_key=row["idempotency_key"],
        closing=None if closing is None else closing_from_text(closing),
        trace_context=metadata_from_text(row["trace_context"]),
        submitted_by=row["submitted_by"],
    )


def task_run_to_row(task_run: TaskRun) -> dict[str, Any]:
    """The columns of `TASK_RUN_COLUMNS` for one task run, plus `input` (its bytes)."""
    pending_cancel = task_run.pending_cancel
    progress = task_run.progress
    timeout = task_run.timeout
    start = task_run.schedule_to_start_timeout
    return {
        **_lifecycle_to_row(task_run),
        "execution_id": task_run.execution_id,
        "task_id": task_run.task_id,
        "handler": task_run.handler,
        "input": task_run.input.data,
        "input_content_type": task_run.input.content_type,
        "depends_on": depends_on_to_text(task_run.depends_on),
        "timeout_us": None if timeout is None else timedelta_to_db(timeout),
        "retry_policy": retry_policy_to_text(task_run.retry_policy),
        "pending_cancel": None if pending_cancel is None else dumps(reason_to_json(pending_cancel)),
        "progress": None if progress is None else dumps(progress_to_json(progress)),
        "attempts": attempts_to_text(task_run.attempts),
        "schedule_to_start_us": None if start is None else timedelta_to_db(start),
        "priority": None if task_run.priority == DEFAULT_PRIORITY else task_run.priority,
        "concurrency_key": task_run.concurrency_key or None,
        "concurrency_limit": task_run.concurrency_limit or None,
        "fairness_key": task_run.fairness_key or None,
        "rate_limit": task_run.rate_limit or None,
        "rate_limit_key": task_run.rate_limit_key or None,
    }


def task_run_from_row(row: RowLike) -> TaskRun:
    pending_cancel = row["pending_cancel"]
    progress = row["progress"]
    timeout_us = row["timeout_us"]
    start_us = row["schedule_to_start_us"]
    return TaskRun(
        **_lifecycle_from_row(row),
        execution_id=row["execution_id"],
        task_id=row["task_id"],
        handler=row["handler"],
        input=Payload(bytes(row["input"]), row["input_content_type"]),
        depends_on=depends_on_from_text(row["depends_on"]),
        timeout=None if timeout_us is None else timedelta(microseconds=timeout_us),
        retry_policy=retry_policy_from_text(row["retry_policy"]),
        attempts=attempts_from_text(row["attempts"]),
        pending_cancel=None if pending_cancel is None else reason_from_json(json.loads(pending_cancel)),
        progress=None if progress is None else progress_from_json(json.loads(progress)),
        schedule_to_start_timeout=None if start_us is None else timedelta(microseconds=start_us),
        priority=DEFAULT_PRIORITY if row["priority"] is None else row["priority"],
        concurrency_key=row["concurrency_key"] or "",
        concurrency_limit=row["concurrency_limit"] or 0,
        fairness_key=row["fairness_key"] or "",
        rate_limit=row["rate_limit"] or "",
        rate_limit_key=row["rate_limit_key"] or "",
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


@dataclass(slots=True)
class Rows:
    """A WriteBatch as rows, encoded by the caller one batch at a time (bad data fails only its own batch)."""

    new_executions: list[dict[str, Any]] = field(default_factory=list)
    new_task_runs: list[dict[str, Any]] = field(default_factory=list)
    executions: list[dict[str, Any]] = field(default_factory=list)
    task_runs: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    idempotency_keys: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)  # execution ids
    schedules: list[tuple[str, str]] = field(default_factory=list)  # (name, body)
    schedule_updates: list[tuple[str, str]] = field(default_factory=list)  # (name, body): replace a stored one only
    deleted_schedules: list[tuple[str]] = field(default_factory=list)  # (name,)

    @classmethod
    def of(cls, batch: WriteBatch) -> Rows:
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
        rows.deleted = list(batch.deleted)
        rows.schedules = [(schedule.name, schedule_to_text(schedule)) for schedule in batch.schedules]
        rows.schedule_updates = [(schedule.name, schedule_to_text(schedule)) for schedule in batch.schedule_updates]
        rows.deleted_schedules = [(name,) for name in batch.deleted_schedules]
        return rows


def last_schedules(batches: Sequence[Rows]) -> dict[str, tuple[str | None, bool]]:
    """Each schedule the batches write, by name, as the last of them leaves it: its body (None: deleted), and
    whether it may be inserted (written new in one of them and not deleted since). The others only replace a
    stored one: a schedule deleted meanwhile, by another replica, stays deleted."""
    last: dict[str, tuple[str | None, bool]] = {}
    for rows in batches:
        for name, body in rows.schedules:
            last[name] = (body, True)
        for name, body in rows.schedule_updates:
            before, new = last.get(name, (None, False))
            last[name] = (body, before is not None and new)
        for (name,) in rows.deleted_schedules:
            last[name] = (None, False)
    return last
