"""A schedule as one JSON document: what every store keeps of it (SQLite in one TEXT column).

The document holds the schedule's spec, with its execution spec whole (tasks, inputs as base64,
retry policies, timeouts), and its state (cursor, counts, running executions, buffered fire).
Times are integer microseconds since the Unix epoch, durations integer microseconds, as in `_json`.
"""

from __future__ import annotations

import json
from typing import Any

from taskwire.server.domain import ExecutionSpec, OverlapPolicy, Schedule, ScheduleSpec, TaskSpec

from ._json import (
    datetime_from_db,
    datetime_to_db,
    dumps,
    optional_datetime_from_db,
    optional_datetime_to_db,
    optional_timedelta_from_db,
    optional_timedelta_to_db,
    payload_from_json,
    payload_to_json,
    retry_policy_from_json,
    retry_policy_to_json,
    timedelta_from_db,
    timedelta_to_db,
)

# A task's flow-control fields (see docs/flow-control.md), kept by name with their defaults.
_FLOW_CONTROL = ("priority", "concurrency_key", "concurrency_limit", "fairness_key", "rate_limit", "rate_limit_key")
_FLOW_DEFAULTS: dict[str, Any] = {name: getattr(TaskSpec("-"), name) for name in _FLOW_CONTROL}


def _task_to_json(task: TaskSpec) -> dict[str, Any]:
    return {
        "handler": task.handler,
        "task_id": task.task_id,
        "input": payload_to_json(task.input),
        "depends_on": list(task.depends_on),
        "timeout_us": optional_timedelta_to_db(task.timeout),
        "retry_policy": retry_policy_to_json(task.retry_policy),
        "schedule_to_start_timeout_us": optional_timedelta_to_db(task.schedule_to_start_timeout),
        **{name: getattr(task, name) for name in _FLOW_CONTROL if getattr(task, name) != _FLOW_DEFAULTS[name]},
    }


def _task_from_json(value: dict[str, Any]) -> TaskSpec:
    return TaskSpec(
        handler=value["handler"],
        task_id=value["task_id"],
        input=payload_from_json(value["input"]),
        depends_on=tuple(value["depends_on"]),
        timeout=optional_timedelta_from_db(value["timeout_us"]),
        retry_policy=retry_policy_from_json(value["retry_policy"]),
        schedule_to_start_timeout=optional_timedelta_from_db(value["schedule_to_start_timeout_us"]),
        # Absent from documents written before flow control, and when a field has its default.
        **{name: value.get(name, _FLOW_DEFAULTS[name]) for name in _FLOW_CONTROL},
    )


def execution_spec_to_json(spec: ExecutionSpec) -> dict[str, Any]:
    """An execution spec as a JSON value (its idempotency key and not_before are a schedule's to make)."""
    return {
        "name": spec.name,
        "tasks": [_task_to_json(task) for task in spec.tasks],
        "metadata": dict(spec.metadata),
        "timeout_us": optional_timedelta_to_db(spec.timeout),
        "trace_context": dict(spec.trace_context),
    }


def execution_spec_from_json(value: dict[str, Any]) -> ExecutionSpec:
    return ExecutionSpec(
        tasks=tuple(_task_from_json(task) for task in value["tasks"]),
        name=value["name"],
        metadata=dict(value["metadata"]),
        timeout=optional_timedelta_from_db(value["timeout_us"]),
        trace_context=dict(value["trace_context"]),
    )


def schedule_to_text(schedule: Schedule) -> str:
    spec = schedule.spec
    return dumps(
        {
            "name": spec.name,
            "cron": spec.cron,
            "timezone": spec.timezone,
            "catch_up_window_us": timedelta_to_db(spec.catch_up_window),
            "overlap": spec.overlap.value,
            "execution": execution_spec_to_json(spec.execution),
            "created_at": datetime_to_db(schedule.created_at),
            "updated_at": datetime_to_db(schedule.updated_at),
            "cursor": datetime_to_db(schedule.cursor),
            "paused": schedule.paused,
            "fired": schedule.fired,
            "missed": schedule.missed,
            "skipped": schedule.skipped,
            "running": list(schedule.running),
            "buffered": optional_datetime_to_db(schedule.buffered),
            "last_fire_time": optional_datetime_to_db(schedule.last_fire_time),
            "last_execution_id": schedule.last_execution_id,
        }
    )


def schedule_from_text(text: str) -> Schedule:
    value = json.loads(text)
    spec = ScheduleSpec(
        name=value["name"],
        cron=value["cron"],
        timezone=value["timezone"],
        catch_up_window=timedelta_from_db(value["catch_up_window_us"]),
        overlap=OverlapPolicy.unrecognized(value["overlap"]),
        execution=execution_spec_from_json(value["execution"]),
    )
    return Schedule(
        spec=spec,
        created_at=datetime_from_db(value["created_at"]),
        updated_at=datetime_from_db(value["updated_at"]),
        cursor=datetime_from_db(value["cursor"]),
        paused=value["paused"],
        fired=value["fired"],
        missed=value["missed"],
        skipped=value["skipped"],
        running=tuple(value["running"]),
        buffered=optional_datetime_from_db(value["buffered"]),
        last_fire_time=optional_datetime_from_db(value["last_fire_time"]),
        last_execution_id=value["last_execution_id"],
    )
